"""Whole-request deadlines: each request gets its TimeoutError at its own deadline, no sooner,
and one that has ended is never touched, whatever the other requests' timeouts."""

from __future__ import annotations

import asyncio

import pytest

from proxy.deadlines import Deadlines


async def _wait_in(scope: asyncio.Timeout, deadlines: Deadlines, timeout: float) -> None:
    async with scope:
        deadlines.add(scope, timeout)
        await asyncio.Event().wait()


async def _until_expired(deadlines: Deadlines, timeout: float) -> asyncio.Timeout:
    scope = asyncio.timeout(None)
    with pytest.raises(TimeoutError):
        await _wait_in(scope, deadlines, timeout)
    return scope


async def test_a_shorter_timeout_added_later_expires_first() -> None:
    """After a reload shortens the timeout, new requests do not wait behind the old ones."""
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    long_scope = asyncio.timeout(None)

    async def long_request() -> None:
        async with long_scope:
            deadlines.add(long_scope, 3600.0)
            started.set()
            await asyncio.Event().wait()

    long_task = asyncio.create_task(long_request())
    await started.wait()
    began = loop.time()
    short_scope = await _until_expired(deadlines, 0.05)
    assert short_scope.expired()
    assert loop.time() - began >= 0.05
    assert not long_scope.expired() and not long_task.done()
    long_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long_task
    assert not long_scope.expired()  # cancelled by its client, not timed out
    deadlines.close()


async def test_a_request_that_ended_is_never_expired() -> None:
    deadlines = Deadlines()
    done = asyncio.timeout(None)
    async with done:
        deadlines.add(done, 0.01)
        deadlines.discard(done, 0.01)
    later = await _until_expired(deadlines, 0.05)  # its deadline passes after the first one's
    assert later.expired()
    assert not done.expired()
    deadlines.close()


async def test_many_requests_with_one_timeout_each_expire() -> None:
    deadlines = Deadlines()
    scopes = await asyncio.gather(*(_until_expired(deadlines, 0.01 * (i % 3)) for i in range(30)))
    assert all(scope.expired() for scope in scopes)
    deadlines.close()
