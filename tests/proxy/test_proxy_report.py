"""`sheepdog report`: the ledger's month in tokens and money, as a table, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from proxy.config import BillingConfig
from proxy.ledger import LedgerRow
from proxy.report import build_report, render
from sheepdog.cli import main
from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import TEAM_B_KEY, FakeClock, StartProxy

# Default list prices, USD per 1M tokens: gpt-4.1 2.00/8.00, deepseek-v3.2 0.28/0.42,
# text-embedding-3-small 0.02/0.
GPT_CALL = 1000 * 2.00 / 1e6 + 500 * 8.00 / 1e6  # 0.006
DEEPSEEK_CALL = 70_000 * 0.28 / 1e6 + 3_000 * 0.42 / 1e6  # 0.02086
EMBEDDING_CALL = 5000 * 0.02 / 1e6  # 0.0001


def write_config(tmp_path: Path, usd_rate: float = 1.0, market: float = 7.3) -> Path:
    """The same state_dir as the proxy fixtures use (tmp_path/state), as a file for the CLI."""
    path = tmp_path / "sheepdog.yaml"
    path.write_text(
        "state_dir: state\n"
        f"proxy: {{billing: {{currency: CNY, usd_rate: {usd_rate}, market_usd_rate: {market}}}}}\n"
    )
    return path


def run_main(argv: list[str]) -> int:
    """``sheepdog`` as a command: on a thread of its own, since it runs its own event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(main, argv).result()


def report(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert run_main(["report", *args]) == 0
    return capsys.readouterr().out


async def known_traffic(start_proxy: StartProxy, upstream: FakeUpstream) -> None:
    """team-a: 2 gpt-4.1 chats (one streamed) and an embedding; team-b: a deepseek chat."""
    upstream.script("gpt-4.1", prompt_tokens=1000, completion_tokens=500)
    upstream.script("deepseek-v3.2", prompt_tokens=70_000, completion_tokens=3_000)
    upstream.script("text-embedding-3-small", prompt_tokens=5000)
    proxy = await start_proxy()
    async with proxy.client() as team_a, proxy.client(TEAM_B_KEY) as team_b:
        await team_a.chat.completions.create(model="gpt-4.1", messages=[])
        stream = await team_a.chat.completions.create(model="gpt-4.1", messages=[], stream=True)
        _ = [chunk async for chunk in stream]
        await team_a.embeddings.create(model="text-embedding-3-small", input="x")
        await team_b.chat.completions.create(model="deepseek-v3.2", messages=[])
    await proxy.close()


def figures(
    usd: float, requests: int, tokens: tuple[int, int], rate: float = 1.0
) -> dict[str, Any]:
    return {
        "requests": requests,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "usd": pytest.approx(usd, abs=1e-6),
        "billed": pytest.approx(usd * rate, abs=1e-6),
        "market": pytest.approx(usd * 7.3, abs=1e-6),
        "savings": pytest.approx(usd * (7.3 - rate), abs=1e-6),
        "projected_usd": pytest.approx(usd, abs=1e-6),
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cache_savings_usd": 0.0,
    }


async def test_report_shows_known_traffic_exactly_in_every_format(
    start_proxy: StartProxy,
    upstream: FakeUpstream,
    clock: FakeClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Traffic through the proxy shows up with exact tokens and money as JSON, CSV and a table."""
    clock.current = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)  # a month that is over
    await known_traffic(start_proxy, upstream)
    config = str(write_config(tmp_path, usd_rate=1.1))

    document = json.loads(
        report(capsys, "--month", "2025-03", "--format", "json", "--config", config)
    )
    assert document["month"] == "2025-03"
    assert document["elapsed_fraction"] == 1.0
    assert (document["currency"], document["usd_rate"], document["market_usd_rate"]) == (
        "CNY",
        1.1,
        7.3,
    )
    total_usd = 2 * GPT_CALL + EMBEDDING_CALL + DEEPSEEK_CALL
    assert document["by_model"] == [
        {"model": "deepseek-v3.2", **figures(DEEPSEEK_CALL, 1, (70_000, 3_000), 1.1)},
        {"model": "gpt-4.1", **figures(2 * GPT_CALL, 2, (2000, 1000), 1.1)},
        {"model": "text-embedding-3-small", **figures(EMBEDDING_CALL, 1, (5000, 0), 1.1)},
    ]
    assert document["by_client"] == [
        {"client": "team-b", **figures(DEEPSEEK_CALL, 1, (70_000, 3_000), 1.1)},
        {"client": "team-a", **figures(2 * GPT_CALL + EMBEDDING_CALL, 3, (7000, 1000), 1.1)},
    ]
    assert [(row["client"], row["model"]) for row in document["by_client_model"]] == [
        ("team-a", "gpt-4.1"),
        ("team-a", "text-embedding-3-small"),
        ("team-b", "deepseek-v3.2"),
    ]
    assert document["total"] == figures(total_usd, 4, (77_000, 4_000), 1.1)

    rows = list(
        csv.DictReader(
            io.StringIO(report(capsys, "--month", "2025-03", "--format", "csv", "--config", config))
        )
    )
    assert list(rows[0]) == [
        "month", "group", "client", "model", "requests", "input_tokens", "output_tokens",
        "usd", "billed", "market", "savings", "projected_usd", "currency",
        "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cache_savings_usd",
    ]  # fmt: skip
    total = rows[-1]
    assert total["group"] == "total"
    assert (total["requests"], total["input_tokens"], total["output_tokens"]) == (
        "4",
        "77000",
        "4000",
    )
    assert total["usd"] == f"{total_usd:.6f}" == "0.032960"
    assert total["billed"] == f"{total_usd * 1.1:.6f}"
    assert total["savings"] == f"{total_usd * (7.3 - 1.1):.6f}"
    assert [row["group"] for row in rows] == ["model"] * 3 + ["client"] * 2 + [
        "client_model"
    ] * 3 + ["total"]

    table = report(capsys, "--month", "2025-03", "--config", config)
    assert "sheepdog usage report for 2025-03" in table
    assert "77,000" in table and "70,000" in table and "4,000" in table
    assert "Month total: 0.0330 USD, billed 0.0363 CNY, saved 0.2044 CNY." in table
    model_block = table.split("\n\n")[1].splitlines()
    assert model_block[0].startswith("Model")
    assert model_block[-1].startswith("TOTAL")
    assert len({len(line) for line in model_block}) == 1  # aligned columns


def test_projection_for_the_current_month_follows_the_pace() -> None:
    """A third into the month, the projection is three times the spend so far."""
    rows = [LedgerRow("2026-11", "team-a", "gpt-4.1", 3, 3000, 1500, 0.018)]
    billing = BillingConfig(currency="CNY", usd_rate=1.0, market_usd_rate=7.3)
    now = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)  # 10 of 30 days
    built = build_report(rows, "2026-11", billing, now)
    assert built.elapsed_fraction == pytest.approx(1 / 3)
    document = json.loads(render(built, "json"))
    assert document["total"]["projected_usd"] == pytest.approx(0.054)
    assert document["by_client"][0]["projected_usd"] == pytest.approx(0.054)
    table = render(built, "table")
    assert "33.3% elapsed" in table
    assert "Projected to month end at the current pace: 0.0540 USD" in table
    assert "Projected USD per client: team-a 0.0540." in table


async def test_a_new_month_starts_empty_and_restarts_add_up(
    start_proxy: StartProxy,
    upstream: FakeUpstream,
    clock: FakeClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each month reports only its own usage; usage before and after a restart adds up."""
    upstream.script("gpt-4.1", prompt_tokens=1000, completion_tokens=500)
    clock.current = datetime(2025, 1, 31, 23, 59, tzinfo=UTC)
    for _ in range(2):  # the second run is a restart on the same state_dir
        proxy = await start_proxy()
        async with proxy.client() as client:
            await client.chat.completions.create(model="gpt-4.1", messages=[])
        await proxy.close()
    config = str(write_config(tmp_path))

    january = json.loads(
        report(capsys, "--month", "2025-01", "--format", "json", "--config", config)
    )
    assert january["total"]["requests"] == 2
    assert january["total"]["usd"] == pytest.approx(2 * GPT_CALL)
    february = json.loads(
        report(capsys, "--month", "2025-02", "--format", "json", "--config", config)
    )
    assert february["total"]["requests"] == 0
    assert february["by_model"] == []

    clock.current = datetime(2025, 2, 1, 0, 0, 1, tzinfo=UTC)
    proxy = await start_proxy()
    async with proxy.client() as client:
        await client.chat.completions.create(model="gpt-4.1", messages=[])
    await proxy.flush_ledger()  # the report reads the ledger while sheepdog runs
    february = json.loads(
        report(capsys, "--month", "2025-02", "--format", "json", "--config", config)
    )
    assert february["total"]["requests"] == 1
    january = json.loads(
        report(capsys, "--month", "2025-01", "--format", "json", "--config", config)
    )
    assert january["total"]["requests"] == 2


@pytest.mark.parametrize("with_database", [False, True])
def test_empty_ledger_gives_an_empty_well_formed_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], with_database: bool
) -> None:
    """No ledger file, or a database without the ledger table: an empty report, not an error."""
    config = str(write_config(tmp_path))
    if with_database:
        (tmp_path / "state").mkdir()
        with sqlite3.connect(tmp_path / "state" / "sheepdog.db") as conn:
            conn.execute("CREATE TABLE outbox (id INTEGER)")
    document = json.loads(
        report(capsys, "--month", "2026-10", "--format", "json", "--config", config)
    )
    assert document["by_model"] == document["by_client"] == document["by_client_model"] == []
    assert document["total"] == {
        "requests": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "usd": 0.0,
        "billed": 0.0,
        "market": 0.0,
        "savings": 0.0,
        "projected_usd": 0.0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cache_savings_usd": 0.0,
    }
    rows = list(
        csv.DictReader(
            io.StringIO(report(capsys, "--month", "2026-10", "--format", "csv", "--config", config))
        )
    )
    assert [row["group"] for row in rows] == ["total"]
    assert "No usage recorded for 2026-10." in report(
        capsys, "--month", "2026-10", "--config", config
    )
    assert (tmp_path / "state").exists() == with_database  # the report never creates anything


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "march", "2026-00", "26-11"])
def test_bad_month_is_a_clear_error_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], month: str
) -> None:
    """A --month that is not YYYY-MM exits 2 and says what is expected."""
    with pytest.raises(SystemExit) as exited:
        run_main(["report", "--month", month, "--config", str(write_config(tmp_path))])
    assert exited.value.code == 2
    assert (
        f"argument --month: {month!r} is not a month: expected YYYY-MM" in capsys.readouterr().err
    )
