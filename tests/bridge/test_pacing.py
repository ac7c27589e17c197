"""The rate limit (never more than N in any minute) and the retry backoff."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.channels.base import Limit
from bridge.pacing import RateLimiter, RateLimits, backoff_delay, combine_limits


def _send_greedily(limiter: RateLimiter, count: int, start: float = 0.0) -> list[float]:
    now, times = start, []
    while len(times) < count:
        now += limiter.wait_time(now)
        assert limiter.available(now) > 0
        limiter.record(now)
        times.append(now)
    return times


@pytest.mark.parametrize("rate", [1, 2.5, 20, 60])
def test_never_more_than_the_rate_in_any_window(rate: float) -> None:
    """Sending as fast as allowed never puts more than the rate in any 60 s window."""
    limiter = RateLimiter(rate)
    times = _send_greedily(limiter, 200)
    for index, start in enumerate(times):
        in_window = [t for t in times[index:] if t < start + limiter.window]
        assert len(in_window) <= limiter.capacity
    # ...and the limit is used, not wasted: the first `capacity` go at once.
    assert times[: limiter.capacity] == [0.0] * limiter.capacity


def test_fractional_rate_widens_the_window() -> None:
    """Half a message a minute is one message in any two minutes."""
    limiter = RateLimiter(0.5)
    assert (limiter.capacity, limiter.window) == (1, 120.0)
    assert _send_greedily(limiter, 3) == [0.0, 120.0, 240.0]


def test_zero_means_unlimited() -> None:
    """Rate 0 never waits."""
    limiter = RateLimiter(0)
    assert _send_greedily(limiter, 1000)[-1] == 0.0


@given(st.lists(st.floats(0, 30), min_size=1, max_size=80))
def test_wait_time_is_honest(gaps: list[float]) -> None:
    """Whatever the pattern of sends, after waiting wait_time() a send is allowed."""
    limiter = RateLimiter(20)
    now = 0.0
    for gap in gaps:
        now += gap
        now += limiter.wait_time(now)
        assert limiter.available(now) >= 1
        limiter.record(now)


def test_reconfigure_keeps_history() -> None:
    """A reload that lowers the rate counts what was already sent this minute."""
    limiter = RateLimiter(60)
    for _ in range(10):
        limiter.record(0.0)
    limiter.configure(5)
    assert limiter.available(1.0) == 0


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    """Delays double from the initial one, jittered in the upper half, capped at the maximum."""
    rng = random.Random(7)
    for attempt, step in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 256), (10, 300), (40, 300)]:
        for _ in range(50):
            delay = backoff_delay(attempt, 1.0, 300.0, rng)
            assert step / 2 <= delay <= step


def _send_greedily_all(limits: RateLimits, count: int) -> list[float]:
    now, times = 0.0, []
    while len(times) < count:
        now += limits.wait_time(now)
        assert limits.available(now) > 0
        limits.record(now)
        times.append(now)
    return times


def test_several_windows_hold_at_once() -> None:
    """100 a minute and 5 a second (a Feishu bot): neither is ever exceeded."""
    limits = RateLimits([Limit(100, 60.0), Limit(5, 1.0)])
    times = _send_greedily_all(limits, 300)
    for index, start in enumerate(times):
        assert sum(1 for t in times[index:] if t < start + 1.0) <= 5
        assert sum(1 for t in times[index:] if t < start + 60.0) <= 100
    assert times[:5] == [0.0] * 5 and times[5] == 1.0


def test_reconfiguring_keeps_the_history() -> None:
    """A destination that just took 20 sends, given its limit again (a reload), still waits."""
    limits = RateLimits([Limit(20, 60.0)])
    for _ in range(20):
        limits.record(10.0)
    limits.configure([Limit(20, 60.0)])
    assert limits.available(11.0) == 0
    assert limits.wait_time(11.0) == 59.0
    unlimited = RateLimits()
    assert unlimited.available(0.0) > 1000 and unlimited.wait_time(0.0) == 0.0


def test_a_destination_takes_the_strictest_of_its_targets_limits() -> None:
    """Two targets on one robot with different rates: the robot gets the smaller one."""
    combined = combine_limits([[Limit(20, 60.0)], [Limit(10, 60.0), Limit(5, 1.0)], []])
    assert combined == (Limit(5, 1.0), Limit(10, 60.0))


def test_the_delay_of_sending_a_queue_one_by_one() -> None:
    """What a worker weighs before merging: when the last of N sends could go, one by one, as
    the greedy sender would send them, and the same from a history of sends."""
    feishu = [Limit(100, 60.0), Limit(5, 1.0)]
    for count in (1, 3, 5, 6, 20, 150):
        expected = _send_greedily_all(RateLimits(feishu), count)[-1]
        assert RateLimits(feishu).delay(count, 0.0) == expected
    assert RateLimits(feishu).delay(20, 0.0) == 3.0  # 5 now, then 5 a second
    assert RateLimits(feishu).delay(101, 0.0) == 60.0  # the minute's 100 are spent
    assert RateLimits(feishu).delay(150, 0.0, most=5.0) > 5.0  # stops counting there
    wechat = RateLimits([Limit(20, 60.0)])
    for _ in range(18):
        wechat.record(10.0)
    assert wechat.delay(2, 11.0) == 0.0
    assert wechat.delay(3, 11.0) == 59.0
    assert RateLimits().delay(1000, 0.0) == 0.0
