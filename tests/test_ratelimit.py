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

from reconciler import ratelimit
from reconciler.ratelimit import BETA, MIN_RATE, AdaptiveRate, Ceiling


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
    clock.now += 2.0
    rate.succeeded()  # a late success during the pause does not regrow the rate
    assert rate.current() == pytest.approx(max(MIN_RATE, 1.0))  # the accepted rate of the last second
    assert (rate.pauses, rate.paused_s) == (1, 3.0)


def test_a_later_retry_after_halves_the_rate_and_holds_it():
    clock = Clock()
    rate = AdaptiveRate(clock)
    send(rate, clock, 10, 0.01)
    rate.throttled_at(clock.now, retry_after=1.0)  # leaving the unlimited start
    clock.now = rate.paused_until
    for _ in range(100):  # climbing back
        send(rate, clock, 1, 0.0)
        rate.succeeded()
    climbed = rate.current()
    rate.throttled_at(clock.now, retry_after=1.0)
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


def simulate(retry_after: float | None, requests: int = 500, workers: int = 8, rate: float = 50.0) -> dict:
    """`workers` send `requests` to a token bucket (`rate`/s, burst 10) 20 ms away; throttled ones
    are sent again. Returns counts and the simulated time the whole took."""
    clock = Clock()
    pace = AdaptiveRate(clock)
    jitter = random.Random(7)
    tokens, updated = 10.0, clock.now
    todo, throttled, events, order = requests, 0, [], itertools.count()

    def take() -> bool:
        nonlocal tokens, updated
        tokens, updated = min(10.0, tokens + (clock.now - updated) * rate), clock.now
        if tokens >= 1:
            tokens -= 1
            return True
        return False

    def worker():
        nonlocal todo, throttled
        while todo:
            todo -= 1
            while True:
                while (delay := pace.try_start()) > 0:
                    yield clock.now + delay
                started = clock.now
                yield clock.now + jitter.uniform(0.0005, 0.004)  # reaches the server
                accepted = take()
                yield clock.now + 0.020
                if accepted:
                    pace.succeeded()
                    break
                throttled += 1
                pace.throttled_at(started, retry_after)

    for _ in range(workers):
        heapq.heappush(events, (clock.now, next(order), worker()))
    began = clock.now
    while events:
        clock.now, _, running = heapq.heappop(events)
        with_next = next(running, None)
        if with_next is not None:
            heapq.heappush(events, (with_next, next(order), running))
    return {"throttled": throttled, "seconds": clock.now - began, "pauses": pace.pauses}


def test_without_retry_after_the_account_converges_near_the_servers_rate_with_few_429s():
    result = simulate(retry_after=None)
    assert result["throttled"] < 0.1 * 500
    assert result["seconds"] < 1.1 * 500 / 50  # at least 90% of what the server allows
    unlimited = simulate(retry_after=None, rate=math.inf)
    assert unlimited["throttled"] == 0 and unlimited["seconds"] < 500 * 0.025 / 8 * 1.2


def test_with_retry_after_few_pauses_are_taken():
    result = simulate(retry_after=1.0)
    assert result["pauses"] <= 3 and result["throttled"] < 0.05 * 500
    assert result["seconds"] < 1.4 * 500 / 50
