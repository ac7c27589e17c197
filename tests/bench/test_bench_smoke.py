"""The benchmark harness runs end to end in quick mode and reports well-formed tables.

Only the shape of the report is checked, never a timing: the figures depend on the machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _tables(markdown: str) -> list[list[str]]:
    tables: list[list[str]] = []
    current: list[str] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_quick_run_writes_well_formed_report(tmp_path: Path) -> None:
    """`python -m bench --quick` starts its servers, measures, and writes markdown tables."""
    out = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--phases",
            "relay,stream",
            "--no-nginx",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text()
    assert report == done.stdout.rstrip("\n") + "\n"
    for heading in ("## Machine", "## Targets", "## Non-streaming relay", "## Streaming"):
        assert heading in report
    tables = _tables(report)
    assert len(tables) >= 5
    for table in tables:
        header_cells = table[0].count("|")
        assert set(table[1].replace("|", "")) == {"-"}, table[1]
        assert all(row.count("|") == header_cells for row in table), table
        assert len(table) >= 3, table
    relay = next(t for t in tables if "req/s" in t[0])
    paths = {row.split("|")[1].strip() for row in relay[2:]}
    assert {"direct to upstream", "aiohttp pass-through"} <= paths
    for row in relay[2:]:
        rate = row.split("|")[3].strip().replace(",", "")
        assert float(rate) > 0, row
    # The Messages API streams too, through sheepdog and the pass-through: the upstream counted
    # their chunks, every stream ended with message_stop after its text.
    streams = next(t for t in tables if "chunks/s" in t[0])
    ttft = next(t for t in tables if "TTFT p50" in t[0])
    for path in ("sheepdog, Messages API", "aiohttp pass-through, Messages API"):
        load = _cells(streams, path)
        assert float(load["chunks/s"].replace(",", "")) > 0, load
        assert (load["errors"], load["CPU × pass-through"] != "—") == ("0", True), load
        first = _cells(ttft, path)
        assert (first["streams"], first["problems"]) == ("10", "—"), first


def _cells(table: list[str], path: str) -> dict[str, str]:
    """The row of ``path`` in a markdown table, by column name."""
    header = [cell.strip() for cell in table[0].split("|")]
    for row in table[2:]:
        cells = [cell.strip() for cell in row.split("|")]
        if cells[1] == path:
            return dict(zip(header, cells, strict=True))
    raise AssertionError(f"no row {path!r} in {table[0]}")
