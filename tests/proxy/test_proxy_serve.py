"""A real `sheepdog serve` process in front of the local upstream, driven by the openai SDK."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sheepdog.core.db import DATABASE_FILE
from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import TEAM_A_KEY, UPSTREAM_KEY
from tests.support.ports import free_port
from tests.support.processes import SheepdogProcess


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


@pytest.mark.slow
async def test_serve_relays_and_meters_for_the_openai_sdk(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Chat, a stream and embeddings through `sheepdog serve`; /metrics and the ledger agree."""
    upstream.script("gpt-4.1", prompt_tokens=1000, completion_tokens=500)
    upstream.script("text-embedding-3-small", prompt_tokens=400)
    (tmp_path / "team-a.key").write_text(TEAM_A_KEY + "\n")
    port = free_port()
    config = tmp_path / "sheepdog.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        "state_dir: state\n"
        "log_format: json\n"
        "proxy:\n"
        f"  upstream: {{base_url: '{upstream.base_url}', api_key: '${{UPSTREAM_KEY}}'}}\n"
        "  clients: [{name: team-a, key_file: team-a.key, monthly_budget_usd: 50}]\n"
    )
    process = SheepdogProcess(config, port, tmp_path, env={"UPSTREAM_KEY": UPSTREAM_KEY})
    await asyncio.to_thread(process.start)
    try:

        def use_the_sdk() -> tuple[str, str, int]:
            with openai.OpenAI(
                base_url=f"{process.base_url}/v1", api_key=TEAM_A_KEY, max_retries=0
            ) as client:
                chat = client.chat.completions.create(model="gpt-4.1", messages=[])
                stream = client.chat.completions.create(model="gpt-4.1", messages=[], stream=True)
                streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
                embedding = client.embeddings.create(model="text-embedding-3-small", input="x")
                return chat.choices[0].message.content or "", streamed, len(embedding.data)

        assert await asyncio.to_thread(use_the_sdk) == ("Hello, world!", "Hello, world!", 1)
        status, exposition = await asyncio.to_thread(process.get, "/metrics")
        assert status == 200
    finally:
        returncode = await asyncio.to_thread(process.stop)
    assert returncode == 0

    values = samples(exposition)

    def value(name: str, **labels: str) -> float | None:
        return values.get((name, frozenset(labels.items())))

    a = {"client": "team-a"}
    gpt = {"model": "gpt-4.1"}
    assert value("llm_requests_total", **gpt, route="chat", code="200", **a) == 2
    assert value("llm_tokens_total", **gpt, type="input", **a) == 2000
    assert value("llm_tokens_total", **gpt, type="output", **a) == 1000
    assert value("llm_cost_usd_total", **gpt, **a) == pytest.approx(0.012)
    assert value("llm_tokens_total", model="text-embedding-3-small", type="input", **a) == 400
    assert value("llm_time_to_first_token_seconds_count", **gpt) == 1
    assert value("llm_active_requests", **gpt) == 0
    assert value("llm_budget_usd", **a) == 50
    assert value("llm_spend_month_usd", **a) == pytest.approx(0.012 + 400 * 0.02 / 1e6)
    assert UPSTREAM_KEY not in process.output and TEAM_A_KEY not in process.output
    assert TEAM_A_KEY not in str([received.headers for received in upstream.received])

    # SIGTERM wrote the ledger before exiting.
    with sqlite3.connect(tmp_path / "state" / DATABASE_FILE) as conn:
        rows = conn.execute(
            "SELECT model, SUM(requests) FROM ledger_usage GROUP BY model ORDER BY model"
        ).fetchall()
    assert rows == [("gpt-4.1", 2), ("text-embedding-3-small", 1)]
