"""Fixtures: a small reconciler project in tmp_path and a sandbox on a real loopback socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from reconciler.cli import cli
from reconciler.kaleyra.sandbox import Sandbox, SandboxAccount, serve_in_thread
from reconciler.state.local import LocalStateStore

API_KEY = "tEsT-KeY-9f8e7d6c5b4a"  # distinctive, so a leak anywhere is found by a plain search
SID, WABA = "HXTEST0000000001", "766000000000001"
OTHER_SID, OTHER_WABA = "HXTEST0000000002", "766000000000002"
NUMBERS = [f"+1415555{index:04d}" for index in range(100, 120)]


class Project:
    """A reconciler project on disk, driven through the CLI in-process."""

    def __init__(self, root: Path, endpoint: str):
        self.root = root
        self.endpoint = endpoint
        self.env = {"KALEYRA_API_KEY": API_KEY, "KALEYRA_API_KEY_OTHER": API_KEY + "-other", "NO_COLOR": "1"}
        self.write_config()

    def write_config(self, **extra: Any) -> None:
        config: dict[str, Any] = {
            "profiles_dir": "profiles",
            "retry": {"attempts": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "deadline_s": 10},
            "accounts": {
                "main": {
                    "sid": SID,
                    "waba_id": WABA,
                    "pod": "in",
                    "api_version": "v2",
                    "endpoint": self.endpoint,
                },
                "legacy": {
                    "sid": OTHER_SID,
                    "waba_id": OTHER_WABA,
                    "pod": "na",
                    "api_version": "v1",
                    "api_key_env": "KALEYRA_API_KEY_OTHER",
                    "endpoint": self.endpoint,
                },
            },
        }
        config.update(extra)
        (self.root / "reconciler.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (self.root / "profiles").mkdir(exist_ok=True)

    def profile_path(self, phone_number: str) -> Path:
        return self.root / "profiles" / f"{phone_number}.yaml"

    def write_profile(self, phone_number: str, account: str = "main", **fields: str) -> Path:
        path = self.profile_path(phone_number)
        path.write_text(
            yaml.safe_dump({"phone_number": phone_number, "account": account, **fields}, sort_keys=False)
        )
        return path

    def write_raw(self, name: str, text: str | bytes) -> Path:
        path = self.root / "profiles" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    def run(self, *args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        old = Path.cwd()
        os.chdir(self.root)
        try:
            return CliRunner().invoke(cli, list(args), env={**self.env, **(env or {})}, input=input)
        finally:
            os.chdir(old)

    @property
    def state_path(self) -> Path:
        return self.root / ".reconciler" / "state.json"

    def applied(self) -> dict[str, dict[str, str]]:
        """Fields the state records per number (journal replayed)."""
        state = LocalStateStore(self.state_path).load()
        return {phone: dict(entry.fields) for phone, entry in state.entries.items()}

    def audit(self) -> list[dict[str, Any]]:
        path = self.root / ".reconciler" / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def sandbox() -> Iterator[Any]:
    held = Sandbox(
        [
            SandboxAccount(SID, WABA, {number: {} for number in NUMBERS}),
            SandboxAccount(OTHER_SID, OTHER_WABA, {number: {} for number in NUMBERS}),
        ],
        api_key=None,
    )
    server = serve_in_thread(held)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def project(tmp_path: Path, sandbox: Any) -> Project:
    return Project(tmp_path, sandbox.url)


def put_bodies(sandbox_server: Any, phone_number: str | None = None) -> list[dict[str, str]]:
    """The bodies of PUTs the sandbox received (optionally for one number), oldest first."""
    with sandbox_server.sandbox.lock:
        bodies = [request["body"] for request in sandbox_server.sandbox.requests]
    return [body for body in bodies if phone_number is None or body.get("phone_number") == phone_number]


def assert_clean_failure(result: Result) -> None:
    """Exit 1 with a message and never a Python traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output + result.stderr
    assert "internal error" not in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


# --- a real S3 API (moto's server, in its own process) for the s3 state backend ----------------------

AWS_SECRET = "aWsSeCrEt-0123456789abcdefXYZ"  # distinctive, like API_KEY: a leak is found by a search
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIATESTRECONCILER01",
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never ask the instance metadata service (a link-local address) for credentials in tests.
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
STATE_KEY = "kaleyra/state.json"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server on loopback, shared by the session (each test has its own bucket)."""
    import subprocess
    import sys

    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("s3server.py"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = server.stdout.readline().strip() if server.stdout else ""
    assert url.startswith("http://127.0.0.1:"), "the moto S3 server did not start"
    yield url
    if server.stdin:
        server.stdin.close()
    server.wait(timeout=10)


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_SECRET,
    )


class S3Project(Project):
    """A project whose reconciler.yaml puts the state on S3 (`state.backend: s3`)."""

    def __init__(self, root: Path, endpoint: str, s3_endpoint: str, bucket: str):
        self.s3_endpoint, self.bucket = s3_endpoint, bucket
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(root, endpoint)
        self.env.update(AWS_ENV)

    def state_settings(self, backend: str = "s3") -> dict[str, str]:
        return {"backend": backend, "bucket": self.bucket, "key": STATE_KEY, "endpoint_url": self.s3_endpoint}

    def write_config(self, **extra: Any) -> None:
        super().write_config(**{"state": self.state_settings(), **extra})

    def store(self) -> Any:
        from reconciler.config import S3Location
        from reconciler.state.s3 import S3StateStore
        from reconciler.state.s3objects import ObjectStore

        location = S3Location(self.bucket, STATE_KEY, endpoint_url=self.s3_endpoint)
        return S3StateStore(location, ObjectStore(location, s3_client(self.s3_endpoint)))

    def applied(self) -> dict[str, dict[str, str]]:
        state = self.store().load()
        return {phone: dict(entry.fields) for phone, entry in state.entries.items()}

    def objects(self) -> dict[str, bytes]:
        """Every object in the bucket, by key."""
        client = s3_client(self.s3_endpoint)
        listed = client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return {
            item["Key"]: client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
            for item in listed
        }

    def audit(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for key, data in sorted(self.objects().items())
            if key.startswith(STATE_KEY + ".audit/")
            for line in data.decode().splitlines()
        ]


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new, empty bucket for one test."""
    import uuid

    name = f"test-{uuid.uuid4().hex[:24]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_project(tmp_path: Path, sandbox: Any, s3_endpoint: str, s3_bucket: str) -> S3Project:
    return S3Project(tmp_path / "checkout", sandbox.url, s3_endpoint, s3_bucket)


# --- a fleet on a sandbox, driven by real `reconciler` processes -------------------------------------
# For the tests where the process itself must die, be interrupted or outlive a file: SIGKILL, signals,
# a full stdout, a deleted state folder, two runs at once.

FLEET = [f"+1650555{index:04d}" for index in range(300)]


@pytest.fixture
def fleet_sandbox() -> Iterator[Any]:
    held = Sandbox(
        [SandboxAccount(SID, WABA, {n: {} for n in FLEET}), SandboxAccount(OTHER_SID, OTHER_WABA, {})],
        retry_after_s=0,
        seed=7,
    )
    server = serve_in_thread(held)
    yield server
    server.shutdown()
    server.server_close()


def make_fleet(project: Project, count: int, about: str = "v1") -> list[str]:
    numbers = FLEET[:count]
    for number in numbers:
        project.write_profile(number, about=f"{about} {number}", category="OTHER")
    return numbers


def run_reconciler(project: Project, *args: str, **popen: Any) -> subprocess.Popen:
    """`python -m reconciler ARGS` in the project, with its environment; output captured as text."""
    env = {**os.environ, **project.env}
    env.pop("KALEYRA_ENDPOINT", None)
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        cwd=project.root,
        env=env,
        stdout=popen.pop("stdout", subprocess.PIPE),
        stderr=popen.pop("stderr", subprocess.PIPE),
        text=True,
        **popen,
    )


def requests_seen(server: Any) -> int:
    with server.sandbox.lock:
        return len(server.sandbox.requests)


def accepted_numbers(server: Any) -> set[str]:
    """The numbers the sandbox answered WA200 for (after letting it log its last answers)."""
    time.sleep(0.1)
    with server.sandbox.lock:
        return {r["body"]["phone_number"] for r in server.sandbox.requests if r["answer"] == "WA200"}


def assert_state_is_true(project: Any, server: Any) -> dict[str, dict[str, str]]:
    """The state loads, and every number it records is held by the sandbox with those values."""
    recorded = project.applied()
    for number, fields in recorded.items():
        held = server.sandbox.number(number)
        assert held is not None and {k: held.get(k) for k in fields} == fields, number
    return recorded


def wait_for_requests(server: Any, count: int, process: subprocess.Popen) -> None:
    """Until the sandbox has logged `count` requests (answered ones), while `process` still runs."""
    deadline = time.monotonic() + 30
    while requests_seen(server) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the apply never got going"
        time.sleep(0.002)
