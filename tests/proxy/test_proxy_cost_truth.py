"""/metrics, the ledger and `sheepdog report` agree with a hand calculation, token kind by kind."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from proxy.ledger import UNPRICED_NAMES_PER_MONTH
from sheepdog.cli import main
from sheepdog.core.db import DATABASE_FILE
from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import FakeClock, StartProxy, proxy_config
from tests.support.polling import wait_until_async
from tests.support.state import StoredState


def _rows(stored: StoredState, month: str) -> dict[str, SimpleNamespace]:
    """The ledger's rows of ``month`` by model, as the database holds them."""
    rows = stored.query("SELECT * FROM ledger_usage WHERE month = ? ORDER BY model", month)
    return {row["model"]: SimpleNamespace(**row) for row in rows}


def _unpriced(stored: StoredState, month: str) -> list[SimpleNamespace]:
    rows = stored.query(
        "SELECT * FROM ledger_unpriced WHERE month = ? ORDER BY requests DESC, name", month
    )
    return [SimpleNamespace(**row) for row in rows]


def _main(argv: list[str]) -> int:
    """``sheepdog`` on a thread of its own: it runs an event loop of its own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(main, argv).result()


# Hand calculations at list prices (USD per 1M tokens).
# gpt-4.1 (2.00 in, 0.50 cached, 8.00 out): 10,000 prompt of which 8,000 cached, 500 out.
GPT = (2000 * 2.00 + 8000 * 0.50 + 500 * 8.00) / 1e6  # 0.012
# claude-sonnet-4.6 (3 in, 0.30 read, 3.75 5m write, 6 1h write, 15 out), thinking 200 of 500.
SONNET = (1000 * 3 + 90_000 * 0.30 + 5000 * 3.75 + 4000 * 6 + 500 * 15) / 1e6  # 0.08025
SONNET_SAVED = 90_000 * (3 - 0.30) / 1e6
GPT_SAVED = 8000 * (2.00 - 0.50) / 1e6


async def test_metrics_ledger_and_report_agree_to_the_cent_with_a_hand_calculation(
    start_proxy: StartProxy,
    upstream: FakeUpstream,
    clock: FakeClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: dict[str, Any],
    stored: StoredState,
) -> None:
    """Cached OpenAI and Anthropic traffic under real model ids, and an unpriced name: the same
    USD, tokens by kind and cache savings in /metrics, the ledger and every report format; on
    either backend."""
    clock.current = datetime(2025, 6, 10, tzinfo=UTC)
    upstream.script("gpt-4.1-2025-04-14", prompt_tokens=10_000, completion_tokens=500,
                    cached_tokens=8000)  # fmt: skip
    upstream.anthropic.script(
        "claude-sonnet-4-6",
        input_tokens=1000,
        cache_read_tokens=90_000,
        cache_write_5m_tokens=5000,
        cache_write_1h_tokens=4000,
        output_tokens=500,
        thinking_tokens=200,
    )
    upstream.script("my-finetune-v7", prompt_tokens=10, completion_tokens=20)
    proxy = await start_proxy({**proxy_config(upstream), **backend})
    async with proxy.client() as client, proxy.anthropic() as claude:
        for _ in range(2):
            await client.chat.completions.create(model="gpt-4.1-2025-04-14", messages=[])
            await claude.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=[])
        await client.chat.completions.create(model="my-finetune-v7", messages=[])
    total = 2 * (GPT + SONNET)
    costs = {
        model: proxy.value("llm_cost_usd_total", model=model, client="team-a")
        for model in ("gpt-4.1", "claude-sonnet-4.6", "other")
    }
    assert costs == {
        "gpt-4.1": pytest.approx(2 * GPT, rel=1e-12),
        "claude-sonnet-4.6": pytest.approx(2 * SONNET, rel=1e-12),
        "other": 0,
    }
    assert proxy.value("llm_spend_month_usd", client="team-a") == pytest.approx(total, rel=1e-12)
    await proxy.close()

    rows = _rows(stored, "2025-06")
    unpriced = _unpriced(stored, "2025-06")
    sonnet = rows["claude-sonnet-4.6"]
    assert (sonnet.requests, sonnet.input_tokens, sonnet.output_tokens) == (2, 200_000, 1000)
    assert (sonnet.cache_read_tokens, sonnet.cache_write_tokens, sonnet.reasoning_tokens) == (
        180_000,
        18_000,
        400,
    )
    assert sonnet.usd == pytest.approx(2 * SONNET, rel=1e-12)
    assert sonnet.cache_savings_usd == pytest.approx(2 * SONNET_SAVED, rel=1e-12)
    assert rows["gpt-4.1"].cache_read_tokens == 16_000
    assert [(row.name, row.requests, row.input_tokens) for row in unpriced] == [
        ("my-finetune-v7", 1, 10)
    ]

    config = tmp_path / "sheepdog.yaml"
    config.write_text(yaml.safe_dump({"state_dir": "state", **backend}))
    assert _main(["report", "--month", "2025-06", "--format", "json", "--config", str(config)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["total"]["usd"] == round(total, 6)
    assert f"{document['total']['usd']:.2f}" == f"{total:.2f}"
    assert document["total"]["cache_read_tokens"] == 196_000
    assert document["total"]["cache_write_tokens"] == 18_000
    assert document["total"]["reasoning_tokens"] == 400
    assert document["total"]["cache_savings_usd"] == round(2 * (SONNET_SAVED + GPT_SAVED), 6)
    assert document["unpriced"] == [
        {"name": "my-finetune-v7", "requests": 1, "input_tokens": 10, "output_tokens": 20}
    ]
    assert _main(["report", "--month", "2025-06", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "Cache read" in table and "Reasoning" in table and "180,000" in table
    assert "Model names without a price" in table and "my-finetune-v7" in table
    assert _main(["report", "--month", "2025-06", "--format", "csv", "--config", str(config)]) == 0
    csv_text = capsys.readouterr().out
    assert ",unpriced,,my-finetune-v7,1,10,20," in csv_text


async def test_unpriced_names_are_bounded_a_month(
    start_proxy: StartProxy, upstream: FakeUpstream, backend: dict[str, Any], stored: StoredState
) -> None:
    """Past 100 distinct unpriced names a month, the rest count under one entry; labels stay
    'other'; names are clipped and control characters replaced."""
    proxy = await start_proxy({**proxy_config(upstream), **backend})
    names = [f"made-up-{index}" for index in range(UNPRICED_NAMES_PER_MONTH + 30)]
    async with proxy.client() as client:
        for name in names:
            await client.chat.completions.create(model=name, messages=[])
        await client.chat.completions.create(model="x" * 500, messages=[])
    await proxy.flush_ledger()
    assert "made-up" not in proxy.exposition()
    await wait_until_async(
        lambda: proxy.value("llm_active_requests", model="other") == 0, what="no request active"
    )
    unpriced = {row.name: row.requests for row in _unpriced(stored, "2026-11")}
    assert len(unpriced) == UNPRICED_NAMES_PER_MONTH + 1
    assert unpriced[""] == 31
    assert all(len(name) <= 100 for name in unpriced)


async def test_a_ledger_written_by_0_1_gains_the_new_columns_and_keeps_its_rows(
    start_proxy: StartProxy, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """An existing ledger without the token-kind columns is migrated at start, rows intact."""
    (tmp_path / "state").mkdir()
    with sqlite3.connect(tmp_path / "state" / DATABASE_FILE) as conn:
        conn.execute(
            "CREATE TABLE ledger_usage (month TEXT NOT NULL, client TEXT NOT NULL, "
            "model TEXT NOT NULL, requests INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER "
            "NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0, usd REAL NOT NULL "
            "DEFAULT 0, PRIMARY KEY (month, client, model)) WITHOUT ROWID"
        )
        conn.execute(
            "INSERT INTO ledger_usage VALUES ('2026-11', 'team-a', 'gpt-4.1', 3, 30, 6, 1.5)"
        )
    proxy = await start_proxy()
    assert proxy.value("llm_spend_month_usd", client="team-a") == pytest.approx(1.5)
    async with proxy.client() as client:
        await client.chat.completions.create(model="gpt-4.1", messages=[])
    await proxy.close()
    with sqlite3.connect(tmp_path / "state" / DATABASE_FILE) as conn:
        [row] = conn.execute(
            "SELECT requests, input_tokens, cache_read_tokens FROM ledger_usage "
            "WHERE month = '2026-11'"
        ).fetchall()
    assert row == (4, 42, 0)
