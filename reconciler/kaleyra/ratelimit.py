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
- A 429 with Retry-After costs the account a whole pause (`Retry-After: 1` from a server allowing 50
  requests a second idles the 40 it would take beyond the burst it refills), so the client measures the
  limit rather than probing for it. It models the limit as a token bucket (a burst, refilled at a rate)
  and calls the sending between two pauses a round:
  - The first round, from the unlimited start, runs the bucket dry from full: what it got accepted is
    the burst (plus a round trip's refill). A server's burst hides its rate, so the account restarts
    low (twice what was accepted in the last second) and climbs back towards the rate that was
    throttled; as the pause refilled the burst, it first sends again the wave accepted at once.
  - Each later round is measured when its pause ends, once its answers are in, from the start times
    of the requests the server accepted (_measured). The account resumes at that rate, less half a
    request over the stretch measured, spends most of the refilled burst at once, and holds the pace
    for ten pauses' worth before probing higher. No halving: at a rate just measured, a cut would
    cost more than the pause it could save.
  - A round too short to measure halves the rate, as TCP does after a timeout, and climbs back towards
    the rate that was throttled without holding, so that the next round can be measured.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

BETA = 0.7  # CUBIC's multiplicative decrease (botocore and RFC 8312 agree)
RETRY_AFTER_BETA = 0.5  # the decrease after a Retry-After round too short to measure: TCP's after a timeout
SCALE = 0.4  # CUBIC's C: how fast the rate grows back, in requests/s per s^3
MIN_RATE = 0.5  # requests/s; botocore's floor
WINDOW_S = 1.0  # how far back sent and accepted rates are measured
SETTLE_REQUESTS = 3  # requests sent at a new rate whose throttles still count as the old round
TAKEN_MIN_S = 0.001  # a wait this long (or longer) in a pause, even if stopped, took the pause
HOLD_PAUSES = 10  # after a Retry-After, hold the rate this many pauses' worth before probing higher
RESTART_FACTOR = 2.0  # after the first pause, restart at this times what was accepted in the last second
MIN_EVIDENCE = 5  # accepted requests (beyond the burst) a stretch needs for its rate to count
SLACK = 0.5  # requests: a stretch's rate is counted this much short (short stretches are noisy)
BURST_SHARE = 0.8  # of the measured burst, the share spent at once when a pause ends
MAX_ROUND = 10_000  # accepted requests remembered per round (bounds the longest stretch measured)
# The sustained rate is reported only once measured over this long and this many successes: two
# successes a millisecond apart are not "1489 requests/s".
MEASURE_MIN_S = 0.5
MEASURE_MIN_REQUESTS = 5

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
        # Rounds: the sending between two Retry-After pauses. What they teach (see _measured): the
        # start times of the round's accepted requests, and what the first round (from the unlimited
        # start) got accepted before the server first ran dry, over how long: its burst.
        self.round_began = -math.inf
        self.round_accepted: list[float] = []  # sorted
        self.last_dry = -math.inf  # the last round's last accepted start: its bucket was empty then
        self.first_answer = math.inf  # when the round's first answer came
        self.first_wave = 0  # of the first round's requests, those accepted before any answer came
        self.burst: tuple[int, float] | None = None
        self.first_pause = False  # the current pause ended the first round
        self.pending: tuple[float | None, float, float] | None = None  # a cut to make when the pause ends
        self.credit = 0  # starts allowed at once when a pause ends: the burst the server refilled
        self.throttled = 0
        self.pauses = 0
        self.pause_spans: list[list[float]] = []  # [start, end] of each pause (an extension moves end)
        self.taken: set[int] = set()  # the pauses (indexes in pause_spans) a worker waited in
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
            with self.lock:
                pause = len(self.pause_spans) - 1 if self.paused_until > self.clock() else None
            before = self.clock()
            gave_up = wait(delay)
            # A pause counts as taken once a worker waits in it: fully, or stopped part-way (the clock
            # moved). A worker that gives up at once (the pause ends past its deadline) took none.
            if pause is not None and (not gave_up or self.clock() - before >= TAKEN_MIN_S):
                with self.lock:
                    self.taken.add(pause)
            if gave_up:
                return False

    def try_start(self) -> float:
        """Start a request now if the pace allows it (0.0), else the seconds to wait before asking again.

        Nothing is booked ahead: a worker that waits asks again, so it sees a rate that changed while
        it waited (a pause, a cut, a recovery) and waiting workers never queue at an outdated pace.
        """
        with self.lock:
            now = self.clock()
            if self.paused_until > now:
                return self.paused_until - now
            if self.sending_since is None:
                self._begin_round(now)
            if not self.limited or self.credit > 0:
                self.credit = max(0, self.credit - 1)
                self._started(now)
                return 0.0
            if self.next_slot > now:
                return self.next_slot - now
            self.next_slot = max(now, self.next_slot) + 1 / self.rate
            self._started(now)
            return 0.0

    def succeeded(self, started: float | None = None) -> None:
        """A request (started at `started`, clock time, when known) was answered without a throttle."""
        with self.lock:
            now = self.clock()
            self._remember(self.accepts, now)
            self.first_answer = min(self.first_answer, now)
            if started is not None and started >= self.round_began:
                bisect.insort(self.round_accepted, started)
                if len(self.round_accepted) > MAX_ROUND:
                    del self.round_accepted[: MAX_ROUND // 2]
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
            self.first_answer = min(self.first_answer, now)
            sent = self._sent_rate(now)  # before a pause starts a new sending period
            if retry_after is not None and now + retry_after > self.paused_until:
                new_pause = self.paused_until <= now
                if new_pause:
                    self.pause_spans.append([now, now + retry_after])
                else:
                    self.pause_spans[-1][1] = now + retry_after
                self.paused_until = now + retry_after
                self.sending_since = None  # what was sent before a pause is not today's rate
                self.starts.clear()
                if self.limited:  # CUBIC's clock starts once the pause is over
                    self.epoch = max(self.epoch, self.paused_until)
                if new_pause:
                    self.pauses += 1
                    self._log("Retry-After", self.current(), self.current(), pause_s=retry_after)
            if started >= self.settled_at:  # sent once the current rate took hold: this throttle is news
                self._cut(now, sent, retry_after)
            return max(self.paused_until, now)

    def current(self) -> float | None:
        return self.rate if self.limited else None

    def pause_left(self) -> float:
        """Seconds until the account's Retry-After pause ends (0.0: not paused)."""
        with self.lock:
            return max(0.0, self.paused_until - self.clock())

    @property
    def pauses_taken(self) -> int:
        """The Retry-After pauses a worker waited in (`pauses` counts those the server asked for)."""
        with self.lock:
            return len(self.taken)

    @property
    def paused_s(self) -> float:
        """Seconds the account has really been paused so far: the pauses taken, each cut at now (a run
        that ended, or whose numbers failed at once, did not wait out a pause of an hour)."""
        with self.lock:
            now = self.clock()
            spans = [self.pause_spans[index] for index in self.taken]
            return sum(max(0.0, min(end, now) - start) for start, end in spans)

    def sustained(self) -> float | None:
        """Successes per second since the first throttle, pauses included: the pace the account really
        kept (the current rate may be mid-probe); None before a throttle, or until it is measured over
        MEASURE_MIN_S and MEASURE_MIN_REQUESTS (a rate over a few milliseconds means nothing)."""
        with self.lock:
            if self.limited_since is None:
                return None
            span = self.last_accepted - self.limited_since
            if span < MEASURE_MIN_S or self.accepted_since_limited < MEASURE_MIN_REQUESTS:
                return None
            return self.accepted_since_limited / span

    # --- internals ---------------------------------------------------------------------------------

    def _cut(self, now: float, sent: float, retry_after: float | None) -> None:
        # The rate that was too fast: before any limit, what was sent; after, the limit (but no more than
        # twice what was really sent: a limit the workers never reached is no evidence, as in botocore).
        too_fast = max(MIN_RATE, min(self.rate, 2 * sent) if self.limited else sent)
        before = self.current()
        if self.limited_since is None:
            self.limited_since = now
        # A server that just turned requests away has no spare capacity left: the first few requests at
        # the new rate may still be throttled (by jitter alone) though the rate is right. They belong
        # to this round; the next ones' throttles are news (see _started).
        self.settled_at, self.sent_since_cut = math.inf, 0
        self.next_slot = max(now, self.paused_until)
        self.credit = 0
        self.first_pause = retry_after is not None and not self.limited
        if retry_after is None:
            self.peak, self.hold = too_fast, 0.0
            self._set_rate(now, BETA * too_fast, before)
        elif self.first_pause:
            # Leaving the unlimited start: the server's burst hid its rate, so what was sent says little.
            # Restart low, from twice what it accepted in the last second (from lower still, the bucket
            # refills and overflows while the climb is below the rate: wasted, and the next round's
            # stretch to measure is shorter), and climb back towards the rate that was throttled (fast
            # at first: CUBIC's concave half). This round measured the burst; the next one, the rate.
            self.peak, self.hold = too_fast, 0.0
            self._set_rate(now, min(too_fast, RESTART_FACTOR * len(self.accepts) / WINDOW_S), before)
        else:
            # The round's answers are still coming in: measure it when the pause ends (nothing is sent
            # meanwhile), in _begin_round.
            self.pending = (before, too_fast, retry_after)

    def _begin_round(self, now: float) -> None:
        """The first start, or the first after a pause: learn from the round that ended, then forget it."""
        self.sending_since = now
        if self.first_pause and self.burst is None and self.round_accepted:
            # The first round ran the server dry from full: its burst, plus its rate times this.
            accepted = self.round_accepted
            self.burst = (len(accepted), accepted[-1] - accepted[0])
            self.first_wave = bisect.bisect_left(accepted, self.first_answer)
            self.credit = self._burst_credit(None)
        if self.pending is not None:
            (before, too_fast, pause), self.pending = self.pending, None
            measured = self._measured()
            if measured is None:
                # Nothing to tell: cut as TCP does after a timeout (halve). If the round was just too short
                # (the burst is known), climb back towards the rate that was throttled, so that the next
                # round can be measured; if nothing can be (no burst known), hold it as below.
                resume = RETRY_AFTER_BETA * too_fast
                if self.burst is not None:
                    self.peak, self.hold = too_fast, 0.0
                else:
                    self.peak, self.hold = max(MIN_RATE, resume), HOLD_PAUSES * pause
            else:
                # Just under what the server accepted, with the burst it refilled during the pause; as
                # each 429 with Retry-After costs a pause, hold HOLD_PAUSES pauses' worth before probing.
                resume = min(measured, too_fast)
                self.peak, self.hold = max(MIN_RATE, resume), HOLD_PAUSES * pause
                self.credit = max(0, min(self._burst_credit(measured), math.floor(measured * pause) - 1))
            self._set_rate(now, resume, before)
        if self.round_accepted:
            self.last_dry = self.round_accepted[-1]
        self.round_began = now
        self.round_accepted = []
        self.first_answer = math.inf

    def _measured(self) -> float | None:
        """The server's rate as the round that just ended measured it (a little under); None if the round
        was too short to tell.

        A token bucket (what a rate limit is) that throttles has run dry: over some stretch of the round,
        it accepted what it held at the stretch's start plus its rate times the stretch. Two bounds:
        - It holds at most its burst. The first round ran it dry from full: burst + rate * t1 = n1. So
          over a stretch of w seconds with n accepted, rate >= (n - n1) / (w - t1).
        - At the last round's end it held nothing: over the round's n0 accepted in w0 seconds after a
          gap of g since then, rate >= n0 / (g + w0). This one binds when the pause refilled less than
          the burst (a slow server).
        The largest bound is the rate: the stretch that ran it dry gives it (one that starts while the
        bucket still overflowed, because the round began below the rate, gives less). Stretches end at
        the round's last accepted request and start at an accepted one; each is counted SLACK requests
        short, so that a short (noisy) stretch does not win by chance. Start times of accepted requests,
        not of all requests: the server sees them in the order they arrive, which is not quite the order
        they were sent in.
        """
        starts = self.round_accepted
        if self.burst is None or not starts:
            return None
        burst, burst_s = self.burst
        stretches = [
            (len(starts) - index - burst, starts[-1] - start - burst_s) for index, start in enumerate(starts)
        ]
        # Each stretch's rate less SLACK requests over it: short stretches (noisy) count for less.
        rates = [(count - SLACK) / span for count, span in stretches if count >= MIN_EVIDENCE and span > 0]
        if self.last_dry > -math.inf and len(starts) >= MIN_EVIDENCE:
            gap = starts[0] - self.last_dry
            refilled = (len(starts) - SLACK) / (starts[-1] - self.last_dry)
            if refilled * (gap + burst_s) < burst:  # the pause refilled less than the burst: this binds
                rates.append(refilled)
        return max(rates) if rates else None

    def _burst_credit(self, rate: float | None) -> int:
        """What to send at once when a pause ends, besides the first request: most of the burst (what
        the first round got accepted less what the rate refilled meanwhile). Before the rate is known,
        what the first wave (sent before any answer came) got accepted: no more can be sent at once."""
        if self.burst is None:
            return 0
        accepted, seconds = self.burst
        if rate is None:
            return max(0, self.first_wave - 1)
        return max(0, math.floor(BURST_SHARE * (accepted - rate * seconds)))

    def _set_rate(self, now: float, resume: float, before: float | None) -> None:
        resume = max(MIN_RATE, resume)
        self.k = (max(0.0, self.peak - resume) / SCALE) ** (1 / 3)
        self.rate, self.limited = resume, True
        self.slowest = resume if self.slowest is None else min(self.slowest, resume)
        self.epoch = max(now, self.paused_until)  # CUBIC's clock starts once any pause is over
        self._log("throttled", before, resume)

    def _started(self, now: float) -> None:
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
