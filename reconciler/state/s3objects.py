"""The S3 object calls the remote state needs, and what their failures mean to a user.

boto3 is the optional extra `[s3]`, imported only here, only when the s3 backend is used. Credentials
come from boto3's standard chain (environment, shared profile, web identity such as GitHub OIDC),
never from reconciler.yaml. Every failure becomes one sentence naming the object; none carries a
credential (botocore never puts one in a message, and every output is redacted anyway).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..config import S3Location
from ..errors import ReconcilerError

INSTALL_HINT = "pip install 'kaleyra-reconciler[s3]'"
# S3 deletes at most this many keys per DeleteObjects request.
DELETE_BATCH = 1000


class RemoteStateError(ReconcilerError):
    """An S3 request failed for a reason a user can act on (credentials, permissions, network)."""


class PreconditionFailed(Exception):
    """A conditional write lost: the object exists (If-None-Match) or changed (If-Match)."""


class ObjectStore:
    """One bucket, through one boto3 client: get, conditional put, delete and list of objects."""

    def __init__(self, location: S3Location, client: Any = None):
        self.location = location
        self.bucket = location.bucket
        self.client = client or _client(location)

    def get(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when there is no such object."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            return answer["Body"].read(), answer["ETag"]
        except Exception as error:
            if _code(error) in ("NoSuchKey", "404"):
                return None
            raise self._failure("read", key, error) from None

    def etag(self, key: str) -> str | None:
        """The object's ETag (a HEAD request: nothing is downloaded), or None when there is none."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ETag"]
        except Exception as error:
            if _code(error) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._failure("read", key, error) from None

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        """Write the object, only if it is absent (`if_absent`) or unchanged since it had the ETag
        `if_match`; return the new ETag. A lost condition raises PreconditionFailed, except when the
        object already holds exactly `data`: then an earlier attempt of this very write succeeded
        (its answer was lost and botocore retried), so it did not lose."""
        conditions: dict[str, str] = {}
        if if_match is not None:
            conditions["IfMatch"] = if_match
        elif if_absent:
            conditions["IfNoneMatch"] = "*"
        try:
            answer = self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **conditions)
            return answer["ETag"]
        except Exception as error:
            if _code(error) not in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise self._failure("write", key, error) from None
        current = self.get(key)
        if current is not None and current[0] == data:
            return current[1]
        raise PreconditionFailed(key)

    def delete(self, key: str, *, if_match: str | None = None) -> bool:
        """Delete the object (only while it has the ETag `if_match`, when given); False when the
        condition failed, so the object now there is someone else's."""
        conditions = {"IfMatch": if_match} if if_match is not None else {}
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key, **conditions)
            return True
        except Exception as error:
            code = _code(error)
            if code in ("NoSuchKey", "404"):
                return True
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise self._failure("delete", key, error) from None

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = keys[start : start + DELETE_BATCH]
            try:
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in chunk], "Quiet": True}
                )
            except Exception as error:
                raise self._failure("delete", chunk[0], error) from None
            errors = [item for item in answer.get("Errors", []) if item.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                raise RemoteStateError(
                    f"{self.location.url(first.get('Key', chunk[0]))}: cannot delete "
                    f"({first.get('Code')}: {first.get('Message', '')})"
                )

    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix`, in S3's order (UTF-8 binary order of the keys)."""
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except Exception as error:
            raise self._failure("list", prefix, error) from None
        return keys

    def _failure(self, verb: str, key: str, error: Exception) -> RemoteStateError:
        return RemoteStateError(
            f"{self.location.url(key)}: cannot {verb}: {_explain(error, verb, self.bucket)}"
        )


def _client(location: S3Location) -> Any:
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError:
        raise ReconcilerError(
            f"state.backend s3 needs boto3, which is not installed: {INSTALL_HINT}"
        ) from None
    options: dict[str, Any] = {
        "retries": {"mode": "standard", "max_attempts": 5},
        "connect_timeout": 10,
        "read_timeout": 30,
        # S3-compatible stores (MinIO, R2, Ceph, moto) often lack the newer default checksums.
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    if location.endpoint_url:
        options["s3"] = {"addressing_style": "path"}  # what S3-compatible stores expect
    try:
        return boto3.session.Session().client(
            "s3",
            region_name=location.region,
            endpoint_url=location.endpoint_url,
            config=BotoConfig(**options),
        )
    except Exception as error:  # a broken profile in ~/.aws/config, an unknown region, ...
        raise RemoteStateError(
            f"{location.url()}: cannot set up the S3 client: {_explain(error, '', '')}"
        ) from None


def _code(error: Exception) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _explain(error: Exception, verb: str, bucket: str) -> str:
    """What went wrong, in words a user can act on; boto3's own words otherwise."""
    name = type(error).__name__
    code = _code(error)
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return (
            "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or "
            "web identity (in GitHub: aws-actions/configure-aws-credentials)"
        )
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return (
            f"access denied: the credentials in use may not {verb} here; see the IAM policy in the README's "
            "Remote state section"
        )
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
        return f"{code}: the AWS credentials were refused; check or refresh them"
    if code == "NoSuchBucket":
        return f"there is no bucket '{bucket}'; create it, or fix state.bucket"
    if name in (
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
    ):
        return f"cannot reach S3: {error}"
    message = str(getattr(error, "response", {}).get("Error", {}).get("Message", "")) if code else ""
    return f"{code}: {message}" if code else f"{name}: {error}"
