"""The spend ledger: budgets, restarts, month boundaries, a database that fails for a while,
and several processes on one ledger; each on both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import openai
import pytest

from proxy import RELAY
from proxy.ledger import LedgerRow
from sheepdog.core.db import DatabaseUnavailable
from sheepdog.core.runtime import RUNTIME
from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import TEAM_A_KEY, TEAM_B_KEY, FakeClock, StartProxy, proxy_config
from tests.support.state import StoredState

GPT = {"model": "gpt-4.1"}


@pytest.fixture
def config(upstream: FakeUpstream, backend: dict[str, Any]) -> dict[str, Any]:
    """The proxy fixtures' config, on the backend of the test."""
    return {**proxy_config(upstream), **backend}


def ledger_rows(stored: StoredState, month: str) -> list[LedgerRow]:
    return [LedgerRow(*row) for row in stored.ledger(month)]


async def test_spend_survives_a_restart(
    start_proxy: StartProxy, upstream: FakeUpstream, config: dict[str, Any], stored: StoredState
) -> None:
    """A new app on the same state_dir starts from the month-to-date spend of the last one."""
    upstream.script("gpt-4.1", prompt_tokens=1000, completion_tokens=500)
    first = await start_proxy(config)
    async with first.client() as client:
        for _ in range(3):
            await client.chat.completions.create(model="gpt-4.1", messages=[])
    await first.close()  # a clean stop writes what is pending
    assert ledger_rows(stored, "2026-11") == [
        LedgerRow("2026-11", "team-a", "gpt-4.1", 3, 3000, 1500, pytest.approx(0.018))  # type: ignore[arg-type]
    ]

    second = await start_proxy(config)
    assert second.value("llm_spend_month_usd", client="team-a") == pytest.approx(0.018)
    async with second.client() as client:
        await client.chat.completions.create(model="gpt-4.1", messages=[])
    assert second.value("llm_spend_month_usd", client="team-a") == pytest.approx(0.024)
    await second.close()
    [row] = ledger_rows(stored, "2026-11")
    assert (row.requests, row.input_tokens, row.output_tokens) == (4, 4000, 2000)


async def test_a_new_month_starts_from_zero(
    start_proxy: StartProxy,
    upstream: FakeUpstream,
    clock: FakeClock,
    config: dict[str, Any],
    stored: StoredState,
) -> None:
    """At the turn of the month (UTC) spend drops to zero, without waiting for a request."""
    upstream.script("gpt-4.1", prompt_tokens=1000, completion_tokens=500)
    clock.current = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    proxy = await start_proxy(config)
    async with proxy.client() as client:
        await client.chat.completions.create(model="gpt-4.1", messages=[])
        assert proxy.value("llm_spend_month_usd", client="team-a") == pytest.approx(0.006)
        clock.current = datetime(2026, 12, 1, 0, 0, 0, tzinfo=UTC)
        assert proxy.value("llm_spend_month_usd", client="team-a") == 0
        await client.chat.completions.create(model="gpt-4.1", messages=[])
        await client.chat.completions.create(model="gpt-4.1", messages=[])
    await proxy.close()
    assert [row.requests for row in ledger_rows(stored, "2026-11")] == [1]
    assert [row.requests for row in ledger_rows(stored, "2026-12")] == [2]
    restarted = await start_proxy(config)
    assert restarted.value("llm_spend_month_usd", client="team-a") == pytest.approx(0.012)


async def test_budget_refuses_with_429_until_the_month_ends(
    start_proxy: StartProxy, upstream: FakeUpstream, clock: FakeClock, config: dict[str, Any]
) -> None:
    """At or over budget: 429 budget_exceeded before any upstream call, across a restart."""
    # 5M input tokens of gpt-4.1 at $2/1M is exactly team-a's $10 budget.
    upstream.script("gpt-4.1", prompt_tokens=5_000_000, completion_tokens=0)
    proxy = await start_proxy(config)
    async with proxy.client(max_retries=2) as client:
        await client.chat.completions.create(model="gpt-4.1", messages=[])
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-4.1", messages=[])
    assert caught.value.body == {
        "message": "Client 'team-a' has used its monthly budget of $10.00 (calendar month, UTC)."
        " It resets at the start of next month.",
        "type": "insufficient_quota",
        "code": "budget_exceeded",
    }
    # Noon on 15 November to midnight on 1 December; and the SDK is told not to retry.
    assert caught.value.response.headers["Retry-After"] == str((15 * 24 + 12) * 3600)
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.received) == 1
    assert proxy.requests(**GPT, route="chat", code="429", client="team-a") == 1
    async with proxy.client(TEAM_B_KEY) as other:  # no budget: not affected
        await other.chat.completions.create(model="gpt-4.1", messages=[])

    await proxy.close()
    restarted = await start_proxy(config)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            restarted.url("/v1/chat/completions"),
            json={"model": "gpt-4.1", "messages": []},
            headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
        ) as response:
            assert response.status == 429
        clock.current = datetime(2026, 12, 1, tzinfo=UTC)
        async with session.post(
            restarted.url("/v1/chat/completions"),
            json={"model": "gpt-4.1", "messages": []},
            headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
        ) as response:
            assert response.status == 200


async def test_ledger_keeps_changes_while_the_database_fails(
    start_proxy: StartProxy,
    config: dict[str, Any],
    stored: StoredState,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While writes fail, spend stays in memory and /-/ready says why; then it is all written."""
    proxy = await start_proxy(config)
    db = proxy.app[RUNTIME].db
    real_run = db.run

    async def failing_run(work: Any, **options: Any) -> Any:
        raise DatabaseUnavailable("disk full")

    monkeypatch.setattr(db, "run", failing_run)
    async with proxy.client() as client:
        await client.chat.completions.create(model="gpt-4.1", messages=[])
        await client.chat.completions.create(model="gpt-4.1", messages=[])
    await proxy.flush_ledger()
    async with aiohttp.ClientSession() as session, session.get(proxy.url("/-/ready")) as ready:
        assert ready.status == 503
        assert "spend ledger: cannot write spend" in await ready.text()
    assert proxy.app[RELAY].ledger.unwritten()[0] == 2

    monkeypatch.setattr(db, "run", real_run)
    await proxy.flush_ledger()
    assert proxy.app[RELAY].ledger.problem is None
    [row] = ledger_rows(stored, "2026-11")
    assert (row.requests, row.input_tokens, row.output_tokens) == (2, 24, 8)


async def test_a_budget_spent_through_one_process_is_refused_by_another(
    start_proxy: StartProxy, upstream: FakeUpstream, config: dict[str, Any]
) -> None:
    """Two processes on one ledger (two apps here): team-a spends its budget through A; once
    A's spend is written and B has read the totals back, B refuses team-a with 429 too."""
    upstream.script("gpt-4.1", prompt_tokens=5_000_000, completion_tokens=0)  # exactly $10
    first = await start_proxy(config)
    second = await start_proxy(config)
    async with first.client() as client:
        await client.chat.completions.create(model="gpt-4.1", messages=[])
    # (Whether B knows yet depends on when the writers' last second ended: no check here.)
    await first.flush_ledger()  # what A's writer does every second
    await second.flush_ledger()  # and B's, which reads every process's totals back
    assert second.value("llm_spend_month_usd", client="team-a") == pytest.approx(10.0)
    async with second.client() as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-4.1", messages=[])
    assert caught.value.code == "budget_exceeded"
    assert len(upstream.received) == 1
    # Both processes' spend adds up; neither overwrote the other's.
    async with second.client(TEAM_B_KEY) as client:
        await client.chat.completions.create(model="gpt-4.1", messages=[])
    await second.flush_ledger()
    await first.flush_ledger()
    assert first.value("llm_spend_month_usd", client="team-b") == pytest.approx(10.0)
    assert first.value("llm_spend_month_usd", client="team-a") == pytest.approx(10.0)
