"""The Kaleyra HTTP client: pods, the update request, error codes, retries and rate limiting.

One `KaleyraClient` is shared by every worker thread (httpx.Client is thread-safe and pools
connections). It never puts the API key anywhere but the `api-key` request header.
"""

from __future__ import annotations

import dataclasses
import email.utils
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

POD_HOSTS = {
    "in": "api.in.kaleyra.io",
    "ap": "api.ap.kaleyra.io",
    "sg": "api.ap.kaleyra.io",  # the reference calls it the SG pod; its host is api.ap
    "eu": "api.eu.kaleyra.io",
    "na": "api.na.kaleyra.io",
}
SUCCESS = "WA200"
# Codes that mean "the request is wrong": sending it again cannot help.
NEVER_RETRY = frozenset({"WA400", "WA401", "RBC001", "E112"})
# Codes that condemn every request of the account (its key, SID or WABA), not just one number.
ACCOUNT_FATAL = frozenset({"RBC001", "WA401"})
HINTS = {
    "RBC001": "check the account's sid and the API key in its environment variable",
    "WA401": "the account's waba_id is not on this Kaleyra account",
    "E112": "this phone number is not registered on the account's WABA",
}


def pod_base_url(pod: str) -> str:
    return f"https://{POD_HOSTS[pod]}"


@dataclass(frozen=True)
class Target:
    """Where one account's updates go."""

    base_url: str
    sid: str
    waba_id: str

    @property
    def url(self) -> str:
        return f"{self.base_url}/v2/{self.sid}/whatsapp/{self.waba_id}/number/update"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    deadline_s: float = 120.0
    timeout_s: float = 30.0

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter (uniform in [0, base * 2^(attempt-1)], capped), never less than Retry-After."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        delay = random.uniform(0, ceiling)
        return max(delay, retry_after or 0.0)


class KaleyraError(Exception):
    """An update that did not succeed: Kaleyra's code and message, and whether a retry could help."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ):
        self.code = code
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = 0
        super().__init__(self.describe())

    def describe(self) -> str:
        return f"{self.code}: {self.detail()}"

    def detail(self) -> str:
        """The message with its hint and attempt count, without the code (shown beside it)."""
        text = self.message
        if self.code in HINTS:
            text += f" ({HINTS[self.code]})"
        if self.attempts > 1:
            text += f" [after {self.attempts} attempts]"
        return text


@dataclass(frozen=True)
class Success:
    code: str
    message: str
    attempts: int
    http_status: int = 200


class RateLimiter:
    """At most `rate` request starts per second across all threads (evenly spaced)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self.next_slot = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            slot = max(now, self.next_slot)
            self.next_slot = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class KaleyraClient:
    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        max_connections: int = 8,
        max_rps: float | None = None,
        log: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        import httpx  # deferred: plan, validate and drift never talk to Kaleyra, and start faster without it

        self.httpx = httpx
        self.policy = policy or RetryPolicy()
        self.log = log
        self.sleep = sleep
        self.limiter = RateLimiter(max_rps)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.http = httpx.Client(
            timeout=httpx.Timeout(self.policy.timeout_s),
            limits=limits,
            transport=transport,
            headers={"Content-Type": "application/json", "User-Agent": "kaleyra-reconciler"},
        )

    def __enter__(self) -> KaleyraClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def update(self, target: Target, api_key: str, phone_number: str, fields: dict[str, str]) -> Success:
        """PUT one number's fields, retrying what can be retried; raise KaleyraError otherwise."""
        body = {"phone_number": phone_number, **fields}
        deadline = time.monotonic() + self.policy.deadline_s
        attempt = 0
        while True:
            attempt += 1
            self.limiter.wait()
            started = time.monotonic()
            try:
                response = self.http.put(target.url, json=body, headers={"api-key": api_key})
                outcome = _interpret(response)
            except self.httpx.TimeoutException as error:
                outcome = KaleyraError(
                    "TIMEOUT", f"no answer in time ({_cause(error, api_key)})", retryable=True
                )
            except self.httpx.TransportError as error:
                outcome = KaleyraError("NETWORK", f"network error ({_cause(error, api_key)})", retryable=True)
            self._log(target, phone_number, outcome, started, attempt)
            if isinstance(outcome, Success):
                return dataclasses.replace(outcome, attempts=attempt)
            outcome.attempts = attempt
            if not outcome.retryable or attempt >= self.policy.attempts:
                raise outcome
            delay = self.policy.backoff(attempt, outcome.retry_after)
            if time.monotonic() + delay > deadline:
                outcome.message += f"; gave up at the {self.policy.deadline_s:g}s deadline"
                raise outcome
            self.sleep(delay)

    def _log(
        self, target: Target, phone_number: str, outcome: Success | KaleyraError, started: float, attempt: int
    ) -> None:
        if self.log is None:
            return
        elapsed_ms = (time.monotonic() - started) * 1000
        status = outcome.status if isinstance(outcome, KaleyraError) else outcome.http_status
        self.log(
            f"PUT {target.url} {phone_number} -> {status or '-'} {outcome.code} {elapsed_ms:.0f}ms "
            f"attempt {attempt}/{self.policy.attempts} api-key=[redacted]"
        )


def _cause(error: Exception, api_key: str) -> str:
    """The library's own words (they say what went wrong), with the key cut out in case they quote it."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text.replace(api_key, "[redacted]") if api_key else text


def _interpret(response: httpx.Response) -> Success | KaleyraError:
    status = response.status_code
    payload = _json_object(response)
    code = str(payload.get("code") or f"HTTP{status}")
    message = str(payload.get("message") or response.reason_phrase or "no message").strip()
    if 200 <= status < 300 and code == SUCCESS:
        return Success(code, message, 0, status)
    if status == 429:
        message = f"rate limited by Kaleyra (HTTP 429): {message}"
    elif not payload:
        message = f"unexpected response (HTTP {status}, not a Kaleyra JSON body)"
    retryable = code not in NEVER_RETRY and (code == "WA500" or status >= 500 or status == 429)
    retry_after = _retry_after(response.headers.get("Retry-After"))
    return KaleyraError(code, message, status=status, retryable=retryable, retry_after=retry_after)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date; anything unreadable is ignored."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
