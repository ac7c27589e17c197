"""The outbox table: recovery, pruning, the retry window, leases, and what the gauges and the
console read; on both backends."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from bridge.outbox import DEDUP_WINDOW_SECONDS, KEEP_SENT_SECONDS, Outbox, TargetStats
from bridge.payload import validate_payload
from sheepdog.core.backends import database_for
from sheepdog.core.db import Database
from tests.bridge.conftest import make_payload
from tests.conftest import MakeConfig


@pytest.fixture
async def outbox(database: Database) -> Outbox:
    opened = Outbox(database)
    await database.open()
    return opened


async def test_recover_requeues_in_flight_rows_in_order(outbox: Outbox) -> None:
    """Rows a crash left in flight are pending again, and come back oldest first."""
    ids = [
        (await outbox.add("t", validate_payload(make_payload(name=n)), 10.0))[0]
        for n in ("A", "B", "C")
    ]
    await outbox.claim(ids[:2], "A", 11.0)
    assert [r.id for r in await outbox.waiting(["t"], 10)] == [ids[2]]
    assert await outbox.recover(12.0) == 2
    assert [r.id for r in await outbox.waiting(["t"], 10)] == ids


async def test_prune_keeps_a_week_of_sent_rows_and_every_other_row(outbox: Outbox) -> None:
    """Only sent rows older than a week go; pending and dead rows are never pruned."""
    sent_old, _ = await outbox.add("t", validate_payload(make_payload(name="Old")), 0.0)
    sent_new, _ = await outbox.add("t", validate_payload(make_payload(name="New")), 0.0)
    dead, _ = await outbox.add("t", validate_payload(make_payload(name="Dead")), 0.0)
    await outbox.add("t", validate_payload(make_payload(name="Wait")), 0.0)
    await outbox.mark_sent([sent_old], 1.0)
    await outbox.mark_sent([sent_new], KEEP_SENT_SECONDS)
    await outbox.mark_dead([dead], 1.0, "too_long")
    assert await outbox.prune(KEEP_SENT_SECONDS + 2.0) == 1
    stats = (await outbox.stats())["t"]
    assert (stats.waiting, stats.dead, stats.oldest_created_at) == (1, 1, 0.0)


async def test_a_repeat_after_the_retry_window_is_new(outbox: Outbox) -> None:
    """The same notification within the window is a retry; after it, a real repeat."""
    payload = validate_payload(make_payload(3))
    first, new = await outbox.add("t", payload, 100.0)
    assert new
    assert await outbox.add("t", payload, 100.0 + DEDUP_WINDOW_SECONDS - 1) == (first, False)
    again, new = await outbox.add("t", payload, 100.0 + DEDUP_WINDOW_SECONDS + 1)
    assert new and again != first


async def test_one_lease_holder_at_a_time_and_a_lapsed_lease_is_taken_over(
    outbox: Outbox,
) -> None:
    """A destination has one holder; a renewal keeps it; once it lapses another takes it over,
    with the send times the first kept, and queues again the rows the first had claimed."""
    first = await outbox.lease("robot", "A", 100.0, 30.0)
    assert first is not None and first.fresh
    assert await outbox.lease("robot", "B", 110.0, 30.0) is None
    renewed = await outbox.lease("robot", "A", 120.0, 30.0)
    assert renewed is not None and not renewed.fresh
    await outbox.record_sends("robot", "A", [118.5, 119.5])
    row_id, _ = await outbox.add("t", validate_payload(make_payload(name="Held")), 120.0)
    assert await outbox.claim([row_id], "A", 121.0) == [row_id]
    assert await outbox.claim([row_id], "B", 121.0) == []  # claimed once only
    assert await outbox.lease("robot", "B", 149.0, 30.0) is None
    taken = await outbox.lease("robot", "B", 150.5, 30.0)
    assert taken is not None and taken.fresh and taken.sends == (118.5, 119.5)
    assert await outbox.requeue_claimed_by_others(["t"], "B", 151.0) == 1
    assert [row.id for row in await outbox.waiting(["t"], 10)] == [row_id]
    await outbox.let_go("robot", "B")
    again = await outbox.lease("robot", "A", 152.0, 30.0)
    assert again is not None and again.fresh


async def test_the_console_reads_counts_last_delivery_and_last_failure(outbox: Outbox) -> None:
    """Per target: waiting and dead counts, the oldest waiting, when a delivery last went out
    and when one last failed, with why; and the dead letters themselves."""
    ids = [
        (await outbox.add("t", validate_payload(make_payload(name=n)), 10.0 + i))[0]
        for i, n in enumerate(("Sent", "Dead", "Waiting"))
    ]
    await outbox.claim(ids[:2], "A", 20.0)
    await outbox.mark_sent(ids[:1], 21.0)
    await outbox.mark_retry(ids[1:2], 22.0, 23.0, "server_error: HTTP 500")
    await outbox.mark_dead(ids[1:2], 24.0, "invalid_key: errcode 93000")
    assert (await outbox.stats())["t"] == TargetStats(1, 12.0, 1)  # the gauges' cheap read
    stats = (await outbox.overview())["t"]
    assert (stats.waiting, stats.dead, stats.oldest_created_at) == (1, 1, 12.0)
    assert (stats.last_sent_at, stats.last_failure_at) == (21.0, 24.0)
    assert stats.last_error == "invalid_key: errcode 93000"
    [dead] = await outbox.dead_letters()
    assert (dead.id, dead.alert_names, dead.last_error) == (
        ids[1],
        ("Dead",),
        "invalid_key: errcode 93000",
    )
    assert await outbox.retry_dead([ids[1], ids[2]], 30.0) == (
        [ids[1]],
        {ids[2]: "is pending, not dead"},
    )


async def test_a_notification_another_process_stores_wakes_the_watcher(
    backend: dict[str, Any], make_config: MakeConfig
) -> None:
    """Two processes on one outbox (two databases here): one stores, the other is woken, so
    the process holding the destination delivers at once rather than at its next poll."""
    config = make_config({**backend, "workers": 2})
    watcher_db, writer_db = database_for(config), database_for(config)
    try:
        watcher, writer = Outbox(watcher_db), Outbox(writer_db)
        await watcher_db.open()
        await writer_db.open()
        woken = asyncio.Event()
        watcher.watch(woken.set)
        for attempt in range(20):  # until the watcher has looked once and sees the change
            woken.clear()
            await writer.add("t", validate_payload(make_payload(name=f"W{attempt}")), 1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await woken.wait()
            if woken.is_set() and attempt > 0:
                break
        assert woken.is_set()
    finally:
        await watcher_db.close()
        await writer_db.close()
