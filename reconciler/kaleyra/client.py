"""The Kaleyra HTTP client: pods, requests, error codes, retries, pacing and whole-request timeouts.

One `KaleyraClient` is shared by every worker thread (httpx.Client is thread-safe and pools
connections). It never puts the API key anywhere but the `api-key` request header. Every request is
bounded as a whole by `retry.timeout_s` and reads at most MAX_BODY_BYTES of answer; every account is
paced by the rate its 429s taught (see `ratelimit`); a `stop` event ends retries and waits at once.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import math
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..secrets import redact
from ..targets import RetryPolicy, Target
from .codes import BUSY_CODES, HINTS, NEVER_RETRY, NOT_SENT, PROFILE_FETCHED, SUCCESS
from .ratelimit import AdaptiveRate, Ceiling, RateChange

if TYPE_CHECKING:
    import httpx

MAX_BODY_BYTES = 1 << 20  # no Kaleyra answer is near this; a bigger one is cut and reported
MAX_MESSAGE_CHARS = 500  # of a server's message echoed in reports
# The longest Retry-After honoured: any longer (an HTTP date in year 9999, 99999999999 seconds) is this,
# and the numbers' deadlines (retry.deadline_s) cut it shorter still.
RETRY_AFTER_CAP_S = 3600.0
# A wait for an account's pace longer than this is handed back to the caller when it has other work.
HAND_BACK_AFTER_S = 0.05
PAUSED = "PAUSED"  # not sent: the account is paused (Retry-After) past the number's deadline


class KaleyraError(Exception):
    """A request that did not succeed: Kaleyra's code and message, and whether a retry could help."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        throttled: bool = False,
    ):
        self.code = code
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.throttled = throttled  # a 429 (or a busy code): the account is paced, not this number
        self.attempts = 0
        self.throttled_attempts = 0
        super().__init__(self.describe())

    def describe(self) -> str:
        return f"{self.code}: {self.detail()}"

    def detail(self) -> str:
        """The message with its hint and attempt count, without the code (shown beside it)."""
        text = self.message
        if self.code in HINTS:
            text += f" ({HINTS[self.code]})"
        if self.attempts > 1:
            throttled = f", {self.throttled_attempts} throttled" if self.throttled_attempts else ""
            text += f" [after {self.attempts} attempts{throttled}]"
        return text


@dataclass
class Progress:
    """Where one logical request stands: its deadline and the attempts made, so a request handed back
    (AccountBusy) goes on where it stopped when it is taken up again."""

    deadline: float
    attempts: int = 0
    errors: int = 0
    throttled: int = 0
    last: KaleyraError | None = None


class AccountBusy(Exception):
    """Raised instead of waiting for an account's pace (a Retry-After pause) when the caller said it
    has other work: send something else, and take this request up again with `progress`."""

    def __init__(self, progress: Progress):
        self.progress = progress
        super().__init__("the account is paused")


@dataclass(frozen=True)
class Success:
    code: str
    message: str
    attempts: int
    http_status: int = 200


@dataclass(frozen=True)
class CallbackProfile:
    """A callback profile as Kaleyra holds it; status 1 active, 2 auto-disabled, 3 disabled."""

    profile_id: str
    status: int | None
    title: str = ""
    url: str = ""

    @property
    def active(self) -> bool:
        return self.status == 1

    @property
    def status_name(self) -> str:
        names = {1: "active", 2: "auto-disabled", 3: "disabled"}
        return names.get(self.status or 0, f"of unknown status {self.status!r}")


@dataclass(frozen=True)
class AccountThrottling:
    """How Kaleyra throttled one account during a run, for the end-of-run summary and JSON."""

    base_url: str
    sid: str
    throttled: int
    paused: int
    paused_s: float  # the time really spent paused, not what Retry-After asked
    settled_rps: float | None  # successes per second since the first throttle, pauses included (None:
    # too little to measure)
    slowest_rps: float | None  # the lowest rate the account was cut to

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        text = f"{self.sid}: throttled {self.throttled} time{'s' if self.throttled != 1 else ''}"
        if self.settled_rps is not None:
            text += f"; settled at {_amount(self.settled_rps)} requests/s"
            if self.slowest_rps is not None and self.slowest_rps < self.settled_rps * 0.9:
                text += f" (slowest {_amount(self.slowest_rps)}/s)"
        if self.paused:
            text += f"; paused {self.paused} time{'s' if self.paused != 1 else ''} for Retry-After"
            text += f" ({_amount(self.paused_s)} s)"
        return text


def _seconds_left(value: float) -> str:
    """Seconds left before a deadline, rounded down (59.98 is 59.9, not a misleading 60)."""
    return f"{math.floor(max(0.0, value) * 10) / 10:g}"


def _amount(value: float) -> str:
    """A rate or a duration as people read it: one decimal below 10 (0.5, not 0), whole above."""
    return f"{value:.1f}" if value < 9.95 else f"{value:.0f}"


def throttling_summary(accounts: list[AccountThrottling]) -> str | None:
    """How Kaleyra slowed a run down, in one line; None when it did not."""
    if not accounts:
        return None
    return "Kaleyra slowed this run down: " + "; ".join(account.describe() for account in accounts) + "."


class KaleyraClient:
    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        max_connections: int = 8,
        max_rps: float | None = None,
        log: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
    ):
        """`stop`, once set, lets no new attempt and no wait start (waits wake at once). Tests replace
        real time with `clock` and waiting with `sleep` (which must then advance that clock)."""
        # Deferred: plan, validate and drift never talk to Kaleyra, and start faster without it.
        # httpx's package imports its own command line, and so rich and pygments when both are
        # installed (60 ms of every apply's start-up); the reconciler never runs it.
        sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]
        import httpx

        self.httpx = httpx
        self.policy = policy or RetryPolicy()
        self.log = log
        self.stop = stop if stop is not None else threading.Event()
        self.clock = clock
        self._sleep = sleep
        self.ceiling = Ceiling(max_rps, clock)
        self.paces: dict[tuple[str, str], AdaptiveRate] = {}
        self.paces_lock = threading.Lock()
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.http = httpx.Client(
            timeout=httpx.Timeout(self.policy.timeout_s),
            limits=limits,
            transport=transport,
            headers={
                "Content-Type": "application/json",
                "User-Agent": "kaleyra-reconciler",
                # Compressed answers would have to be inflated to be read: a tiny one can inflate to
                # gigabytes. Ask for none (and inflate, bounded, any that comes anyway).
                "Accept-Encoding": "identity",
            },
        )
        if transport is None:
            _bound_by_deadline(self.http)

    def __enter__(self) -> KaleyraClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- the two requests ------------------------------------------------------------------------

    def update(
        self,
        target: Target,
        api_key: str,
        phone_number: str,
        fields: dict[str, str],
        *,
        progress: Progress | None = None,
        hand_back: Callable[[], bool] | None = None,
    ) -> Success:
        """PUT one number's fields, retrying what can be retried; raise KaleyraError otherwise.

        With `hand_back`, a wait for the account's pace (a Retry-After pause) raises AccountBusy
        instead whenever `hand_back()` says the caller has other work; `progress` resumes it."""
        body = json.dumps({"phone_number": phone_number, **fields}).encode()
        success, _ = self._call(
            "PUT", target.url, target, api_key, body, phone_number, SUCCESS, progress, hand_back
        )
        return success

    def pause_left(self, target: Target) -> float:
        """Seconds until the account of `target` may send again (0.0: now)."""
        with self.paces_lock:
            pace = self.paces.get(target.pace_key)
        return 0.0 if pace is None else pace.pause_left()

    def new_progress(self) -> Progress:
        """A request not started yet: its deadline runs from now."""
        return Progress(self.clock() + self.policy.deadline_s)

    def callback_profile(self, target: Target, api_key: str, profile_id: str) -> CallbackProfile:
        """GET a callback profile by id; an unknown id raises KaleyraError with code RBC302."""
        url = target.callback_profile_url(profile_id)
        _, payload = self._call("GET", url, target, api_key, None, profile_id, PROFILE_FETCHED)
        data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        status = data.get("status")
        answered = data.get("profile_id")
        if answered is not None and str(answered) != profile_id:
            # A proxy, a cache or a bug answered for another profile: that says nothing about this one.
            raise KaleyraError(
                "WRONG_PROFILE", _clip(f"asked for profile {profile_id}, the answer is for {answered}")
            )
        return CallbackProfile(
            profile_id=profile_id,
            status=status if type(status) is int else None,  # true is no status (bool is an int in Python)
            title=_clip(str(data.get("title") or "")),
            url=_clip(str(data.get("url") or "")),
        )

    # --- what the run's throttling looked like ----------------------------------------------------

    def throttling(self) -> list[AccountThrottling]:
        """Every account Kaleyra throttled in this run (none: an empty list)."""
        with self.paces_lock:
            paces = dict(self.paces)
        report = []
        for (base_url, sid), pace in sorted(paces.items()):
            if not pace.throttled:
                continue
            settled = pace.sustained()
            numbers = (pace.throttled, pace.pauses_taken, pace.paused_s, settled, pace.slowest)
            report.append(AccountThrottling(base_url, sid, *numbers))
        return report

    def throttling_summary(self) -> str | None:
        """One line for the end of a run ("throttled 42 times; settled at 48 requests/s"), or None."""
        return throttling_summary(self.throttling())

    # --- internals ---------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        url: str,
        target: Target,
        api_key: str,
        body: bytes | None,
        label: str,
        ok: str,
        progress: Progress | None = None,
        hand_back: Callable[[], bool] | None = None,
    ) -> tuple[Success, dict[str, Any]]:
        """One logical request: paced, retried as the policy allows, bounded by the deadline (which
        also bounds the wait before the first attempt)."""
        progress = progress or self.new_progress()
        deadline = progress.deadline
        pace = self._pace(target)
        attempts, errors, throttled, last = (
            progress.attempts,
            progress.errors,
            progress.throttled,
            progress.last,
        )
        past_deadline = False

        def wait(seconds: float) -> bool:
            """A wait for the account's pace; True: give up (stopped, or it would end past the deadline)."""
            nonlocal past_deadline
            if self.clock() + seconds > deadline:
                past_deadline = True
                return True
            if hand_back is not None and seconds > HAND_BACK_AFTER_S and hand_back():
                raise AccountBusy(Progress(deadline, attempts, errors, throttled, last))
            return self._wait(seconds)

        def wait_for_ceiling(seconds: float) -> bool:
            return self._wait(seconds)

        while True:
            if self.stop.is_set() or not pace.acquire(wait) or not self.ceiling.acquire(wait_for_ceiling):
                if self.stop.is_set() or not past_deadline:
                    raise _interrupted(last)
                left, remaining = pace.pause_left(), _seconds_left(deadline - self.clock())
                if last is None:
                    raise KaleyraError(
                        PAUSED,
                        f"not sent: Kaleyra paused this account (Retry-After) for {left:.0f} s more, "
                        f"beyond this number's remaining deadline ({remaining} s; retry.deadline_s)",
                        retryable=True,
                    )
                if left > 0:
                    last.message += (
                        f"; the account's Retry-After pause ({left:.0f} s more) is beyond this number's "
                        f"remaining deadline ({remaining} s)"
                    )
                else:
                    last.message += f"; gave up at the {self.policy.deadline_s:g}s deadline"
                raise last
            attempts += 1
            started = self.clock()
            outcome, payload = self._attempt(method, url, api_key, body, ok)
            self._log_request(method, url, label, outcome, started, attempts, throttled)
            if isinstance(outcome, Success):
                pace.succeeded(started)
                return dataclasses.replace(outcome, attempts=attempts), payload
            outcome.attempts, outcome.throttled_attempts, last = attempts, throttled, outcome
            if outcome.throttled:
                # Not this number's fault: the account's pace (and pause) decides when it goes again,
                # and only the deadline, not the error budget, limits how long it keeps trying.
                throttled += 1
                outcome.throttled_attempts = throttled
                delay = max(0.0, pace.throttled_at(started, outcome.retry_after) - self.clock())
            else:
                if outcome.status is not None:
                    pace.succeeded(started)  # the server answered: not a sign of throttling
                errors += 1
                if not outcome.retryable or errors >= self.policy.attempts:
                    raise outcome
                delay = self.policy.backoff(errors, outcome.retry_after)
            if self.clock() + delay > deadline:
                remaining = _seconds_left(deadline - self.clock())
                if outcome.retry_after is not None and self.clock() + outcome.retry_after > deadline:
                    # The server's own wait is what does not fit: say so, not that time ran out.
                    outcome.message += (
                        f"; Retry-After {outcome.retry_after:g} s is beyond this number's remaining "
                        f"deadline ({remaining} s; retry.deadline_s)"
                    )
                elif outcome.throttled and pace.pause_left() > 0:
                    outcome.message += (
                        f"; the account's Retry-After pause ({pace.pause_left():.0f} s more) is beyond "
                        f"this number's remaining deadline ({remaining} s)"
                    )
                else:
                    outcome.message += f"; gave up at the {self.policy.deadline_s:g}s deadline"
                raise outcome
            if not outcome.throttled and delay > 0 and self._wait(delay):
                raise _interrupted(outcome)

    def _attempt(
        self, method: str, url: str, api_key: str, body: bytes | None, ok: str
    ) -> tuple[Success | KaleyraError, dict[str, Any]]:
        timeout = self.policy.timeout_s
        try:
            status, reason, headers, raw = self._exchange(method, url, api_key, body)
        except _TooLarge as error:
            return KaleyraError("TOO_LARGE", str(error), status=error.status), {}
        except self.httpx.TimeoutException as error:
            message = f"no complete answer within retry.timeout_s ({timeout:g}s; {_cause(error, api_key)})"
            return KaleyraError("TIMEOUT", message, retryable=True), {}
        except self.httpx.TransportError as error:
            return KaleyraError("NETWORK", f"network error ({_cause(error, api_key)})", retryable=True), {}
        return _interpret(status, reason, headers, raw, ok)

    def _exchange(
        self, method: str, url: str, api_key: str, body: bytes | None
    ) -> tuple[int, str, httpx.Headers, bytes]:
        """Send one request and read its answer, all of it within timeout_s and at most MAX_BODY_BYTES."""
        _deadline.at = time.monotonic() + self.policy.timeout_s
        try:
            with self.http.stream(method, url, content=body, headers={"api-key": api_key}) as response:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                    raise _TooLarge(response.status_code, f"{int(declared):,} bytes announced")
                raw = bytearray()
                for chunk in response.iter_raw():
                    raw += chunk
                    if len(raw) > MAX_BODY_BYTES:  # stop reading: the rest never reaches memory
                        raise _TooLarge(response.status_code, "more than that sent")
                content = _inflated(bytes(raw), response.headers.get("Content-Encoding", ""))
                return response.status_code, response.reason_phrase, response.headers, content
        finally:
            _deadline.at = None

    def _pace(self, target: Target) -> AdaptiveRate:
        with self.paces_lock:
            pace = self.paces.get(target.pace_key)
            if pace is None:
                on_change = None if self.log is None else self._rate_logger(target)
                pace = self.paces[target.pace_key] = AdaptiveRate(self.clock, on_change)
            return pace

    def _wait(self, seconds: float) -> bool:
        """Wait, waking early if the run is stopped; True when it was."""
        if self._sleep is None:
            return self.stop.wait(seconds)
        self._sleep(seconds)
        return self.stop.is_set()

    def _rate_logger(self, target: Target) -> Callable[[RateChange], None]:
        def log(change: RateChange) -> None:
            if change.reason == "Retry-After":
                text = f"paused {change.pause_s:g}s (Retry-After)"
            else:
                text = f"{change.reason}: {_rps(change.before)} -> {_rps(change.after)}"
            if self.log is not None:
                self.log(f"pace {target.sid} at {target.base_url} +{change.at:.2f}s: {text}")

        return log

    def _log_request(
        self,
        method: str,
        url: str,
        label: str,
        outcome: Success | KaleyraError,
        started: float,
        attempt: int,
        throttled: int,
    ) -> None:
        if self.log is None:
            return
        elapsed_ms = (self.clock() - started) * 1000
        status = outcome.status if isinstance(outcome, KaleyraError) else outcome.http_status
        count = f"attempt {attempt}/{self.policy.attempts}"
        if throttled:
            count += f" ({throttled} throttled, not counted)"
        self.log(
            f"{method} {url} {label} -> {status or '-'} {outcome.code} {elapsed_ms:.0f}ms "
            f"{count} api-key=[redacted]"
        )


class _TooLarge(Exception):
    def __init__(self, status: int, detail: str):
        self.status = status
        super().__init__(
            f"the answer (HTTP {status}) is larger than {MAX_BODY_BYTES:,} bytes ({detail}); "
            "it was cut there and not read"
        )


def _interrupted(last: KaleyraError | None) -> KaleyraError:
    if last is None:
        return KaleyraError(NOT_SENT, "not sent: the run was interrupted")
    last.message += "; not retried: the run was interrupted"
    return last


def _rps(rate: float | None) -> str:
    return "no limit" if rate is None else f"{rate:.1f} requests/s"


def _clip(text: str) -> str:
    """A server's text as we echo it: at most MAX_MESSAGE_CHARS, saying how much was cut. Keys are cut
    out first: clipping a message that echoes a key could leave half of it, which no later redaction
    would recognise."""
    text = redact(text)
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return f"{text[:MAX_MESSAGE_CHARS]}... ({len(text) - MAX_MESSAGE_CHARS:,} more characters cut)"


def _cause(error: Exception, api_key: str) -> str:
    """The library's own words (they say what went wrong), with the key cut out in case they quote it."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    text = text.replace(api_key, "[redacted]") if api_key else text
    return _clip(text)


def _inflated(raw: bytes, encoding: str) -> bytes:
    """The body without its Content-Encoding (we ask for none); never more than MAX_BODY_BYTES of it."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return b""  # unreadable: reported as "not a Kaleyra JSON body"
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, whichever it is
    try:
        content = inflater.decompress(raw, MAX_BODY_BYTES + 1)
    except zlib.error:
        return b""
    if len(content) > MAX_BODY_BYTES:
        raise _TooLarge(0, f"{encoding} inflating past it")
    return content


def _interpret(
    status: int, reason: str, headers: httpx.Headers, raw: bytes, ok: str
) -> tuple[Success | KaleyraError, dict[str, Any]]:
    payload = _json_object(raw)
    code = _clip(str(payload.get("code") or f"HTTP{status}"))
    message = _clip(str(payload.get("message") or reason or "no message").strip())
    if 200 <= status < 300 and code == ok:
        return Success(code, message, 0, status), payload
    throttled = status == 429 or code in BUSY_CODES
    if throttled:
        message = f"rate limited by Kaleyra (HTTP {status}): {message}"
    elif not payload:
        message = f"unexpected response (HTTP {status}, not a Kaleyra JSON body)"
    retryable = throttled or (code not in NEVER_RETRY and (code == "WA500" or status >= 500))
    retry_after = _retry_after(headers.get("Retry-After"))
    error = KaleyraError(
        code, message, status=status, retryable=retryable, retry_after=retry_after, throttled=throttled
    )
    return error, payload


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date; anything unreadable (or zero, or past) is
    ignored, and anything longer than RETRY_AFTER_CAP_S is that: no value overflows a wait."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # delay-seconds, however many digits (int() has a limit)
        return min(float(int(text[:15])) if len(text) <= 15 else RETRY_AFTER_CAP_S, RETRY_AFTER_CAP_S) or None
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(text).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError, AttributeError):
            return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(seconds, RETRY_AFTER_CAP_S)


class _Deadline(threading.local):
    at: float | None = None


_deadline = _Deadline()


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    at = _deadline.at
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("the request's total time (retry.timeout_s) ran out")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    """An httpcore network stream whose every operation ends by the current request's deadline."""

    def __init__(self, stream: Any, httpcore: Any):
        self.stream, self.httpcore = stream, httpcore

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, _bounded(timeout, self.httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, _bounded(timeout, self.httpcore.WriteTimeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(
        self, context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> Any:
        bounded = _bounded(timeout, self.httpcore.ConnectTimeout)
        return _DeadlineStream(self.stream.start_tls(context, server_hostname, bounded), self.httpcore)

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class _DeadlineBackend:
    """httpcore's network backend, handing out `_DeadlineStream`s."""

    def __init__(self, backend: Any, httpcore: Any):
        self.backend, self.httpcore = backend, httpcore

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, **options: Any) -> Any:
        bounded = _bounded(timeout, self.httpcore.ConnectTimeout)
        return _DeadlineStream(self.backend.connect_tcp(host, port, bounded, **options), self.httpcore)

    def connect_unix_socket(self, path: str, timeout: float | None = None, **options: Any) -> Any:
        bounded = _bounded(timeout, self.httpcore.ConnectTimeout)
        return _DeadlineStream(self.backend.connect_unix_socket(path, bounded, **options), self.httpcore)

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


def _bound_by_deadline(client: httpx.Client) -> None:
    """Give every transport of `client` (the default one and any proxy's) the deadline backend.

    httpx exposes no network backend option, so this reaches into its transports' httpcore pools;
    tests/test_kaleyra.py proves the bound against a real dripping server, so a change there fails CI.
    """
    import httpcore

    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is not None and not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend, httpcore)  # type: ignore[union-attr]
