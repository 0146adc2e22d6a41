"""Pacing requests to Kaleyra: the --max-rps ceiling, and an adaptive rate per account that follows 429s.

Kaleyra documents no rate limit, so the client learns one. The model is AWS SDKs' "adaptive" retry mode
(botocore/retries/adaptive.py, bucket.py, throttling.py): requests to an account are spaced by a rate
that nothing limits until the server first throttles; from then on the rate backs off multiplicatively
on each throttle and recovers along a CUBIC curve on success. Every worker sending to the account
shares it, so one 429 slows them all. A `Retry-After` pauses the whole account.

What differs from botocore, and why (see README, "Throttling"):
- One cut per round: a 429 to a request sent before the last cut (or among the first three after it,
  while the server has no spare capacity yet) says nothing new, so it does not cut again; 8 workers'
  in-flight 429s are one event, as in TCP.
- CUBIC's clock starts when a pause ends: the rate must not regrow while nothing is sent.
- A 429 with Retry-After costs the account a pause, so probing is made rare where it is that costly:
  the first such 429 restarts from what the server accepted in the last second (a server's burst
  hides its rate, so 70% of what was sent can still be far too fast); later ones resume at the cut
  rate and hold it for ten pauses' worth before probing higher.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

BETA = 0.7  # CUBIC's multiplicative decrease (botocore and RFC 8312 agree)
RETRY_AFTER_BETA = 0.5  # the decrease for a 429 with Retry-After: TCP's after a timeout
SCALE = 0.4  # CUBIC's C: how fast the rate grows back, in requests/s per s^3
MIN_RATE = 0.5  # requests/s; botocore's floor
WINDOW_S = 1.0  # how far back sent and accepted rates are measured
SETTLE_REQUESTS = 3  # requests sent at a new rate whose throttles still count as the old round
HOLD_PAUSES = 10  # after a Retry-After, hold the rate this many pauses' worth before probing higher

# Waits for `seconds`; returns True when the run was asked to stop meanwhile.
Wait = Callable[[float], bool]


@dataclass(frozen=True)
class RateChange:
    """One change of an account's pace, for --verbose and the end-of-run summary."""

    at: float  # seconds since the client started
    reason: str  # "throttled", "Retry-After" or "recovered"
    before: float | None  # requests/s; None: no limit
    after: float | None
    pause_s: float = 0.0


class AdaptiveRate:
    """The shared pace of every request to one account; thread-safe, with an injectable clock."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[RateChange], None] | None = None,
    ):
        self.clock = clock
        self.on_change = on_change
        self.lock = threading.Lock()
        self.started_at = clock()
        self.limited = False  # no limit until the first throttle: no cost when there is none
        self.rate = math.inf
        self.paused_until = -math.inf
        self.next_slot = -math.inf
        self.settled_at = -math.inf  # throttles of requests started before this are old news
        self.sent_since_cut = 0
        # CUBIC: rate(t) = peak + SCALE * (t - k)^3, t measured from `epoch`, flat for `hold` at the peak.
        self.peak = 0.0
        self.k = 0.0
        self.epoch = 0.0
        self.hold = 0.0
        self.starts: deque[float] = deque()  # request starts in the last WINDOW_S
        self.accepts: deque[float] = deque()  # successes in the last WINDOW_S
        self.sending_since: float | None = None  # the first start since the account was last paused
        self.throttled = 0
        self.pauses = 0
        self.paused_s = 0.0
        self.slowest: float | None = None
        self.limited_since: float | None = None  # the first throttle
        self.accepted_since_limited = 0
        self.last_accepted = -math.inf
        self.logged_rate: float | None = None

    # --- workers ---------------------------------------------------------------------------------

    def acquire(self, wait: Wait) -> bool:
        """Block until the caller may start a request; False if the run was stopped meanwhile."""
        while True:
            delay = self.try_start()
            if delay <= 0:
                return True
            if wait(delay):
                return False

    def try_start(self) -> float:
        """Start a request now if the pace allows it (0.0), else the seconds to wait before asking again.

        Nothing is booked ahead: a worker that waits asks again, so it sees a rate that changed while
        it waited (a pause, a cut, a recovery) and waiting workers never queue at an outdated pace.
        """
        with self.lock:
            now = self.clock()
            if not self.limited and self.paused_until <= now:
                self._started(now)
                return 0.0
            slot = max(self.next_slot, self.paused_until)
            if slot > now:
                return slot - now
            self.next_slot = max(now, self.next_slot) + (1 / self.rate if self.limited else 0.0)
            self._started(now)
            return 0.0

    def succeeded(self) -> None:
        with self.lock:
            now = self.clock()
            self._remember(self.accepts, now)
            if not self.limited:
                return
            self.accepted_since_limited += 1
            self.last_accepted = now
            elapsed = max(0.0, now - self.epoch)
            if elapsed > self.k:  # past the peak: hold it a while before probing higher
                elapsed = max(self.k, elapsed - self.hold)
            self.rate = max(MIN_RATE, self.peak + SCALE * (elapsed - self.k) ** 3)
            if self.logged_rate is not None and self.rate >= self.logged_rate * 1.25:
                self._log("recovered", self.logged_rate, self.rate)

    def throttled_at(self, started: float, retry_after: float | None) -> float:
        """A request started at `started` (clock time) was throttled; returns when the account may send."""
        with self.lock:
            now = self.clock()
            self.throttled += 1
            sent = self._sent_rate(now)  # before a pause starts a new sending period
            if retry_after is not None and now + retry_after > self.paused_until:
                new_pause = self.paused_until <= now
                self.paused_s += retry_after if new_pause else now + retry_after - self.paused_until
                self.paused_until = now + retry_after
                self.sending_since = None  # what was sent before a pause is not today's rate
                self.starts.clear()
                if self.limited:  # CUBIC's clock starts once the pause is over
                    self.epoch = max(self.epoch, self.paused_until)
                if new_pause:
                    self.pauses += 1
                    self._log("Retry-After", self.current(), self.current(), pause_s=retry_after)
            if started >= self.settled_at:  # sent once the current rate took hold: this throttle is news
                self._cut(now, sent, paused=retry_after is not None)
            return max(self.paused_until, now)

    def current(self) -> float | None:
        return self.rate if self.limited else None

    def sustained(self) -> float | None:
        """Successes per second since the first throttle, pauses included: the pace the account really
        kept (the current rate may be mid-probe); None before a throttle or a success after it."""
        with self.lock:
            if self.limited_since is None or self.last_accepted <= self.limited_since:
                return None
            return self.accepted_since_limited / (self.last_accepted - self.limited_since)

    # --- internals ---------------------------------------------------------------------------------

    def _cut(self, now: float, sent: float, paused: bool) -> None:
        # The rate that was too fast: before any limit, what was sent; after, the limit (but no more than
        # twice what was really sent: a limit the workers never reached is no evidence, as in botocore).
        too_fast = max(MIN_RATE, min(self.rate, 2 * sent) if self.limited else sent)
        if not paused:
            resume, self.peak, self.hold = BETA * too_fast, too_fast, 0.0
        elif not self.limited:
            # Leaving the unlimited start: the server's burst hid its rate, so what was sent says little;
            # restart from what it accepted in the last second and climb back towards the rate that was
            # throttled (the climb is fast at first: CUBIC's concave half).
            resume, self.peak, self.hold = len(self.accepts) / WINDOW_S, too_fast, 0.0
        else:
            # Each 429 with Retry-After costs a pause, so cut as TCP does after a timeout (halve) and
            # hold that rate for HOLD_PAUSES pauses' worth before probing higher.
            resume = RETRY_AFTER_BETA * too_fast
            self.peak, self.hold = resume, HOLD_PAUSES * (self.paused_until - now)
        resume = max(MIN_RATE, resume)
        self.k = (max(0.0, self.peak - resume) / SCALE) ** (1 / 3)
        before = self.current()
        if self.limited_since is None:
            self.limited_since = now
        self.rate, self.limited = resume, True
        self.slowest = resume if self.slowest is None else min(self.slowest, resume)
        self.epoch = max(now, self.paused_until)  # CUBIC's clock starts once any pause is over
        # A server that just turned requests away has no spare capacity left: the first few requests at
        # the new rate may still be throttled (by jitter alone) though the rate is right. They belong
        # to this round; the next ones' throttles are news (see _started).
        self.settled_at, self.sent_since_cut = math.inf, 0
        self.next_slot = max(now, self.paused_until)
        self._log("throttled", before, resume)

    def _started(self, now: float) -> None:
        if self.sending_since is None:
            self.sending_since = now
        if self.settled_at == math.inf:
            self.sent_since_cut += 1
            if self.sent_since_cut > SETTLE_REQUESTS:
                self.settled_at = now
        self._remember(self.starts, now)

    def _remember(self, times: deque[float], now: float) -> None:
        times.append(now)
        while times[0] <= now - WINDOW_S:
            times.popleft()

    def _sent_rate(self, now: float) -> float:
        """Requests started per second over the last WINDOW_S of sending (not counting a pause)."""
        while self.starts and self.starts[0] <= now - WINDOW_S:
            self.starts.popleft()
        since = self.sending_since if self.sending_since is not None else now
        span = min(WINDOW_S, now - since)
        return len(self.starts) / span if span > 0.001 else len(self.starts) / WINDOW_S

    def _log(self, reason: str, before: float | None, after: float | None, pause_s: float = 0.0) -> None:
        self.logged_rate = after
        if self.on_change is not None:
            self.on_change(RateChange(self.clock() - self.started_at, reason, before, after, pause_s))


class Ceiling:
    """--max-rps: at most `rate` request starts per second across every account, evenly spaced."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / rate if rate else 0.0
        self.clock = clock
        self.next_slot = -math.inf
        self.lock = threading.Lock()

    def acquire(self, wait: Wait) -> bool:
        if not self.interval:
            return True
        with self.lock:
            now = self.clock()
            slot = max(now, self.next_slot)
            self.next_slot = slot + self.interval
        return slot <= now or not wait(slot - now)
