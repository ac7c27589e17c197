"""Whole-request deadlines: each request gets its TimeoutError at its own deadline, no sooner,
and one that has ended is never touched, whatever the other requests' timeouts."""

from __future__ import annotations

import asyncio

import pytest

from proxy.deadlines import Deadline, Deadlines


async def _wait_in(deadlines: Deadlines, timeout: float, entered: asyncio.Event) -> Deadline:
    """Wait until cancelled; the deadline if it was the deadline's doing (as the relay does)."""
    deadline = deadlines.enter(timeout)
    entered.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        deadlines.leave(deadline)
        if deadline.timed_out():
            return deadline
        raise
    raise AssertionError("never set")  # pragma: no cover


async def _until_expired(deadlines: Deadlines, timeout: float) -> Deadline:
    return await _wait_in(deadlines, timeout, asyncio.Event())


async def test_a_shorter_timeout_added_later_expires_first() -> None:
    """After a reload shortens the timeout, new requests do not wait behind the old ones."""
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    deadlines.bind(loop)
    entered = asyncio.Event()
    long_task = asyncio.create_task(_wait_in(deadlines, 3600.0, entered))
    await entered.wait()
    began = loop.time()
    short = await _until_expired(deadlines, 0.05)
    assert short.expired
    assert loop.time() - began >= 0.05
    assert not long_task.done()
    long_task.cancel()
    with pytest.raises(asyncio.CancelledError):  # cancelled by its client, not timed out
        await long_task
    deadlines.close()


async def test_a_request_that_ended_is_never_expired() -> None:
    deadlines = Deadlines()
    done = deadlines.enter(0.01)
    deadlines.leave(done)
    later = await _until_expired(deadlines, 0.05)  # its deadline passes after the first one's
    assert later.expired
    assert not done.expired and not done.timed_out()
    deadlines.close()


async def test_many_requests_with_one_timeout_each_expire() -> None:
    deadlines = Deadlines()
    found = await asyncio.gather(*(_until_expired(deadlines, 0.01 * (i % 3)) for i in range(30)))
    assert all(deadline.expired for deadline in found)
    deadlines.close()


async def test_a_client_going_away_as_the_deadline_passes_is_still_a_cancellation() -> None:
    """Both at once: the request is cancelled (the client's), not turned into a timeout."""
    deadlines = Deadlines()
    entered = asyncio.Event()
    task = asyncio.create_task(_wait_in(deadlines, 0.0, entered))
    await entered.wait()
    task.cancel()  # the client's, before the deadline's timer runs
    await asyncio.sleep(0.01)
    with pytest.raises(asyncio.CancelledError):
        await task
    deadlines.close()
