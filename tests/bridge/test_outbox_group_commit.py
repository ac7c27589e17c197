"""Group commit: notifications arriving together share one transaction, each with its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bridge.outbox import Outbox
from bridge.payload import validate_payload
from sheepdog.config import load_config
from sheepdog.core.db import Database, DatabaseUnavailable
from tests.bridge.conftest import AUTH, StartBridge, make_payload, targets_config
from tests.peers.wechat import WeChatRobot
from tests.support.polling import wait_until_async

T = TypeVar("T")


class Counting:
    """Counts the transactions a database runs, and can be told to fail them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.transactions = 0
        self.failure: Exception | None = None
        run = db.run  # type: ignore[attr-defined]

        async def counted(work: Callable[..., Any], **options: Any) -> Any:
            self.transactions += 1
            if self.failure is not None:
                raise self.failure
            return await run(work, **options)

        db.run = counted  # type: ignore[attr-defined]

    async def close(self) -> None:
        pass  # the database fixture closes it


@pytest.fixture
async def counted(database: Database) -> tuple[Counting, Outbox]:
    """An outbox on the test's backend whose transactions are counted (after opening)."""
    outbox = Outbox(database)
    await database.open()
    return Counting(database), outbox


def _payload(name: str) -> Any:
    return validate_payload(make_payload(name=name))


async def test_concurrent_notifications_are_stored_in_few_transactions(
    counted: tuple[Counting, Outbox],
) -> None:
    """100 notifications at once: every one stored, with its own id, in far fewer commits."""
    db, outbox = counted
    try:
        results = await asyncio.gather(
            *(outbox.add("t", _payload(f"A{i}"), 10.0) for i in range(100))
        )
        assert all(new for _, new in results)
        ids = [row_id for row_id, _ in results]
        assert len(set(ids)) == 100
        assert db.transactions <= 2
        waiting = await outbox.waiting(["t"], 200)
        assert [row.id for row in waiting] == sorted(ids)
        assert [row.alert_names for row in waiting] == [(f"A{i}",) for i in range(100)]
    finally:
        await db.close()


async def test_a_retry_in_the_same_batch_is_recognised(counted: tuple[Counting, Outbox]) -> None:
    """The same notification twice in one batch: stored once, the second answered as a retry."""
    db, outbox = counted
    try:
        payload = _payload("Same")
        first, second = await asyncio.gather(
            outbox.add("t", payload, 10.0), outbox.add("t", payload, 10.0)
        )
        assert first[1] is True
        assert second == (first[0], False)
        assert len(await outbox.waiting(["t"], 10)) == 1
    finally:
        await db.close()


async def test_a_failed_commit_fails_every_notification_in_it(
    counted: tuple[Counting, Outbox],
) -> None:
    """The database unavailable: every waiting notification gets the error (a 503), none a
    false success; the next ones are stored once it is back."""
    db, outbox = counted
    try:
        db.failure = DatabaseUnavailable("disk full")
        results = await asyncio.gather(
            *(outbox.add("t", _payload(f"B{i}"), 10.0) for i in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(result, DatabaseUnavailable) for result in results)
        db.failure = None
        row_id, new = await outbox.add("t", _payload("After"), 11.0)
        assert new
        assert [row.id for row in await outbox.waiting(["t"], 10)] == [row_id]
    finally:
        await db.close()


async def test_a_notification_that_cannot_be_written_fails_alone(
    counted: tuple[Counting, Outbox],
) -> None:
    """An error other than the database's (one bad row) fails only its own notification."""
    db, outbox = counted
    try:
        bad = _payload("Bad")
        bad["alerts"][0]["labels"]["broken"] = object()  # not JSON-serialisable
        results = await asyncio.gather(
            outbox.add("t", _payload("Good1"), 10.0),
            outbox.add("t", bad, 10.0),
            outbox.add("t", _payload("Good2"), 10.0),
            return_exceptions=True,
        )
        assert isinstance(results[1], TypeError)
        good = [result for index, result in enumerate(results) if index != 1]
        assert all(isinstance(result, tuple) and result[1] for result in good)
        assert len(await outbox.waiting(["t"], 10)) == 2
    finally:
        await db.close()


@pytest.mark.parametrize("cancel_first", [True, False])
async def test_a_waiter_that_goes_away_does_not_disturb_the_others(
    counted: tuple[Counting, Outbox], cancel_first: bool
) -> None:
    """A cancelled waiter (its client gone) leaves the batch to be stored for the rest."""
    db, outbox = counted
    try:
        tasks = [asyncio.create_task(outbox.add("t", _payload(f"C{i}"), 10.0)) for i in range(3)]
        await asyncio.sleep(0)
        tasks[0 if cancel_first else 2].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(isinstance(result, asyncio.CancelledError) for result in results) == 1
        assert sum(isinstance(result, tuple) for result in results) == 2
    finally:
        await db.close()


async def test_an_alert_storm_is_accepted_whole_and_the_gauge_catches_up(
    start_bridge: StartBridge, robot: WeChatRobot, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """200 notifications POSTed at once to a robot limited to 1 a minute: every one answered
    200 and stored; the pending gauge, refreshed after the answers, reaches what is queued."""
    targets = {"ops": {"type": "wechat", "url": robot.url(), "rate_per_minute": 1}}
    path = tmp_path / "sheepdog.yaml"
    path.write_text(yaml.safe_dump(targets_config(tmp_path, targets)), encoding="utf-8")
    client = await start_bridge(load_config(path, env={}))
    responses = await asyncio.gather(
        *(
            client.post("/alerts/ops", json=make_payload(name=f"Storm{i}"), headers=AUTH)
            for i in range(200)
        )
    )
    assert [response.status for response in responses] == [200] * 200
    ids = {(await response.json())["id"] for response in responses}
    assert len(ids) == 200

    def pending() -> float:
        return registry.get_sample_value("sheepdog_outbox_pending", {"target": "ops"}) or 0.0

    # One message may already be out (the first of the minute); the rest wait.
    await wait_until_async(lambda: pending() >= 199, what="pending gauge up to date")
    assert pending() <= 200
