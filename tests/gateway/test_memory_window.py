"""The in-process moving window: exact counts over a sliding window, and memory that follows the active addresses."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from limits import parse
from limits.strategies import MovingWindowRateLimiter

from gateway.ratelimit.memory import InProcessMovingWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_hit_leaves_the_window_exactly_one_window_after_it_was_made():
    clock = Clock()
    limiter = MovingWindowRateLimiter(InProcessMovingWindow(clock))
    two_a_minute = parse("2 per minute")
    assert limiter.hit(two_a_minute, "ip")
    clock.now += 40
    assert limiter.hit(two_a_minute, "ip")
    clock.now += 10
    assert not limiter.hit(two_a_minute, "ip")  # a fixed window starting at the first hit would agree so far
    clock.now += 10.5  # 60.5 s after the first hit, 20.5 s after the second
    assert limiter.hit(two_a_minute, "ip")  # the first hit left the window, the second is still in it
    assert not limiter.hit(two_a_minute, "ip")
    stats = limiter.get_window_stats(two_a_minute, "ip")
    assert stats.remaining == 0 and stats.reset_time == clock.now - 20.5 + 60  # when the older hit in the window leaves


def test_each_address_has_its_own_window_and_a_refusal_costs_no_slot():
    clock = Clock()
    limiter = MovingWindowRateLimiter(InProcessMovingWindow(clock))
    three_a_second = parse("3 per second")
    assert [limiter.hit(three_a_second, "a") for _ in range(5)] == [True, True, True, False, False]
    assert limiter.hit(three_a_second, "b")
    clock.now += 1.01
    assert [limiter.hit(three_a_second, "a") for _ in range(4)] == [True, True, True, False]


def test_addresses_that_stopped_calling_are_forgotten_once_their_window_has_passed():
    clock = Clock()
    store = InProcessMovingWindow(clock)
    limiter = MovingWindowRateLimiter(store)
    per_minute = parse("30 per minute")
    for n in range(10_000):
        limiter.hit(per_minute, f"morning-{n}")
    clock.now += 30
    for n in range(10_000):
        limiter.hit(per_minute, f"noon-{n}")
    assert len(store) == 20_000  # everyone is still within the minute
    clock.now += 31
    for n in range(10_000):
        limiter.hit(per_minute, f"noon-{n}" if n < 100 else f"evening-{n}")
    # noon's visitors are within their minute, 9,900 came in the evening; morning's went
    assert len(store) == 10_000 + 9_900


def test_concurrent_hits_on_one_key_never_exceed_the_limit():
    limiter = MovingWindowRateLimiter(InProcessMovingWindow())
    item = parse("5000 per hour")
    with ThreadPoolExecutor(8) as pool:
        allowed = sum(pool.map(lambda _: limiter.hit(item, "shared"), range(8000)))
    assert allowed == 5000
