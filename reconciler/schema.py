"""The JSON Schemas of profiles and reconciler.yaml, and the sentences their errors turn into.

Both schemas are built here from one table of field rules, so the profile fields and the config's
`defaults` can never disagree; `schemas/*.json` are this module's output (a test keeps them current).
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import Problem
from .yamlfile import Document

if TYPE_CHECKING:
    import jsonschema

DRAFT = "https://json-schema.org/draft/2020-12/schema"
PROFILE_SCHEMA_ID = "urn:kaleyra-reconciler:schema:profile.schema.json"
CONFIG_SCHEMA_ID = "urn:kaleyra-reconciler:schema:config.schema.json"

CATEGORIES = (
    "AUTOMOTIVE",
    "BEAUTY_SPA_SALON",
    "CLOTHING_APPAREL",
    "EDUCATION",
    "ENTERTAINMENT",
    "EVENT_PLANNING_SERVICE",
    "FINANCE_AND_BANKING",
    "FOOD_GROCERY",
    "PUBLIC_SERVICE",
    "HOTEL_LODGING",
    "MEDICAL_HEALTH",
    "NON_PROFIT",
    "PROFESSIONAL_SERVICES",
    "SHOPPING_RETAIL",
    "TRAVEL_TRANSPORTATION",
    "RESTAURANT",
    "OTHER",
)
PODS = ("in", "ap", "sg", "eu", "na")
API_VERSIONS = ("v1", "v2")

E164 = r"^\+[1-9][0-9]{6,14}$"
EMAIL = (
    r"^$|^[^@\s\"<>()\[\],;:]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
HTTP_URL = r"^$|^https?://[^\s/?#@]+(?:[/?#]\S*)?$"
CALLBACK_ID = r"^$|^[A-Za-z0-9_-]{1,64}$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ENV_VAR = r"^[A-Za-z_][A-Za-z0-9_]*$"
ENDPOINT = r"^https?://[^\s/?#@]+(?:/\S*)?$"
S3_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"

# The fields a profile can manage, in the order the API reference lists them. `""` clears a value.
FIELDS: dict[str, dict[str, Any]] = {
    "address": {"type": "string", "maxLength": 256, "description": "Address of the business."},
    "description": {"type": "string", "maxLength": 256, "description": "Description of the business."},
    "incoming_url": {
        "type": "string",
        "maxLength": 2048,
        "pattern": HTTP_URL,
        "description": "http(s) URL for incoming-message status updates; only for api_version v1 accounts.",
    },
    "category": {"type": "string", "enum": [*CATEGORIES, ""], "description": "Business category."},
    "email": {"type": "string", "maxLength": 254, "pattern": EMAIL, "description": "Contact email."},
    "about": {"type": "string", "maxLength": 139, "description": "About text (at most 139 characters)."},
    "callback_profile_id": {
        "type": "string",
        "pattern": CALLBACK_ID,
        "description": "Callback profile id created on Kaleyra.",
    },
    "outgoing_callback_profile_id": {
        "type": "string",
        "pattern": CALLBACK_ID,
        "description": "Outgoing callback profile id created on Kaleyra.",
    },
}
ACCOUNT_REF = {"type": "string", "pattern": NAME, "description": "Name of an account in reconciler.yaml."}

PATTERN_MESSAGES = {
    "phone_number": "is not an E.164 number: write + then 7 to 15 digits, the first not 0 (+14155550100)",
    "email": "is not a valid email address",
    "incoming_url": "is not an http(s) URL",
    "callback_profile_id": "is not a callback profile id (letters, digits, - and _, at most 64)",
    "outgoing_callback_profile_id": "is not a callback profile id (letters, digits, - and _, at most 64)",
    "sid": "is not an account SID (letters and digits only)",
    "waba_id": "is not a WABA id (digits only, in quotes)",
    "api_key_env": "is not an environment variable name (letters, digits and _)",
    "endpoint": "is not an http(s) base URL",
    "account": "is not an account name (letters, digits, . _ -)",
    "bucket": "is not an S3 bucket name (3 to 63 lowercase letters, digits, . and -)",
    "region": "is not an AWS region (like eu-west-1)",
    "endpoint_url": "is not an http(s) base URL",
}
SECRET_KEY = re.compile(r"(?i)^(api[-_ ]?key|apikey|secret|token|password)$")
# AWS credentials written into reconciler.yaml (under `state:`, where people reach for them).
AWS_CREDENTIAL_KEY = re.compile(
    r"(?i)^(aws_)?(access_key(_id)?|secret(_access)?_key|session_token|credentials?|profile|role_arn)$"
)


def profile_schema() -> dict[str, Any]:
    return {
        "$schema": DRAFT,
        "$id": PROFILE_SCHEMA_ID,
        "title": "Kaleyra WhatsApp Business phone-number profile",
        "description": 'One phone number\'s business profile. An absent field is unmanaged; "" clears it.',
        "type": "object",
        "additionalProperties": False,
        "required": ["phone_number"],
        "properties": {
            "phone_number": {"type": "string", "pattern": E164, "description": "E.164 phone number."},
            "account": ACCOUNT_REF,
            **FIELDS,
        },
    }


def config_schema() -> dict[str, Any]:
    account = {
        "type": "object",
        "additionalProperties": False,
        "required": ["sid", "waba_id", "pod"],
        "properties": {
            "sid": {"type": "string", "pattern": r"^[A-Za-z0-9]+$", "description": "Account SID."},
            "waba_id": {"type": "string", "pattern": r"^[0-9]+$", "description": "WABA id, quoted."},
            "pod": {"type": "string", "enum": list(PODS), "description": "Kaleyra pod (sg means ap)."},
            "api_version": {"type": "string", "enum": list(API_VERSIONS), "default": "v2"},
            "api_key_env": {
                "type": "string",
                "pattern": ENV_VAR,
                "default": "KALEYRA_API_KEY",
                "description": "Name of the environment variable holding the API key (never the key).",
            },
            "endpoint": {
                "type": "string",
                "pattern": ENDPOINT,
                "description": "Base-URL override; http:// only to loopback addresses.",
            },
        },
    }
    positive = {"type": "number", "exclusiveMinimum": 0}
    return {
        "$schema": DRAFT,
        "$id": CONFIG_SCHEMA_ID,
        "title": "Kaleyra profile reconciler configuration (reconciler.yaml)",
        "type": "object",
        "additionalProperties": False,
        "required": ["accounts"],
        "properties": {
            "profiles_dir": {"type": "string", "minLength": 1, "default": "profiles"},
            "state": {
                "type": "object",
                "additionalProperties": False,
                "description": "Where the applied state lives. AWS credentials never go here: the s3 "
                "backend takes them from the standard AWS chain (environment, profile, web identity).",
                "properties": {
                    "backend": {
                        "type": "string",
                        "enum": ["local", "s3"],
                        "default": "local",
                        "description": "local: the file at path; s3: the object key in bucket.",
                    },
                    "path": {
                        "type": "string",
                        "minLength": 1,
                        "default": ".reconciler/state.json",
                        "description": "The local state file (backend local, and state migrate).",
                    },
                    "bucket": {
                        "type": "string",
                        "pattern": S3_BUCKET,
                        "description": "S3 bucket (backend s3).",
                    },
                    "key": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 900,
                        "description": "Object key of the state; the lock, journal and audit go beside it.",
                    },
                    "region": {"type": "string", "pattern": r"^[a-z0-9-]+$", "description": "AWS region."},
                    "endpoint_url": {
                        "type": "string",
                        "pattern": ENDPOINT,
                        "description": "S3-compatible endpoint (MinIO, R2, ...); http:// only to loopback.",
                    },
                },
            },
            "defaults": {
                "type": "object",
                "additionalProperties": False,
                "description": "Merged under every profile; a profile's own value wins.",
                "properties": {"account": ACCOUNT_REF, **FIELDS},
            },
            "safety": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"max_changes": {"type": "integer", "minimum": 0}},
            },
            "retry": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "attempts": {"type": "integer", "minimum": 1, "maximum": 20, "default": 4},
                    "backoff_base_s": {**positive, "default": 0.5},
                    "backoff_max_s": {**positive, "default": 30},
                    "deadline_s": {**positive, "default": 120},
                    "timeout_s": {**positive, "default": 30},
                },
            },
            "accounts": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": NAME},
                "additionalProperties": account,
            },
        },
    }


SCHEMAS = {"profile": profile_schema, "config": config_schema}


@functools.cache
def validator(kind: str) -> jsonschema.protocols.Validator:
    """The full validator for `kind`, built once per process (building it is the expensive part)."""
    import jsonschema  # only needed once something is invalid: keeps `plan` start-up short

    return jsonschema.Draft202012Validator(SCHEMAS[kind]())


@functools.cache
def fast_check(kind: str) -> Callable[[Any], bool] | None:
    """A pre-check compiled from the same schema, for the common case of a valid file.

    It answers True only for instances the schema surely accepts; anything else (or a schema using a
    keyword it does not know) goes to jsonschema, which finds and describes every problem.
    """
    try:
        return _compile(SCHEMAS[kind]())
    except _Unsupported:
        return None


def check(kind: str, document: Document, data: Any = None, base: tuple = ()) -> list[Problem]:
    """Validate `data` (default: the whole document) against a schema; one sentence per problem."""
    instance = document.data if data is None else data
    quick = fast_check(kind)
    if quick is not None and quick(instance):
        return []
    problems: list[Problem] = []
    for error in validator(kind).iter_errors(instance):
        problems.extend(_describe(error, document, (*base, *error.absolute_path)))
    return problems


class _Unsupported(Exception):
    pass


_ANNOTATIONS = {"$schema", "$id", "title", "description", "default"}
_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda value: isinstance(value, str),
    "object": lambda value: isinstance(value, dict),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
}


_STRING_KEYWORDS = {"type", "maxLength", "minLength", "pattern", "enum"}


def _compile(schema: dict[str, Any]) -> Callable[[Any], bool]:
    """Turn the keywords our schemas use into one predicate; raise _Unsupported for any other."""
    if schema.get("type") == "string" and set(schema) - _ANNOTATIONS <= _STRING_KEYWORDS:
        return _compile_string(schema)
    tests: list[Callable[[Any], bool]] = []
    for keyword, rule in schema.items():
        if keyword in _ANNOTATIONS or keyword == "properties":
            continue
        if keyword == "type":
            tests.append(_TYPES[rule])
        elif keyword == "maxLength":
            tests.append(lambda value, limit=rule: not isinstance(value, str) or len(value) <= limit)
        elif keyword == "minLength":
            tests.append(lambda value, limit=rule: not isinstance(value, str) or len(value) >= limit)
        elif keyword == "pattern":
            tests.append(
                lambda value, search=re.compile(rule).search: (
                    not isinstance(value, str) or bool(search(value))
                )
            )
        elif keyword == "enum":
            tests.append(lambda value, allowed=frozenset(rule): isinstance(value, str) and value in allowed)
        elif keyword in ("minimum", "maximum", "exclusiveMinimum"):
            compare = {"minimum": float.__ge__, "maximum": float.__le__, "exclusiveMinimum": float.__gt__}[
                keyword
            ]
            tests.append(
                lambda value, bound=rule, op=compare: not _TYPES["number"](value) or op(float(value), bound)
            )
        elif keyword == "required":
            tests.append(
                lambda value, keys=tuple(rule): not isinstance(value, dict) or all(k in value for k in keys)
            )
        elif keyword == "minProperties":
            tests.append(lambda value, least=rule: not isinstance(value, dict) or len(value) >= least)
        elif keyword == "propertyNames":
            names = _compile(rule)
            tests.append(lambda value, names=names: not isinstance(value, dict) or all(map(names, value)))
        elif keyword == "additionalProperties":
            properties = {name: _compile(sub) for name, sub in schema.get("properties", {}).items()}
            others = None if rule is False else _compile(rule)
            tests.append(lambda value, p=properties, o=others: _object_ok(value, p, o))
        else:
            raise _Unsupported(keyword)
    if "properties" in schema and "additionalProperties" not in schema:
        raise _Unsupported("properties without additionalProperties")
    return lambda value: all(test(value) for test in tests)


def _compile_string(schema: dict[str, Any]) -> Callable[[Any], bool]:
    """One closure for a string property: the hot path, run for every field of every profile."""
    longest = schema.get("maxLength", float("inf"))
    shortest = schema.get("minLength", 0)
    search = re.compile(schema["pattern"]).search if "pattern" in schema else None
    allowed = frozenset(schema["enum"]) if "enum" in schema else None

    def test(value: Any) -> bool:
        if type(value) is not str or not shortest <= len(value) <= longest:
            return False
        if allowed is not None and value not in allowed:
            return False
        return search is None or search(value) is not None

    return test


def _object_ok(
    value: Any, properties: dict[str, Callable[[Any], bool]], others: Callable[[Any], bool] | None
) -> bool:
    if not isinstance(value, dict):
        return True
    for key, item in value.items():
        test = properties.get(key, others)
        if test is None or not test(item):
            return False
    return True


def did_you_mean(word: str, options: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        close = [o for o in options if o.lower() == str(word).lower()]
    return f" (did you mean '{close[0]}'?)" if close else ""


def _describe(error: jsonschema.ValidationError, document: Document, path: tuple) -> list[Problem]:
    name = str(path[-1]) if path else "file"
    value = error.instance
    kind = error.validator
    if kind == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extras = [key for key in value if key not in known]
        return [document.problem((*path, key), _unknown_key(key, known), of_key=True) for key in extras]
    if kind == "required":
        missing = [key for key in error.validator_value if key not in value]
        where = f" in {name}" if path else ""
        return [document.problem(path, f"missing required key '{key}'{where}") for key in missing]
    if kind == "propertyNames":
        return [document.problem((*path, value), f"'{value}' {PATTERN_MESSAGES['account']}", of_key=True)]
    if kind == "maxLength":
        limit = error.validator_value
        message = f"{name}: {len(value)} characters, the limit is {limit}"
    elif kind == "enum":
        allowed = [str(option) for option in error.validator_value if option != ""]
        message = f"{name}: '{value}' is not one of the allowed values{did_you_mean(str(value), allowed)}"
        if len(allowed) > 5:
            message += "; see `reconciler schema profile` for the list"
        else:
            message += f": {', '.join(allowed)}"
    elif kind == "pattern":
        message = f"{name}: '{value}' {PATTERN_MESSAGES.get(name, 'has the wrong form')}"
    elif kind == "type":
        message = f"{name}: {_type_message(error.validator_value, value, document.raw_text.get(path))}"
    elif kind == "minProperties":
        message = f"{name}: needs at least one entry"
    elif kind in ("minimum", "maximum", "exclusiveMinimum"):
        bound = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "more than"}[kind]
        message = f"{name}: {value} must be {bound} {error.validator_value}"
    else:
        message = f"{name}: {error.message}"
    return [document.problem(path, message)]


def _unknown_key(key: str, known: list[str]) -> str:
    if AWS_CREDENTIAL_KEY.match(key):
        return (
            f"'{key}': AWS credentials never go in reconciler.yaml; the s3 backend takes them from the "
            "standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or web identity "
            "such as GitHub OIDC)"
        )
    if SECRET_KEY.match(key):
        return (
            f"'{key}': API keys never go in files; set the key in the environment variable "
            "named by the account's api_key_env (default KALEYRA_API_KEY) instead"
        )
    return f"unknown key '{key}'{did_you_mean(key, known)}"


_TYPE_NAMES = {bool: "a boolean", int: "a number", float: "a number", type(None): "empty (null)"}


def _type_message(expected: str | list[str], value: Any, raw: str | None) -> str:
    wanted = {"string": "text", "object": "a mapping", "integer": "a whole number", "number": "a number"}
    expected_name = wanted.get(expected, expected) if isinstance(expected, str) else " or ".join(expected)
    got = _TYPE_NAMES.get(type(value)) or {dict: "a mapping", list: "a list"}.get(type(value), "a date")
    message = f"expected {expected_name}, got {got}"
    if expected == "string" and raw is not None:
        message += f'; write it in quotes ("{raw}") if you mean the text'
    return message
