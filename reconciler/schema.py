"""The JSON Schemas of profiles and reconciler.yaml, and the sentences their errors turn into.

Both schemas are built here from one table of field rules, so the profile fields and the config's
`defaults` can never disagree; `schemas/*.json` are this module's output (a test keeps them current).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import json
import re
from collections.abc import Callable, Iterator
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

# Every pattern below is read two ways and must mean the same in both: as ECMA-262 (unicode mode) by
# editors and check-jsonschema, and by Python's `re` here. So they use only explicit character classes
# (no `\s`, `\d`, `\w` or `.`, whose sets differ between the engines) and `$` only as the final anchor,
# which `ecma_regex` turns into `\Z` (Python's `$` also matches before a final newline; ECMA's does not).
#
# No value may hold a line break or a control character: the C0 and C1 controls (among them LF, CR,
# VT, FF and NEL, U+0085) and the Unicode line and paragraph separators (U+2028, U+2029).
NOT_IN_A_LINE = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
# ...nor, where a value is one word (an email address, a URL), a space: ECMA-262's `\s` spelled out.
NOT_IN_A_WORD = NOT_IN_A_LINE + r"\x20\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\ufeff"
ONE_LINE = rf"^[^{NOT_IN_A_LINE}]*$"
E164 = r"^\+[1-9][0-9]{6,14}$"
EMAIL = (
    rf'^$|^[^@"<>()\[\],;:{NOT_IN_A_WORD}]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?'
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
HTTP_URL = rf"^$|^https?://[^{NOT_IN_A_WORD}/?#@]+(?:[/?#][^{NOT_IN_A_WORD}]*)?$"
CALLBACK_ID = r"^$|^[A-Za-z0-9_-]{1,64}$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ENV_VAR = r"^[A-Za-z_][A-Za-z0-9_]*$"
ENDPOINT = rf"^https?://[^{NOT_IN_A_WORD}/?#@]+(?:/[^{NOT_IN_A_WORD}]*)?$"
S3_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"

# The fields a profile can manage, in the order the API reference lists them. `""` clears a value.
FIELDS: dict[str, dict[str, Any]] = {
    "address": {
        "type": "string",
        "maxLength": 256,
        "pattern": ONE_LINE,
        "description": "Address of the business, on one line.",
    },
    "description": {
        "type": "string",
        "maxLength": 256,
        "pattern": ONE_LINE,
        "description": "Description of the business, on one line.",
    },
    "incoming_url": {
        "type": "string",
        "maxLength": 2048,
        "pattern": HTTP_URL,
        "description": "http(s) URL for incoming-message status updates; only for api_version v1 accounts.",
    },
    "category": {"type": "string", "enum": [*CATEGORIES, ""], "description": "Business category."},
    "email": {"type": "string", "maxLength": 254, "pattern": EMAIL, "description": "Contact email."},
    "about": {
        "type": "string",
        "maxLength": 139,
        "pattern": ONE_LINE,
        "description": "About text (at most 139 characters), on one line.",
    },
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
            "profiles_dir": {"type": "string", "minLength": 1, "pattern": ONE_LINE, "default": "profiles"},
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
                        "pattern": ONE_LINE,
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
                        "pattern": ONE_LINE,
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
            "reassert": {
                "type": "object",
                "additionalProperties": False,
                "required": ["every_days", "max_per_run"],
                "description": "Scheduled re-assertion (`reconciler reassert`): re-send in full the numbers "
                "whose last successful send is older than every_days, at most max_per_run per run. Kaleyra "
                "has no read of profile fields, so this is how edits made in its console are corrected.",
                "properties": {
                    "every_days": {"type": "integer", "minimum": 1, "maximum": 3650},
                    "max_per_run": {"type": "integer", "minimum": 1},
                },
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


_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


@functools.cache
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` as JSON Schema reads it (ECMA-262): `$` is the end of the text, as `\\Z` is in Python.

    fastjsonschema makes the same substitution, so the fast path and the describer read every pattern
    alike; tests check both against a real ECMA-262 engine (regress, the one check-jsonschema uses).
    """
    return re.compile(_UNESCAPED_DOLLAR.sub(r"\\Z", pattern))


@functools.cache
def validator(kind: str) -> jsonschema.protocols.Validator:
    """The describing validator for `kind`, built once per process (building it is the expensive part).

    jsonschema's own `pattern` keyword uses Python's `re.search`, whose `$` lets a final newline
    through; ours reads patterns as ECMA-262 does.
    """
    import jsonschema  # only needed once something is invalid: keeps `plan` start-up short

    def pattern(
        checker: jsonschema.protocols.Validator, regex: str, instance: Any, _schema: Any
    ) -> Iterator[jsonschema.ValidationError]:
        if checker.is_type(instance, "string") and not ecma_regex(regex).search(instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {regex!r}")

    ecma = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": pattern})
    return ecma(SCHEMAS[kind]())


@functools.cache
def _fast_validator(kind: str) -> tuple[Callable[[Any], Any], type[Exception]]:
    """fastjsonschema's validator for `kind` (from reconciler/compiled/), and the exception it raises
    for invalid data."""
    compiled = importlib.import_module(f"{__package__}.compiled.{kind}")
    return compiled.validate, compiled.JsonSchemaValueException


def compiled_source(kind: str) -> str:
    """The source of reconciler/compiled/<kind>.py: fastjsonschema's code for the schema of `kind`.

    Shipped generated, as the JSON files in schemas/ are, because generating it costs every command
    18-21 ms at start-up (both schemas) and a module's bytecode is cached. It records the digest of the
    schema it was made from, so tests/test_schema.py fails until it is regenerated after a schema
    change: `python -m reconciler.schema`.
    """
    import fastjsonschema

    # use_default=False: a validator must not write the schema's defaults into the data it checks.
    code = fastjsonschema.compile_to_code(SCHEMAS[kind](), use_default=False, detailed_exceptions=False)
    entry = re.search(r"^def (validate_\w+)\(", code, re.MULTILINE)
    assert entry is not None, "fastjsonschema's code has no validate function"
    return (
        f'"""The {kind} schema\'s validator, generated by fastjsonschema: do not edit.\n\n'
        "Regenerate with `python -m reconciler.schema` (tests/test_schema.py fails until it is current).\n"
        '"""\n\n'
        "# fmt: off\n"
        f"{code.rstrip()}\n\n\n"
        f"validate = {entry.group(1)}\n"
        f'SCHEMA_SHA256 = "{schema_digest(kind)}"\n'
    )


def schema_digest(kind: str) -> str:
    """The sha256 of the schema of `kind` as canonical JSON."""
    canonical = json.dumps(SCHEMAS[kind](), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_valid(kind: str, instance: Any) -> bool:
    """The fast path: True when `instance` satisfies the schema (most files do), else False."""
    compiled, invalid = _fast_validator(kind)
    try:
        compiled(instance)
    except invalid:
        return False
    return True


def check(kind: str, document: Document, data: Any = None, base: tuple = ()) -> list[Problem]:
    """Validate `data` (default: the whole document) against a schema; one sentence per problem.

    fastjsonschema settles valid files; jsonschema then finds and describes every problem in the rest.
    """
    instance = document.data if data is None else data
    if is_valid(kind, instance):
        return []
    problems: list[Problem] = []
    for error in validator(kind).iter_errors(instance):
        problems.extend(_describe(error, document, (*base, *error.absolute_path)))
    if not problems:  # the two engines disagree: refuse, never accept what one of them rejects
        problems.append(document.problem(base, f"does not satisfy the {kind} schema"))
    return problems


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
    elif name == "api_version" and kind in ("enum", "type"):
        # `api_version: 1` fails both the type and the enum: one message for both, and for "1".
        shown = document.raw_text.get(path) or str(value)
        message = f"api_version: {shown} is not an API version; write v1 or v2"
    elif kind == "enum":
        allowed = [str(option) for option in error.validator_value if option != ""]
        message = f"{name}: '{value}' is not one of the allowed values{did_you_mean(str(value), allowed)}"
        message += f": {', '.join(allowed)}"
    elif kind == "pattern":
        message = _not_one_line(name, value) or (
            f"{name}: '{value}' {PATTERN_MESSAGES.get(name, 'has the wrong form')}"
        )
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


NOT_IN_A_LINE_RE = re.compile(f"[{NOT_IN_A_LINE}]")
# Unicode's mandatory line breaks (LF, VT, FF, CR, NEL, LS, PS); the rest of NOT_IN_A_LINE are controls.
_LINE_BREAKS = "\n\x0b\x0c\r\x85\u2028\u2029"


def _not_one_line(name: str, value: str) -> str | None:
    """The sentence for a value holding a line break or a control character, or None if it holds none."""
    found = NOT_IN_A_LINE_RE.search(value)
    if found is None:
        return None
    character = found.group()
    code = f"U+{ord(character):04X}"
    if character not in _LINE_BREAKS:
        return f"{name}: control character {code} in the value"
    if len(value.rstrip(_LINE_BREAKS)) <= found.start():
        return (
            f"{name}: ends with a line break ({code}); every value is a single line "
            "(a | or > block adds one: write the value on the key's line, quoted if needed)"
        )
    return f"{name}: a line break ({code}) inside the value; every value is a single line"


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


_TYPE_NAMES = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "empty (null)",
    str: "text",
    dict: "a mapping",
    list: "a list",
}


def _type_message(expected: str | list[str], value: Any, raw: str | None) -> str:
    wanted = {"string": "text", "object": "a mapping", "integer": "a whole number", "number": "a number"}
    expected_name = wanted.get(expected, expected) if isinstance(expected, str) else " or ".join(expected)
    got = _TYPE_NAMES.get(type(value), "a date")  # YAML's timestamps are the only other type we build
    message = f"expected {expected_name}, got {got}"
    if got == "text" and raw is None and isinstance(value, str):
        message += f" ('{value}')"
    if expected == "string" and raw is not None:
        message += f'; write it in quotes ("{raw}") if you mean the text'
    return message


if __name__ == "__main__":  # python -m reconciler.schema: regenerate reconciler/compiled/
    from pathlib import Path

    for name in SCHEMAS:
        (Path(__file__).parent / "compiled" / f"{name}.py").write_text(compiled_source(name))
