"""reconciler.yaml: accounts, defaults, paths and safety settings, loaded and checked."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from . import schema, secrets
from .errors import MissingApiKey, Problem, ReconcilerError, ValidationFailed
from .targets import Destination, RetryPolicy, Target, pod_base_url
from .yamlfile import MAX_CONFIG_NODES, Document, NotARegularFile, load_mapping, refuse_unless_regular

DEFAULT_CONFIG = "reconciler.yaml"
DEFAULT_STATE_PATH = ".reconciler/state.json"
ENDPOINT_ENV = "KALEYRA_ENDPOINT"


@dataclass(frozen=True)
class Account:
    name: str
    sid: str
    waba_id: str
    pod: str
    api_version: str = "v2"
    api_key_env: str = "KALEYRA_API_KEY"
    endpoint: str | None = None

    def target(self) -> Target:
        """Where this account's PUTs go; KALEYRA_ENDPOINT overrides every account's base URL."""
        base = os.environ.get(ENDPOINT_ENV) or self.endpoint or pod_base_url(self.pod)
        return Target(base_url=base.rstrip("/"), sid=self.sid, waba_id=self.waba_id)

    def destination(self) -> Destination:
        """Where this account's PUTs go and under which API version: a plan reviewed for one
        destination must not be sent to another, so its checksum covers this."""
        return Destination(url=self.target().url, api_version=self.api_version)

    @property
    def waba_key(self) -> str:
        """Which WABA this account sends to ("sid/waba_id"); the state records it per number."""
        return f"{self.sid}/{self.waba_id}"


@dataclass(frozen=True)
class S3Location:
    """Where a remote state lives: `key` in `bucket`, its lock, journal and audit objects beside it.
    Credentials are never here: boto3 finds them in the standard AWS chain."""

    bucket: str
    key: str
    region: str | None = None
    endpoint_url: str | None = None

    def url(self, key: str | None = None) -> str:
        return f"s3://{self.bucket}/{self.key if key is None else key}"


@dataclass(frozen=True)
class Reassert:
    """`reassert:`: re-send in full the numbers last sent more than `every_days` ago, at most
    `max_per_run` of them per run of `reconciler reassert`."""

    every_days: int
    max_per_run: int


@dataclass(frozen=True)
class Config:
    path: Path
    profiles_dir: Path
    state_path: Path
    accounts: dict[str, Account]
    defaults: dict[str, str] = field(default_factory=dict)
    max_changes: int | None = None
    reassert: Reassert | None = None  # None: re-assertion is off
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    document: Document | None = None
    # "local" (state_path) or "s3" (s3); s3 is also set with backend local, for `state migrate`.
    state_backend: str = "local"
    s3: S3Location | None = None

    def waba_keys(self) -> dict[str, str]:
        """Account name -> waba_key, what the plan compares each state entry against."""
        return {name: account.waba_key for name, account in self.accounts.items()}

    def destinations(self) -> dict[str, Destination]:
        """Account name -> where its PUTs go, which a plan's checksum covers."""
        return {name: account.destination() for name, account in self.accounts.items()}

    @property
    def audit_path(self) -> Path:
        return self.state_path.with_name("audit.jsonl")


def config_path(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get("RECONCILER_CONFIG") or DEFAULT_CONFIG)


def load_config(explicit: str | None = None) -> Config:
    """Load and check reconciler.yaml; raise ValidationFailed listing every problem in it."""
    path = config_path(explicit)
    try:
        refuse_unless_regular(path.stat().st_mode)
    except NotARegularFile as error:
        raise ReconcilerError(
            f"{path}: is {error.kind}, not a regular file; point --config (or RECONCILER_CONFIG) at "
            "reconciler.yaml itself"
        ) from None
    except FileNotFoundError:
        raise ReconcilerError(
            f"{path}: no such configuration file; run in the project root, pass --config PATH or set "
            "RECONCILER_CONFIG, or run `reconciler init` to create one"
        ) from None
    except OSError as error:
        raise ReconcilerError(f"{path}: cannot be read ({error.strerror or error})") from None
    document = load_mapping(path, display_path(path), max_nodes=MAX_CONFIG_NODES)
    problems = schema.check("config", document)
    if problems:
        raise ValidationFailed(problems)
    data = document.data
    accounts = {name: Account(name=name, **fields) for name, fields in data["accounts"].items()}
    root = Path(os.path.abspath(path.parent))  # absolute: later chdirs must not move the state
    problems += _endpoint_problems(document, accounts) + _path_problems(document, path, root)
    problems += _retry_problems(document)
    problems += _state_problems(document)
    problems += _reassert_problems(document)
    defaults = dict(data.get("defaults") or {})
    default_account = defaults.get("account")
    if default_account is not None and default_account not in accounts:
        hint = schema.did_you_mean(default_account, list(accounts))
        problems.append(
            document.problem(("defaults", "account"), f"unknown account '{default_account}'{hint}")
        )
    if problems:
        raise ValidationFailed(problems)
    state = data.get("state") or {}
    config = Config(
        path=path,
        profiles_dir=root / data.get("profiles_dir", "profiles"),
        state_path=root / state.get("path", DEFAULT_STATE_PATH),
        state_backend=state.get("backend", "local"),
        s3=(
            S3Location(state["bucket"], state["key"], state.get("region"), state.get("endpoint_url"))
            if "bucket" in state and "key" in state
            else None
        ),
        accounts=accounts,
        defaults=defaults,
        max_changes=(data.get("safety") or {}).get("max_changes"),
        reassert=Reassert(**data["reassert"]) if "reassert" in data else None,
        retry=RetryPolicy(**(data.get("retry") or {})),
        document=document,
    )
    remember_configured_keys(config)
    return config


def display_path(path: Path | str) -> str:
    """A path as users should see it: relative to the working directory when it is inside it."""
    absolute = os.path.abspath(path)  # not resolve(): a symlink must be named as itself
    prefix = os.path.join(os.getcwd(), "")
    return absolute[len(prefix) :] if absolute.startswith(prefix) else absolute


def insecure_endpoint(url: str) -> bool:
    """True for http:// to anything but a loopback address: keys must never cross a network in clear."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def endpoint_problem(url: str) -> str | None:
    """Why `url` cannot be a base URL for Kaleyra requests, or None: http(s) with a host, and http only
    to a loopback address."""
    if any(char.isspace() for char in url):
        return f"{url!r} holds whitespace; write the URL alone"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        return f"'{url}' is not a URL"
    if parts.scheme not in ("http", "https") or not host:
        return f"'{url}' is not an http(s) URL with a host (like https://api.in.kaleyra.io)"
    if parts.username is not None or parts.password is not None:
        return f"'{url}' carries credentials; keys only ever come from the environment"
    if insecure_endpoint(url):
        return f"'{url}' uses http:// to a non-loopback host; use https://"
    return None


def _endpoint_problems(document: Document, accounts: dict[str, Account]) -> list[Problem]:
    problems = []
    for account in accounts.values():
        problem = account.endpoint and endpoint_problem(account.endpoint)
        if problem:
            problems.append(document.problem(("accounts", account.name, "endpoint"), f"endpoint: {problem}"))
    override = os.environ.get(ENDPOINT_ENV)
    problem = override and endpoint_problem(override)
    if problem:
        problems.append(Problem(ENDPOINT_ENV, 0, 0, problem))
    return problems


# Beyond these a setting is a typo: an hour per request, a day per number.
RETRY_LIMITS = {"backoff_base_s": 3600, "backoff_max_s": 3600, "deadline_s": 86400, "timeout_s": 3600}


def _retry_problems(document: Document) -> list[Problem]:
    """YAML's .nan and .inf are numbers to JSON Schema; as timeouts they mean "never" or "fail"."""
    problems = []
    for name, value in (document.data.get("retry") or {}).items():
        limit = RETRY_LIMITS.get(name)
        if limit is not None and not (math.isfinite(value) and value <= limit):
            problems.append(
                document.problem(
                    ("retry", name), f"{name}: {value} must be a finite number of at most {limit:,}"
                )
            )
    return problems


def _path_problems(document: Document, config_file: Path, root: Path) -> list[Problem]:
    """profiles_dir and state.path stay inside the folder of reconciler.yaml, symlinks resolved: a
    config must not walk the whole disk (`/`) or read and write beside the repository (`..`)."""
    data = document.data
    problems = []
    real_root = os.path.realpath(root)
    for key_path, relative in (
        (("profiles_dir",), data.get("profiles_dir", "profiles")),
        (("state", "path"), (data.get("state") or {}).get("path", DEFAULT_STATE_PATH)),
    ):
        resolved = os.path.realpath(root / relative)
        if resolved != real_root and not resolved.startswith(os.path.join(real_root, "")):
            problems.append(
                document.problem(
                    key_path,
                    f"{'.'.join(key_path)}: '{relative}' leads outside the folder of {document.path} "
                    f"(to {resolved}); keep it inside the repository",
                )
            )
    # The files beside the state are written: a symlink (committed in a pull request, say) must not
    # send an append to ~/.bashrc or a read to /etc.
    state_path = root / (data.get("state") or {}).get("path", DEFAULT_STATE_PATH)
    for path in (
        state_path,
        state_path.with_name(state_path.name + ".journal"),
        state_path.with_name(state_path.name + ".lock"),
        state_path.with_name("audit.jsonl"),
    ):
        if path.is_symlink():
            problems.append(
                Problem(display_path(path), 0, 0, "is a symlink; the state's files must be plain files")
            )
    overlap = _overlap(document, config_file, root, state_path)
    if overlap:
        # Point at the key the user wrote: state.path, else profiles_dir (the state's is the default).
        written = "path" in (data.get("state") or {}) or "profiles_dir" not in data
        problems.append(document.problem(("state", "path") if written else ("profiles_dir",), overlap))
    return problems


def _overlap(document: Document, config_file: Path, root: Path, state_path: Path) -> str | None:
    """Why the files the reconciler writes (the state, its journal, lock and audit log) would land on
    the files it reads (reconciler.yaml, the profiles), or None. The first apply would overwrite
    reconciler.yaml, or drop state.json among the profiles, where validate and plan then trip on it."""
    relative = (document.data.get("state") or {}).get("path", DEFAULT_STATE_PATH)
    profiles_dir = document.data.get("profiles_dir", "profiles")
    config = os.path.realpath(config_file)
    profiles = os.path.realpath(root / profiles_dir)
    written = [
        os.path.realpath(path)
        for path in (
            state_path,
            state_path.with_name(state_path.name + ".journal"),
            state_path.with_name(state_path.name + ".lock"),
            state_path.with_name("audit.jsonl"),
        )
    ]
    if config in written:
        return (
            f"state.path '{relative}' would write the state, its journal, lock or audit.jsonl over "
            f"{document.path}; keep them apart (the default state.path is .reconciler/state.json)"
        )
    if any(path == profiles or path.startswith(os.path.join(profiles, "")) for path in written):
        return (
            f"state.path '{relative}' is inside profiles_dir '{profiles_dir}': "
            "the state, its journal, lock and audit.jsonl would be written where profiles are read; keep "
            "the two folders apart (the defaults are profiles/ and .reconciler/state.json)"
        )
    if written[0] == written[3]:
        return f"state.path '{relative}' is the name of the audit log beside it (audit.jsonl); rename it"
    return None


# S3's limit on an object key, in UTF-8 bytes. The longest key the reconciler puts beside the state is
# `<key>.journal/probe-<32 hex digits>` (47 bytes more), so state.key is limited to the rest.
S3_MAX_KEY_BYTES = 1024
MAX_STATE_KEY_BYTES = S3_MAX_KEY_BYTES - len(".journal/probe-") - 32


def _state_problems(document: Document) -> list[Problem]:
    """The s3 backend needs a bucket and a key; its endpoint_url follows the endpoint rules (http only
    to loopback), and its key is a plain object key the lock, journal and audit objects sit beside."""
    state = document.data.get("state") or {}
    problems = []
    if state.get("backend") == "s3":
        missing = [name for name in ("bucket", "key") if name not in state]
        if missing:
            problems.append(
                document.problem(
                    ("state", "backend"),
                    f"state.backend s3 needs state.{' and state.'.join(missing)} (the bucket and the "
                    "object key of the state)",
                )
            )
    key = state.get("key")
    if isinstance(key, str) and (key.startswith("/") or key.endswith("/")):
        problems.append(
            document.problem(("state", "key"), f"state.key: '{key}' must not start or end with '/'")
        )
    if isinstance(key, str) and len(key.encode("utf-8", "surrogatepass")) > MAX_STATE_KEY_BYTES:
        problems.append(
            document.problem(
                ("state", "key"),
                f"state.key is {len(key.encode('utf-8', 'surrogatepass')):,} bytes in UTF-8; S3 keys are at "
                f"most {S3_MAX_KEY_BYTES:,} bytes and the objects beside the state add up to "
                f"{S3_MAX_KEY_BYTES - MAX_STATE_KEY_BYTES}, so state.key may be at most "
                f"{MAX_STATE_KEY_BYTES} bytes",
            )
        )
    url = state.get("endpoint_url")
    problem = isinstance(url, str) and endpoint_problem(url)
    if problem:
        problems.append(document.problem(("state", "endpoint_url"), f"state.endpoint_url: {problem}"))
    return problems


def _reassert_problems(document: Document) -> list[Problem]:
    """A re-assertion run larger than safety.max_changes would be refused every time: say so now."""
    reassert, safety = document.data.get("reassert") or {}, document.data.get("safety") or {}
    per_run, limit = reassert.get("max_per_run"), safety.get("max_changes")
    if per_run is not None and limit is not None and per_run > limit:
        return [
            document.problem(
                ("reassert", "max_per_run"),
                f"reassert.max_per_run ({per_run}) is more than safety.max_changes ({limit}): every "
                "re-assertion run would be refused; lower it",
            )
        ]
    return []


def remember_configured_keys(config: Config) -> None:
    """Every key the configuration names and the environment holds is redacted, even in commands
    that never send (history, state show): what one run wrote must not leak through another."""
    secrets.remember_named_secrets()
    for account in config.accounts.values():
        value = os.environ.get(account.api_key_env)
        if value:
            secrets.remember(value)


def resolve_keys(config: Config, account_names: Iterable[str]) -> dict[str, str]:
    """The API key of each named account, from its environment variable.

    Every missing or malformed key is reported at once, naming the variable and never the value, so a
    run is refused before any request rather than one account at a time.
    """
    keys: dict[str, str] = {}
    problems: list[str] = []
    for name in sorted(set(account_names)):
        account = config.accounts.get(name)
        if account is None:
            problems.append(f"account '{name}' is not in {config.path.name} any more")
            continue
        value = os.environ.get(account.api_key_env)
        if value:
            secrets.remember(value)
        problem = secrets.key_problem(value)
        if problem is None:
            keys[name] = value  # type: ignore[assignment]  (key_problem rejects None)
        else:
            problems.append(f"account '{name}': the environment variable {account.api_key_env} {problem}")
    if problems:
        raise MissingApiKey(problems)
    return keys
