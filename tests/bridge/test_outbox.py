"""The outbox table: recovery, pruning, the retry window, and what the gauges read."""

from __future__ import annotations

from pathlib import Path

from bridge.outbox import DEDUP_WINDOW_SECONDS, KEEP_SENT_SECONDS, Outbox
from bridge.payload import validate_payload
from sheepdog.core.db import Database
from tests.bridge.conftest import make_payload


async def _outbox(tmp_path: Path) -> tuple[Database, Outbox]:
    db = Database(tmp_path / "state")
    outbox = Outbox(db)
    await db.open()
    return db, outbox


async def test_recover_requeues_in_flight_rows_in_order(tmp_path: Path) -> None:
    """Rows a crash left in flight are pending again, and come back oldest first."""
    db, outbox = await _outbox(tmp_path)
    try:
        ids = [
            (await outbox.add("t", validate_payload(make_payload(name=n)), 10.0))[0]
            for n in ("A", "B", "C")
        ]
        await outbox.claim(ids[:2], 11.0)
        assert [r.id for r in await outbox.waiting(["t"], 10)] == [ids[2]]
        assert await outbox.recover(12.0) == 2
        assert [r.id for r in await outbox.waiting(["t"], 10)] == ids
    finally:
        await db.close()


async def test_prune_keeps_a_week_of_sent_rows_and_every_other_row(tmp_path: Path) -> None:
    """Only sent rows older than a week go; pending and dead rows are never pruned."""
    db, outbox = await _outbox(tmp_path)
    try:
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
    finally:
        await db.close()


async def test_a_repeat_after_the_retry_window_is_new(tmp_path: Path) -> None:
    """The same notification within the window is a retry; after it, a real repeat."""
    db, outbox = await _outbox(tmp_path)
    try:
        payload = validate_payload(make_payload(3))
        first, new = await outbox.add("t", payload, 100.0)
        assert new
        assert await outbox.add("t", payload, 100.0 + DEDUP_WINDOW_SECONDS - 1) == (first, False)
        again, new = await outbox.add("t", payload, 100.0 + DEDUP_WINDOW_SECONDS + 1)
        assert new and again != first
    finally:
        await db.close()
