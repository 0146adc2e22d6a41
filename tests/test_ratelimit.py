"""The adaptive rate and the --max-rps ceiling, on an injected clock.

The last tests run the real AdaptiveRate against a simulated token-bucket server (discrete events, no
real time), so convergence is checked by counting throttles and requests, never by timing.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random

import pytest

from reconciler.kaleyra import ratelimit
from reconciler.kaleyra.ratelimit import BETA, MIN_RATE, AdaptiveRate, Ceiling


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def send(rate: AdaptiveRate, clock: Clock, count: int, spacing: float) -> list[float]:
    """Start `count` requests `spacing` apart as the rate allows; return their start times."""
    starts = []
    for _ in range(count):
        while (delay := rate.try_start()) > 0:
            clock.now += delay
        starts.append(clock.now)
        clock.now += spacing
    return starts


def test_nothing_is_limited_until_the_first_throttle():
    clock = Clock()
    rate = AdaptiveRate(clock)
    assert all(rate.try_start() == 0.0 for _ in range(1000))  # all at the same instant
    assert rate.current() is None


def test_the_first_throttle_cuts_to_beta_times_what_was_sent():
    clock = Clock()
    rate = AdaptiveRate(clock)
    send(rate, clock, 20, 0.005)  # 200 requests/s
    rate.throttled_at(clock.now - 0.001, retry_after=None)
    assert rate.current() == pytest.approx(BETA * 200, rel=0.05)
    starts = send(rate, clock, 5, 0.0)  # workers as fast as they can: spaced by the new rate
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps == pytest.approx([1 / rate.current()] * 4)


def test_throttles_of_requests_sent_before_the_cut_do_not_cut_again():
    clock = Clock()
    rate = AdaptiveRate(clock)
    send(rate, clock, 20, 0.005)
    sent_before = clock.now - 0.002
    rate.throttled_at(sent_before, None)
    after_one = rate.current()
    for _ in range(7):  # the other workers' requests, in flight at the old rate
        rate.throttled_at(sent_before, None)
    assert rate.current() == after_one and rate.throttled == 8
    send(rate, clock, 10, 0.0)  # once the new rate took hold, a throttle is news again
    rate.throttled_at(clock.now, None)
    assert rate.current() < after_one


def test_the_rate_recovers_along_a_cubic_curve_back_to_the_peak_and_beyond():
    clock = Clock()
    rate = AdaptiveRate(clock)
    send(rate, clock, 50, 0.01)  # 100 requests/s
    rate.throttled_at(clock.now, None)
    cut = rate.current()
    seen = []
    for _ in range(120):  # 12 s of successes
        clock.now += 0.1
        rate.succeeded()
        seen.append(rate.current())
    assert cut == pytest.approx(70, rel=0.05)
    assert all(later >= earlier for earlier, later in itertools.pairwise(seen))  # only grows
    peak_reached = (rate.peak - cut) / ratelimit.SCALE
    index = round(peak_reached ** (1 / 3) / 0.1)
    assert seen[index] == pytest.approx(rate.peak, rel=0.02)  # back at the peak after K seconds
    assert seen[-1] > rate.peak * 1.2  # and probing beyond it


def test_retry_after_pauses_the_account_and_the_curve_waits_for_the_pause():
    clock = Clock()
    rate = AdaptiveRate(clock)
    send(rate, clock, 10, 0.01)
    rate.succeeded()
    rate.throttled_at(clock.now, retry_after=3.0)
    assert rate.try_start() == pytest.approx(3.0)  # every worker waits out the pause

    def stopped_after_two_seconds(seconds: float) -> bool:
        clock.now += 2.0
        return True

    assert not rate.acquire(stopped_after_two_seconds)
    rate.succeeded()  # a late success during the pause does not regrow the rate
    restart = ratelimit.RESTART_FACTOR * 1.0  # (twice) the accepted rate of the last second
    assert rate.current() == pytest.approx(max(MIN_RATE, restart))
    assert (rate.pauses_taken, rate.paused_s) == (1, 2.0)  # the time really paused so far, not what was asked
    clock.now += 5.0
    assert rate.paused_s == 3.0


def test_a_pause_counts_the_time_really_waited_not_the_retry_after_asked():
    clock = Clock()
    rate = AdaptiveRate(clock)
    send(rate, clock, 10, 0.01)
    rate.throttled_at(clock.now, retry_after=999999.0)

    def waited(seconds: float) -> bool:  # a worker waits 25 s in the pause, then the run is stopped
        clock.now += 25.0
        return True

    assert not rate.acquire(waited)
    assert (rate.pauses, rate.pauses_taken, rate.paused_s) == (1, 1, 25.0)


def test_a_pause_no_worker_waited_in_is_not_counted_as_taken():
    """Every number gave up at once (the pause ends past its deadline): the account was asked to pause,
    but nothing paused, so the summary must not say it did."""
    clock = Clock()
    rate = AdaptiveRate(clock)
    send(rate, clock, 10, 0.01)
    rate.throttled_at(clock.now, retry_after=999999.0)
    assert not rate.acquire(lambda seconds: True)  # gives up without waiting
    clock.now += 25.0
    assert (rate.pauses, rate.pauses_taken, rate.paused_s) == (1, 0, 0.0)


def test_a_rate_measured_over_a_few_milliseconds_is_not_reported():
    clock = Clock()
    rate = AdaptiveRate(clock)
    send(rate, clock, 10, 0.001)
    rate.throttled_at(clock.now, retry_after=None)
    for _ in range(3):
        clock.now += 0.0007
        rate.succeeded()
    assert rate.sustained() is None  # not "4,000 requests/s"
    for _ in range(10):
        clock.now += 0.1
        rate.succeeded()
    assert rate.sustained() == pytest.approx(13 / 1.0021, rel=0.01)


class Bucket:
    """A server's rate limit on the test clock: `burst` requests at once, refilled at `rate` a second."""

    def __init__(self, clock: Clock, rate: float, burst: int):
        self.clock, self.rate, self.burst = clock, rate, burst
        self.tokens, self.updated = float(burst), clock.now

    def take(self) -> bool:
        self.tokens = min(self.burst, self.tokens + (self.clock.now - self.updated) * self.rate)
        self.updated = self.clock.now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def blast(rate: AdaptiveRate, clock: Clock, bucket: Bucket, count: int) -> None:
    """The unlimited start: `count` requests at once, answered 20 ms later (429s with Retry-After: 1)."""
    started = clock.now
    assert all(rate.try_start() == 0.0 for _ in range(count))
    taken = [bucket.take() for _ in range(count)]
    clock.now += 0.02
    for accepted in taken:
        if accepted:
            rate.succeeded(started)
        else:
            rate.throttled_at(started, retry_after=1.0)


def sequential(rate: AdaptiveRate, clock: Clock, bucket: Bucket, limit: int = 10**6) -> int:
    """One worker sending at the pace (answered at once) until a 429 with Retry-After: 1 or `limit`
    requests; returns how many were accepted."""
    for accepted in range(limit):
        while (delay := rate.try_start()) > 0:
            clock.now += delay
        started = clock.now
        if not bucket.take():
            rate.throttled_at(started, retry_after=1.0)
            return accepted
        rate.succeeded(started)
    return limit


def test_after_the_first_pause_the_wave_the_server_took_at_once_goes_again_at_once():
    clock = Clock()
    rate = AdaptiveRate(clock)
    blast(rate, clock, Bucket(clock, 50.0, 10), 12)  # 10 accepted before any answer came
    clock.now = rate.paused_until  # the pause refilled them
    at_once = 0
    while rate.try_start() == 0.0:
        at_once += 1
    assert at_once == 10  # then the restarted pace
    assert rate.current() == pytest.approx(ratelimit.RESTART_FACTOR * 10)


def test_a_later_retry_after_resumes_at_the_rate_the_server_accepted_and_holds_it():
    clock = Clock()
    rate = AdaptiveRate(clock)
    bucket = Bucket(clock, 50.0, 10)
    blast(rate, clock, bucket, 12)  # the first round measures the burst
    clock.now = rate.paused_until
    sequential(rate, clock, bucket)  # the second climbs until the bucket runs dry
    climbed = rate.current()
    assert rate.pauses == 2 and climbed > 50
    clock.now = rate.paused_until
    assert rate.current() == climbed  # decided once the pause is over (and the round's answers in)
    at_once = 0
    while rate.try_start() == 0.0:  # most of the burst the pause refilled, at once
        at_once += 1
        assert bucket.take()
        rate.succeeded(clock.now)
    assert at_once == 1 + math.floor(ratelimit.BURST_SHARE * 10)
    resumed = rate.current()
    assert 0.95 * 50 <= resumed <= 50  # just under what the server accepted: no halving
    accepted = sequential(rate, clock, bucket, limit=250)  # 5 s more at that pace
    assert accepted == 250 and rate.pauses == 2  # without another 429
    assert rate.current() == pytest.approx(resumed)  # held (ten pauses' worth) rather than probing


def test_a_later_retry_after_too_short_a_round_to_measure_halves_the_rate_and_climbs_back():
    clock = Clock()
    rate = AdaptiveRate(clock)
    blast(rate, clock, Bucket(clock, 50.0, 10), 12)
    clock.now = rate.paused_until
    busier = Bucket(clock, 1.0, 4)  # someone else took the account's capacity meanwhile
    assert sequential(rate, clock, busier) == 4  # then a 429: four requests tell nothing
    before = rate.current()
    clock.now = rate.paused_until
    rate.try_start()
    halved = rate.current()
    assert (
        halved <= ratelimit.RETRY_AFTER_BETA * before
    )  # (of the throttled rate: at most twice what was sent)
    for _ in range(30):  # 3 s of successes: climbing back (the next round can be measured)
        clock.now += 0.1
        rate.succeeded()
    assert rate.current() > 1.5 * halved


def test_a_later_retry_after_with_nothing_to_measure_halves_the_rate_and_holds_it():
    clock = Clock()
    rate = AdaptiveRate(clock)
    send(rate, clock, 10, 0.01)
    rate.throttled_at(clock.now, retry_after=1.0)  # leaving the unlimited start
    clock.now = rate.paused_until
    for _ in range(100):  # climbing back (successes of unknown start: no burst, no round to measure)
        send(rate, clock, 1, 0.0)
        rate.succeeded()
    climbed = rate.current()
    rate.throttled_at(clock.now, retry_after=1.0)
    clock.now = rate.paused_until
    rate.try_start()
    held = rate.current()
    assert held == pytest.approx(ratelimit.RETRY_AFTER_BETA * climbed, rel=0.05)
    for _ in range(50):  # 5 s of successes after the pause: still holding (10 pauses' worth)
        clock.now += 0.1
        rate.succeeded()
    assert rate.current() == pytest.approx(held)


def test_the_summary_rate_is_what_the_account_sustained_since_its_first_throttle():
    clock = Clock()
    rate = AdaptiveRate(clock)
    send(rate, clock, 10, 0.01)
    assert rate.sustained() is None  # never throttled
    rate.throttled_at(clock.now, retry_after=2.0)
    for _ in range(30):  # 30 successes over the next 3 s, the 2 s pause included
        clock.now += 0.1
        rate.succeeded()
    assert rate.sustained() == pytest.approx(10.0)


def test_the_ceiling_spaces_starts_evenly_across_all_callers():
    clock = Clock()
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        clock.now += seconds
        return False

    ceiling = Ceiling(4.0, clock)
    for _ in range(5):
        assert ceiling.acquire(wait)
    assert waits == pytest.approx([0.25] * 4)
    assert Ceiling(None, clock).acquire(lambda seconds: True)  # no ceiling: never waits


def test_a_stop_ends_a_wait_for_the_pace():
    clock = Clock()
    rate = AdaptiveRate(clock)
    rate.throttled_at(clock.now, retry_after=30.0)
    assert rate.acquire(lambda seconds: True) is False


# --- against a simulated server -----------------------------------------------------------------------


def simulate(
    retry_after: float | None,
    requests: int = 500,
    workers: int = 8,
    rate: float = 50.0,
    burst: int = 10,
    seed: int = 7,
) -> dict:
    """`workers` send `requests` to a token bucket (`rate`/s, `burst`) 20 ms away, as KaleyraClient does
    (each answer reports its request's start); throttled ones are sent again. Returns counts, the
    account's pace changes and the simulated time the whole took."""
    clock = Clock()
    changes: list[ratelimit.RateChange] = []
    pace = AdaptiveRate(clock, changes.append)
    jitter = random.Random(seed)
    tokens, updated = float(burst), clock.now
    todo, throttled, events, order = requests, [], [], itertools.count()

    def take() -> bool:
        nonlocal tokens, updated
        tokens, updated = min(burst, tokens + (clock.now - updated) * rate), clock.now
        if tokens >= 1:
            tokens -= 1
            return True
        return False

    def worker():
        nonlocal todo
        while todo:
            todo -= 1
            while True:
                while (delay := pace.try_start()) > 0:
                    yield clock.now + delay
                started = clock.now
                yield clock.now + jitter.uniform(0.0005, 0.004)  # reaches the server
                accepted = take()
                yield clock.now + 0.020 + jitter.uniform(0.0, 0.003)
                if accepted:
                    pace.succeeded(started)
                    break
                throttled.append(clock.now - pace.started_at)
                pace.throttled_at(started, retry_after)

    for _ in range(workers):
        heapq.heappush(events, (clock.now, next(order), worker()))
    began = clock.now
    while events:
        clock.now, _, running = heapq.heappop(events)
        with_next = next(running, None)
        if with_next is not None:
            heapq.heappush(events, (with_next, next(order), running))
    return {
        "throttled": len(throttled),
        "throttled_at": throttled,
        "seconds": clock.now - began,
        "pauses": pace.pauses,
        "changes": changes,
        "rate": pace.current(),
    }


def test_without_retry_after_the_account_converges_near_the_servers_rate_with_few_429s():
    result = simulate(retry_after=None)
    assert result["throttled"] < 0.1 * 500
    assert result["seconds"] < 1.1 * 500 / 50  # at least 90% of what the server allows
    unlimited = simulate(retry_after=None, rate=math.inf)
    assert unlimited["throttled"] == 0 and unlimited["seconds"] < 500 * 0.025 / 8 * 1.2


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_with_retry_after_two_pauses_find_the_limit_and_the_rest_runs_just_under_it(seed):
    result = simulate(retry_after=1.0, seed=seed)
    # One pause to find that there is a limit (the first round measures the burst), one to learn its
    # rate (the second round is measured): no third.
    assert result["pauses"] == 2
    pauses = [change.at for change in result["changes"] if change.reason == "Retry-After"]
    resumed = [c for c in result["changes"] if c.reason == "throttled" and c.at >= pauses[1] + 1.0]
    assert len(resumed) == 1 and 0.95 * 50 <= resumed[0].after <= 50  # decided as the pause ended
    assert result["rate"] == pytest.approx(resumed[0].after)  # and held to the end: no probing, no 429
    assert all(at < pauses[1] + 1.0 for at in result["throttled_at"])  # (in flight when it came)
    assert result["throttled"] < 0.03 * 500
    # 2 pauses idle ~41 requests' worth each: the floor is (500 - 10 + 82) / 50 = 11.4 s.
    assert result["seconds"] < 1.2 * 500 / 50


def test_with_retry_after_a_slow_server_is_measured_though_a_pause_refills_less_than_its_burst():
    result = simulate(retry_after=1.0, requests=100, rate=5.0)  # a 1 s pause refills 5 of 10
    assert result["pauses"] <= 3
    assert 0.9 * 5 <= result["rate"] <= 5.0
    assert result["seconds"] < 1.1 * 100 / 5


def test_with_retry_after_a_long_run_probes_again_only_after_holding():
    result = simulate(retry_after=1.0, requests=2000)  # 40 s: the hold (10 pauses' worth) runs out
    pauses = [change.at for change in result["changes"] if change.reason == "Retry-After"]
    assert len(pauses) <= 5 and all(later - earlier > 10 for earlier, later in itertools.pairwise(pauses[1:]))
    assert result["seconds"] < 1.15 * 2000 / 50
