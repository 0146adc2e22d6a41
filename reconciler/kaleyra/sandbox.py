"""A local Kaleyra emulator: the update endpoint with the API reference's rules, codes and bodies.

It answers `PUT /v2/<sid>/whatsapp/<waba_id>/number/update` and `GET /v1/<sid>/callback/profiles/<id>`
like Kaleyra does, serves what it holds at `GET /_sandbox/numbers` (the requests it received at
`GET /_sandbox/requests`, keys left out, and counts at `GET /_sandbox/stats`), lets a test or a demo
edit a profile behind the API's back as Kaleyra's console would (`POST /_sandbox/console/<number>`,
from loopback only), and can be slow
(`latency_ms`), flaky (`fail_rate`, answered as WA500, 429, or a dropped connection) or rate limited
(`rate_limit`: a token bucket per account answering 429) so users and tests can rehearse bad days.
"""

from __future__ import annotations

import ipaddress
import json
import math
import random
import re
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ReconcilerError
from ..profiles import Profile
from ..schema import CATEGORIES, E164, EMAIL, FIELDS
from ..state.files import atomic_write

CALLBACK_FIELDS = ("callback_profile_id", "outgoing_callback_profile_id")
ROUTE = re.compile(r"^/v2/(?P<sid>[^/]+)/whatsapp/(?P<waba_id>[^/]+)/number/update/?$")
CONSOLE_ROUTE = re.compile(r"^/_sandbox/console/(?P<phone_number>[^/?]+)/?(?:\?sid=(?P<sid>[^&]*))?$")
CALLBACK_ROUTE = re.compile(r"^/v1/(?P<sid>[^/]+)/callback/profiles/(?P<profile_id>[^/?]+)/?$")
FAULTS = ("wa500", "429", "drop")
RETRY_AFTER = re.compile(r"[0-9]{1,6}|none")  # --retry-after: HTTP's delta-seconds, or no header
_CATEGORY_MESSAGE = "business_catregory value is invalid. Valid values are : " + ", ".join(CATEGORIES)
# The reference's bodies, word for word (typos included: clients match on them).
RBC001 = {
    "code": "RBC001",
    "message": "Incorrect SID or API key.",
    "data": [],
    "error": {"body": "Incorrect SID or API key.", "error": "record not found"},
}
WA401 = {
    "code": "WA401",
    "message": "Waba_id is not present or does not belong to the account.",
    "data": {},
    "error": {"waba_id": "Waba_id is not present or does not belong to the account."},
}
E112 = {"code": "E112", "message": "invalid Phone Number or Phone Number Not Found", "data": [], "error": {}}
WA500 = {
    "code": "WA500",
    "message": "Please try again later",
    "data": {},
    "error": {"error": "Internal server error"},
}
PAYLOAD = {
    "code": "WA400",
    "message": "Refer to correct payload format ",
    "data": {},
    "error": {"payload": "Incorrect payload format"},
}
SUCCESS = {"code": "WA200", "message": "Request Processed Successfully", "data": 1, "error": {}}
MAX_REQUEST_BYTES = 1 << 20  # a profile update is a few hundred bytes
# HTTP statuses are not in the reference; these are the sandbox's choice (clients go by `code`).
STATUS = {
    "WA200": 200,
    "RBC001": 401,
    "WA401": 401,
    "E112": 404,
    "WA400": 400,
    "WA500": 500,
    "RBC024": 200,
    "RBC302": 404,
}
# Kaleyra documents no 429 body; this one is the sandbox's choice (a client goes by the status here).
TOO_MANY = {"message": "Too Many Requests"}
# Callback profile statuses, as Kaleyra's "Get a Callback Profile by ID" documents them.
ACTIVE, AUTO_DISABLED, DISABLED = 1, 2, 3


def callback_profile_found(profile: dict[str, Any]) -> dict[str, Any]:
    """Kaleyra's documented success body for a callback profile."""
    return {
        "code": "RBC024",
        "message": "Profile fetched successfully",
        "data": {
            "headers": "{}",
            "body_type": None,
            "body": "{}",
            "created_at": "2024-01-01T00:00:00.000Z",
            "modified_at": None,
            **profile,
        },
        "error": {},
        "status": 200,
    }


def callback_profile_missing(profile_id: str) -> dict[str, Any]:
    """Kaleyra's documented answer for an id no profile has (its delete and get pages show RBC302)."""
    return {
        "code": "RBC302",
        "message": "No profile exists with this id",
        "data": {},
        "error": [{"params": f"No profile exists with id: {profile_id}"}],
        "status": 404,
    }


def wa400(message: str) -> dict[str, Any]:
    return {"code": "WA400", "message": message, "data": {}, "error": {"error": message}}


@dataclass
class SandboxAccount:
    sid: str
    waba_id: str
    numbers: dict[str, dict[str, str]] = field(default_factory=dict)


class TokenBucket:
    """A server's rate limit: `burst` requests at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class Sandbox:
    """What the emulator holds and how it behaves; thread-safe."""

    accounts: list[SandboxAccount]
    api_key: str | None = None
    latency_ms: float = 0
    fail_rate: float = 0
    faults: tuple[str, ...] = ("wa500",)
    # Seconds in the Retry-After header of every 429 (injected or rate limited); None sends no header.
    retry_after_s: int | None = 1
    data_file: Path | None = None
    seed: int | None = None
    # Requests per second per account (sid), None for no limit; `burst` defaults to one second's worth.
    rate_limit: float | None = None
    burst: int | None = None
    # sid -> callback profile id -> the profile's data (profile_id, title, url, http_method, status).
    callback_profiles: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lookups: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.random = random.Random(self.seed)
        self.buckets: dict[str, TokenBucket] = {}
        # sid -> {"served": n, "throttled": n}, for GET /_sandbox/stats
        self.counts: dict[str, dict[str, int]] = {}

    @classmethod
    def from_file(cls, path: Path, **options: Any) -> Sandbox:
        """Provision from a data file (it need not exist yet); raise ReconcilerError if it is malformed."""
        try:
            data = json.loads(path.read_text()) if path.exists() else {"accounts": []}
            accounts = [
                SandboxAccount(
                    str(a["sid"]),
                    str(a["waba_id"]),
                    {str(n): dict(f) for n, f in a.get("numbers", {}).items()},
                )
                for a in data["accounts"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ReconcilerError(
                f"{path}: not a sandbox data file ({type(error).__name__}: {error}); expected "
                '{"accounts": [{"sid": ..., "waba_id": ..., "numbers": {"+1...": {fields}}}]}'
            ) from None
        return cls(accounts, data_file=path, **options)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "accounts": [
                    {
                        "sid": a.sid,
                        "waba_id": a.waba_id,
                        "numbers": {n: dict(f) for n, f in sorted(a.numbers.items())},
                    }
                    for a in self.accounts
                ]
            }

    def number(self, phone_number: str) -> dict[str, str] | None:
        """The fields held for a number on any account (tests read this)."""
        with self.lock:
            for account in self.accounts:
                if phone_number in account.numbers:
                    return dict(account.numbers[phone_number])
        return None

    def fault(self) -> str | None:
        with self.lock:
            if self.fail_rate and self.random.random() < self.fail_rate:
                return self.random.choice(self.faults)
        return None

    def admit(self, sid: str) -> bool:
        """Count one API request for `sid`; False when its rate limit turns it away (answer 429)."""
        with self.lock:
            counts = self.counts.setdefault(sid, {"served": 0, "throttled": 0})
            if self.rate_limit:
                bucket = self.buckets.get(sid)
                if bucket is None:
                    burst = self.burst if self.burst is not None else max(1, math.ceil(self.rate_limit))
                    bucket = self.buckets[sid] = TokenBucket(self.rate_limit, burst, time.monotonic())
                if not bucket.take(time.monotonic()):
                    counts["throttled"] += 1
                    return False
            counts["served"] += 1
            return True

    def stats(self) -> dict[str, Any]:
        with self.lock:
            accounts = {sid: dict(counts) for sid, counts in sorted(self.counts.items())}
        return {
            "served": sum(counts["served"] for counts in accounts.values()),
            "throttled": sum(counts["throttled"] for counts in accounts.values()),
            "accounts": accounts,
        }

    def retry_after_header(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}

    def callback_profile(self, sid: str, api_key: str | None, profile_id: str) -> dict[str, Any]:
        """Answer `GET /v1/<sid>/callback/profiles/<id>` as Kaleyra documents it."""
        known_sid = any(account.sid == sid for account in self.accounts)
        if not api_key or not known_sid or (self.api_key is not None and api_key != self.api_key):
            return RBC001
        with self.lock:
            profile = self.callback_profiles.get(sid, {}).get(profile_id)
            if profile is None:
                return callback_profile_missing(profile_id)
            return callback_profile_found(dict(profile))

    def update(
        self, sid: str, waba_id: str, api_key: str | None, content_type: str, raw: bytes
    ) -> dict[str, Any]:
        """Validate and apply one update request, in the order Kaleyra checks; return the body to send."""
        sid_accounts = [a for a in self.accounts if a.sid == sid]
        if not api_key or not sid_accounts or (self.api_key is not None and api_key != self.api_key):
            return RBC001
        account = next((a for a in sid_accounts if a.waba_id == waba_id), None)
        if account is None:
            return WA401
        body = _payload(content_type, raw)
        if body is None:
            return PAYLOAD
        phone_number = body.get("phone_number", "")
        if not re.fullmatch(E164, phone_number):
            return wa400("please provide valid phone_number")
        with self.lock:
            if phone_number not in account.numbers:
                return E112
        problem = _field_problem(body)
        if problem:
            return wa400(problem)
        with self.lock:
            account.numbers[phone_number].update({k: v for k, v in body.items() if k != "phone_number"})
            if self.data_file is not None:
                atomic_write(
                    self.data_file, (json.dumps(self._unlocked_snapshot(), indent=2) + "\n").encode()
                )
        return SUCCESS

    def console_edit(
        self, phone_number: str, raw: bytes, sid: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Change a stored profile as an edit in Kaleyra's console would: no API request, no request
        log, nothing a client could notice. Every account holding the number (or only `sid`'s) changes."""
        try:
            fields = json.loads(raw)
        except ValueError:
            fields = None
        if (
            not isinstance(fields, dict)
            or not fields
            or set(fields) - set(FIELDS)
            or not all(isinstance(value, str) for value in fields.values())
        ):
            return 400, {
                "error": f"send a JSON object mapping profile fields ({', '.join(FIELDS)}) to text values"
            }
        problem = _field_problem(fields)
        if problem:
            return 400, {"error": problem}
        with self.lock:
            holding = [
                account
                for account in self.accounts
                if phone_number in account.numbers and (sid is None or account.sid == sid)
            ]
            if not holding:
                return 404, {"error": f"no account{' ' + sid if sid else ''} holds {phone_number}"}
            for account in holding:
                account.numbers[phone_number].update(fields)
            if self.data_file is not None:
                atomic_write(
                    self.data_file, (json.dumps(self._unlocked_snapshot(), indent=2) + "\n").encode()
                )
        return 200, {"phone_number": phone_number, "changed": fields, "accounts": [a.sid for a in holding]}

    def log_request(self, path: str, raw: bytes, code: str, started: float) -> None:
        """Remember every PUT, its answer and its span (never the api-key header), for tests and debugging."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self.lock:
            self.requests.append(
                {"path": path, "body": body, "answer": code, "started": started, "finished": time.time()}
            )

    def _unlocked_snapshot(self) -> dict[str, Any]:
        return {
            "accounts": [{"sid": a.sid, "waba_id": a.waba_id, "numbers": a.numbers} for a in self.accounts]
        }


def provision_callback_profiles(
    config: Config, profiles: dict[str, Profile], accounts: list[SandboxAccount]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every callback profile id the profiles name, active, on the sid of the profile's account."""
    held: dict[str, dict[str, dict[str, Any]]] = {account.sid: {} for account in accounts}
    for profile in profiles.values():
        sid = config.accounts[profile.account].sid
        for name in CALLBACK_FIELDS:
            profile_id = profile.fields.get(name)
            if profile_id:
                held.setdefault(sid, {})[profile_id] = _callback_profile(profile_id, ACTIVE)
    return held


def load_callback_profiles(
    path: Path, held: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Add (or override) the callback profiles listed in `path`, on every sid held unless one is named.

    The file is `{"callback_profiles": [{"profile_id": "...", "status": 1|2|3, "sid": "(optional)",
    "title": "...", "url": "..."}]}`; raise ReconcilerError naming the file if it is anything else.
    """
    try:
        entries = json.loads(path.read_text())["callback_profiles"]
        for entry in entries:
            profile_id, status = entry["profile_id"], entry["status"]
            if not isinstance(profile_id, str) or not profile_id or status not in (1, 2, 3):
                raise ValueError(f"profile_id must be text and status 1, 2 or 3, not {entry!r}")
            sids = [entry["sid"]] if "sid" in entry else list(held)
            for sid in sids:
                profile = _callback_profile(profile_id, status)
                profile.update({k: v for k, v in entry.items() if k in ("title", "url", "http_method")})
                held.setdefault(str(sid), {})[profile_id] = profile
    except OSError as error:
        raise ReconcilerError(f"{path}: cannot be read ({error.strerror or error})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ReconcilerError(
            f"{path}: not a callback profiles file ({type(error).__name__}: {error}); expected "
            '{"callback_profiles": [{"profile_id": "...", "status": 1, "sid": "(optional)"}]} '
            "with status 1 active, 2 auto-disabled, 3 disabled"
        ) from None
    return held


def _callback_profile(profile_id: str, status: int) -> dict[str, Any]:
    return {
        "profile_id": profile_id,
        "title": f"sandbox {profile_id}"[:64],
        "url": "https://hooks.example.com/kaleyra",
        "http_method": "POST",
        "status": status,
    }


def provision(config: Config, profiles: dict[str, Profile]) -> list[SandboxAccount]:
    """Every account (sid, waba_id) in the config, holding every phone number its profiles declare."""
    held: dict[tuple[str, str], SandboxAccount] = {}
    for account in config.accounts.values():  # two account names may share one WABA
        held.setdefault((account.sid, account.waba_id), SandboxAccount(account.sid, account.waba_id))
    for profile in profiles.values():
        account = config.accounts[profile.account]
        held[(account.sid, account.waba_id)].numbers[profile.phone_number] = {}
    return list(held.values())


def _payload(content_type: str, raw: bytes) -> dict[str, str] | None:
    if content_type.split(";")[0].strip().lower() != "application/json":
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    allowed = {"phone_number", *FIELDS}
    if (
        not isinstance(body, dict)
        or set(body) - allowed
        or not all(isinstance(v, str) for v in body.values())
    ):
        return None
    return body


def _field_problem(body: dict[str, str]) -> str | None:
    if body.get("email") and not re.fullmatch(EMAIL, body["email"]):
        return "invalid email format"
    for name, limit in (("description", 256), ("address", 256)):
        if len(body.get(name, "")) > limit:
            return f"{name} exceeds maximum character limit of {limit} characters"
    if len(body.get("about", "")) > 139:
        return "about info exceeds maximum character limit of 139 characters"
    if body.get("category") and body["category"] not in CATEGORIES:
        return _CATEGORY_MESSAGE
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind its load balancer
    # Without TCP_NODELAY, Nagle's algorithm meets the client's delayed ACK on keep-alive
    # connections and adds ~40 ms to every answer (bench/apply.py measured it).
    disable_nagle_algorithm = True
    server: _Server

    def parse_request(self) -> bool:
        # The request line has just been read: the request has arrived.
        self.arrived, self.arrived_at = time.monotonic(), time.time()
        return super().parse_request()

    def _wait_out_latency(self, sandbox: Sandbox) -> None:
        """Answer `latency_ms` after the request arrived: reading its headers and body is part of
        that time, as a real server's own work is part of the latency its clients see."""
        if sandbox.latency_ms:
            remaining = self.arrived + sandbox.latency_ms / 1000 - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)

    def do_PUT(self) -> None:
        sandbox = self.server.sandbox
        started = self.arrived_at
        length = self.headers.get("Content-Length") or "0"
        if not (length.isascii() and length.isdigit()) or int(length) > MAX_REQUEST_BYTES:
            self.close_connection = True  # where the body ends is unknown: the connection cannot go on
            self._send(400, PAYLOAD)
            return
        expected = int(length)
        raw = self.rfile.read(expected)
        if len(raw) < expected:  # the client went away mid-request: nothing to answer or apply
            self.close_connection = True
            return
        route = ROUTE.match(self.path)
        # The limit is checked as the request arrives; the answer, 429 or not, comes after the latency.
        admitted = route is None or sandbox.admit(route["sid"])
        self._wait_out_latency(sandbox)
        if route is None:
            self._send(404, {"code": "404", "message": "Not Found", "data": {}, "error": {}})
            return
        if not admitted:
            sandbox.log_request(self.path, raw, "throttled", started)
            self._send(429, TOO_MANY, sandbox.retry_after_header())
            return
        fault = sandbox.fault()
        if fault:
            sandbox.log_request(self.path, raw, fault, started)
        if fault == "drop":
            self.close_connection = True  # no response at all: the client sees the connection close
            return
        if fault == "429":
            self._send(429, TOO_MANY, sandbox.retry_after_header())
            return
        if fault == "wa500":
            self._send(500, WA500)
            return
        api_key, content_type = self.headers.get("api-key"), self.headers.get("Content-Type", "")
        body = sandbox.update(route["sid"], route["waba_id"], api_key, content_type, raw)
        sandbox.log_request(self.path, raw, body["code"], started)
        self._send(STATUS[body["code"]], body)

    def do_POST(self) -> None:
        """Only the console emulation, and only from this machine: it changes what the sandbox holds
        without an API key, as a person in Kaleyra's console would."""
        length = self.headers.get("Content-Length") or "0"
        if not (length.isascii() and length.isdigit()) or int(length) > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._send(400, {"error": "a JSON body with a Content-Length is needed"})
            return
        raw = self.rfile.read(int(length))
        route = CONSOLE_ROUTE.match(self.path)
        if route is None:
            self._send(404, {"code": "404", "message": "Not Found", "data": {}, "error": {}})
            return
        if not _is_loopback(self.client_address[0]):
            self._send(403, {"error": "the console emulation answers requests from loopback only"})
            return
        if self._refused_host():
            return
        origin = self.headers.get("Origin")
        if origin is not None and not _names_loopback(urllib.parse.urlsplit(origin).hostname or ""):
            # A browser sends Origin on a cross-site POST: a page elsewhere must not edit the sandbox.
            self._send(
                403, {"error": f"the console emulation refuses requests from another origin ({origin})"}
            )
            return
        number = urllib.parse.unquote(route["phone_number"])
        sid = urllib.parse.unquote(route["sid"]) if route["sid"] else None
        status, body = self.server.sandbox.console_edit(number, raw, sid)
        self._send(status, body)

    def _refused_host(self) -> bool:
        """Answer 403 when the Host header names anything but loopback: a page served from a name that
        rebinds to 127.0.0.1 sends its own name, and must not reach the sandbox's own endpoints."""
        host = self.headers.get("Host") or ""
        if _names_loopback(_host_name(host)):
            return False
        self._send(
            403,
            {
                "error": "the sandbox's own endpoints answer Host: localhost or a loopback address, "
                f"not {host!r}"
            },
        )
        return True

    def do_GET(self) -> None:
        sandbox = self.server.sandbox
        if self.path.startswith("/_sandbox/") and self._refused_host():
            return
        route = CALLBACK_ROUTE.match(self.path)
        if route is not None:
            self._callback_profile(sandbox, route["sid"], urllib.parse.unquote(route["profile_id"]))
        elif self.path.rstrip("/") == "/_sandbox/numbers":
            self._send(200, sandbox.snapshot())
        elif self.path.rstrip("/") == "/_sandbox/requests":
            with sandbox.lock:
                self._send(200, {"requests": list(sandbox.requests), "lookups": list(sandbox.lookups)})
        elif self.path.rstrip("/") == "/_sandbox/stats":
            self._send(200, sandbox.stats())
        else:
            self._send(404, {"code": "404", "message": "Not Found", "data": {}, "error": {}})

    def _callback_profile(self, sandbox: Sandbox, sid: str, profile_id: str) -> None:
        admitted = sandbox.admit(sid)
        self._wait_out_latency(sandbox)
        if not admitted:
            self._log_lookup(sandbox, "throttled")
            self._send(429, TOO_MANY, sandbox.retry_after_header())
            return
        body = sandbox.callback_profile(sid, self.headers.get("api-key"), profile_id)
        self._log_lookup(sandbox, body["code"])
        self._send(STATUS[body["code"]], body)

    def _log_lookup(self, sandbox: Sandbox, answer: str) -> None:
        with sandbox.lock:
            sandbox.lookups.append({"path": self.path, "answer": answer, "finished": time.time()})

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, text in (headers or {}).items():
            self.send_header(name, text)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default; never logs headers
        if self.server.verbose:
            super().log_message(format, *args)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:8080` -> `::1`, `localhost:80` -> `localhost`."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else ""
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


def _names_loopback(name: str) -> bool:
    return name.lower().rstrip(".") == "localhost" or _is_loopback(name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox, verbose: bool = False):
        self.sandbox = sandbox
        self.verbose = verbose
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer (killed, timed out) is normal here, not a traceback."""
        if isinstance(sys.exception(), ConnectionError):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(
    sandbox: Sandbox, host: str = "127.0.0.1", port: int = 8080, verbose: bool = False
) -> _Server:
    return _Server((host, port), sandbox, verbose)


def serve_in_thread(sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> _Server:
    """Start a sandbox on a free port in a daemon thread (for tests and benchmarks); `.shutdown()` it."""
    server = make_server(sandbox, host, port)
    # A short poll keeps shutdown() quick (the default waits up to half a second).
    threading.Thread(target=server.serve_forever, args=(0.02,), name="sandbox", daemon=True).start()
    return server
