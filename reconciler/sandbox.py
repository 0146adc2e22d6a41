"""A local Kaleyra emulator: the update endpoint with the API reference's rules, codes and bodies.

It answers `PUT /v2/<sid>/whatsapp/<waba_id>/number/update` like Kaleyra does, serves what it holds at
`GET /_sandbox/numbers` (and the requests it received at `GET /_sandbox/requests`, keys left out), and
can be slow (`latency_ms`) or flaky (`fail_rate`, answered as WA500, 429 with Retry-After, or a dropped
connection) so users and tests can rehearse bad days.
"""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .config import Config
from .errors import ReconcilerError
from .profiles import Profile
from .schema import CATEGORIES, E164, EMAIL, FIELDS
from .state import atomic_write

ROUTE = re.compile(r"^/v2/(?P<sid>[^/]+)/whatsapp/(?P<waba_id>[^/]+)/number/update/?$")
FAULTS = ("wa500", "429", "drop")
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
# HTTP statuses are not in the reference; these are the sandbox's choice (clients go by `code`).
STATUS = {"WA200": 200, "RBC001": 401, "WA401": 401, "E112": 404, "WA400": 400, "WA500": 500}


def wa400(message: str) -> dict[str, Any]:
    return {"code": "WA400", "message": message, "data": {}, "error": {"error": message}}


@dataclass
class SandboxAccount:
    sid: str
    waba_id: str
    numbers: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Sandbox:
    """What the emulator holds and how it behaves; thread-safe."""

    accounts: list[SandboxAccount]
    api_key: str | None = None
    latency_ms: float = 0
    fail_rate: float = 0
    faults: tuple[str, ...] = ("wa500",)
    retry_after_s: int = 1
    data_file: Path | None = None
    seed: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.random = random.Random(self.seed)

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
        if not re.match(E164, phone_number):
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
    if body.get("email") and not re.match(EMAIL, body["email"]):
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

    def do_PUT(self) -> None:
        sandbox = self.server.sandbox
        started = time.time()
        expected = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(expected)
        if len(raw) < expected:  # the client went away mid-request: nothing to answer or apply
            self.close_connection = True
            return
        if sandbox.latency_ms:
            time.sleep(sandbox.latency_ms / 1000)
        route = ROUTE.match(self.path)
        if route is None:
            self._send(404, {"code": "404", "message": "Not Found", "data": {}, "error": {}})
            return
        fault = sandbox.fault()
        if fault:
            sandbox.log_request(self.path, raw, fault, started)
        if fault == "drop":
            self.close_connection = True  # no response at all: the client sees the connection close
            return
        if fault == "429":
            self._send(429, {"message": "Too Many Requests"}, {"Retry-After": str(sandbox.retry_after_s)})
            return
        if fault == "wa500":
            self._send(500, WA500)
            return
        api_key, content_type = self.headers.get("api-key"), self.headers.get("Content-Type", "")
        body = sandbox.update(route["sid"], route["waba_id"], api_key, content_type, raw)
        sandbox.log_request(self.path, raw, body["code"], started)
        self._send(STATUS[body["code"]], body)

    def do_GET(self) -> None:
        sandbox = self.server.sandbox
        if self.path.rstrip("/") == "/_sandbox/numbers":
            self._send(200, sandbox.snapshot())
        elif self.path.rstrip("/") == "/_sandbox/requests":
            with sandbox.lock:
                self._send(200, {"requests": list(sandbox.requests)})
        else:
            self._send(404, {"code": "404", "message": "Not Found", "data": {}, "error": {}})

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
