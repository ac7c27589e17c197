"""``sheepdog report``: a month of the spend ledger, per model and per client, in money.

For each model and each client (and each client's use of each model): requests, input and output
tokens, of them cache reads, cache writes and reasoning, USD at list price, what the cache reads
saved, what the relay bills for it in its currency (``usd × usd_rate``), what
the same usage costs at the market rate (``usd × market_usd_rate``), and the savings between the
two; totals; the names clients sent that had no price (metered as ``other``), with their request
counts, so an operator knows what to price; and the month-end projection at the current pace
(for the current month: spend divided by the elapsed fraction of the month; for a past month,
its total).

The ledger is read from whichever database the config names (SQLite in ``state_dir``, or
PostgreSQL), so a report can be made while ``sheepdog serve`` runs, on any host that reaches the
database; up to the last second of each process's spend may not be written yet (see
:mod:`proxy.ledger`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from proxy.config import BillingConfig, ProxyConfig
from proxy.ledger import LedgerRow, UnpricedRow, month_of, store_for
from sheepdog.core.clock import SystemClock
from sheepdog.core.db import Database, DatabaseUnavailable

__all__ = [
    "FORMATS",
    "Report",
    "Totals",
    "build_report",
    "parse_month",
    "read_ledger",
    "render",
    "report_command",
]

FORMATS: Final = ("table", "csv", "json")
_MONTH: Final = re.compile(r"^(\d{4})-(\d{2})$")
_DECIMALS: Final = 6  # USD and currency amounts in CSV and JSON: micro-units, no float noise


def parse_month(text: str) -> str:
    """``YYYY-MM`` as given, if it is a real month; else ValueError saying what is expected."""
    match = _MONTH.match(text.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1:
        raise ValueError(f"{text!r} is not a month: expected YYYY-MM, e.g. 2026-11")
    return match.group(0)


def _month_bounds(month: str) -> tuple[datetime, datetime]:
    year, number = (int(part) for part in month.split("-"))
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) if number == 12 else start.replace(month=number + 1)
    return start, end


async def read_ledger(db: Database, month: str) -> tuple[list[LedgerRow], list[UnpricedRow]]:
    """The ledger's rows and unpriced names for ``month``; none if there is no SQLite file yet
    (a report creates none). Closes ``db``."""
    try:
        if db.kind == "sqlite" and not Path(db.where).is_file():  # noqa: ASYNC240 - one stat
            return [], []
        store = store_for(db)
        return await store.read_month(month), await store.read_unpriced(month)
    finally:
        await db.close()


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_savings_usd: float = 0.0

    def plus(self, row: LedgerRow) -> Totals:
        return Totals(
            self.requests + row.requests,
            self.input_tokens + row.input_tokens,
            self.output_tokens + row.output_tokens,
            self.usd + row.usd,
            self.cache_read_tokens + row.cache_read_tokens,
            self.cache_write_tokens + row.cache_write_tokens,
            self.reasoning_tokens + row.reasoning_tokens,
            self.cache_savings_usd + row.cache_savings_usd,
        )


@dataclass(frozen=True, slots=True)
class Report:
    month: str
    billing: BillingConfig
    elapsed_fraction: float  # of the month, at the time of the report: 1.0 once it is over
    by_model: dict[str, Totals]
    by_client: dict[str, Totals]
    by_client_model: dict[tuple[str, str], Totals]
    total: Totals
    generated_at: datetime
    unpriced: tuple[UnpricedRow, ...] = ()

    def billed(self, usd: float) -> float:
        return usd * self.billing.usd_rate

    def market(self, usd: float) -> float:
        return usd * self.billing.market_usd_rate

    def savings(self, usd: float) -> float:
        return self.market(usd) - self.billed(usd)

    def projected(self, usd: float) -> float:
        """USD by the end of the month at the pace so far; the total itself once it is over."""
        if 0.0 < self.elapsed_fraction < 1.0:
            return usd / self.elapsed_fraction
        return usd


def build_report(
    rows: Iterable[LedgerRow],
    month: str,
    billing: BillingConfig,
    now: datetime,
    unpriced: Iterable[UnpricedRow] = (),
) -> Report:
    """Add up ``month``'s ledger rows; ``now`` decides how much of the month has passed."""
    start, end = _month_bounds(month)
    if now >= end:
        elapsed = 1.0
    elif now <= start:
        elapsed = 0.0
    else:
        elapsed = (now - start) / (end - start)
    by_model: dict[str, Totals] = {}
    by_client: dict[str, Totals] = {}
    by_client_model: dict[tuple[str, str], Totals] = {}
    total = Totals()
    for row in rows:
        by_model[row.model] = by_model.get(row.model, Totals()).plus(row)
        by_client[row.client] = by_client.get(row.client, Totals()).plus(row)
        key = (row.client, row.model)
        by_client_model[key] = by_client_model.get(key, Totals()).plus(row)
        total = total.plus(row)
    return Report(
        month=month,
        billing=billing,
        elapsed_fraction=elapsed,
        by_model=dict(sorted(by_model.items(), key=lambda item: (-item[1].usd, item[0]))),
        by_client=dict(sorted(by_client.items(), key=lambda item: (-item[1].usd, item[0]))),
        by_client_model=dict(sorted(by_client_model.items())),
        total=total,
        generated_at=now,
        unpriced=tuple(unpriced),
    )


def render(report: Report, output_format: str) -> str:
    """The report as ``table`` (for people), ``csv`` or ``json`` (for spreadsheets and scripts)."""
    if output_format == "csv":
        return _csv(report)
    if output_format == "json":
        return _json(report)
    return _table(report)


# --------------------------------------------------------------------------------------------
# CSV and JSON: plain numbers, stable keys, one header row.


def _money(value: float) -> float:
    return round(value, _DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def _figures(report: Report, totals: Totals) -> dict[str, Any]:
    return {
        "requests": totals.requests,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "usd": _money(totals.usd),
        "billed": _money(report.billed(totals.usd)),
        "market": _money(report.market(totals.usd)),
        "savings": _money(report.savings(totals.usd)),
        "projected_usd": _money(report.projected(totals.usd)),
        "cache_read_tokens": totals.cache_read_tokens,
        "cache_write_tokens": totals.cache_write_tokens,
        "reasoning_tokens": totals.reasoning_tokens,
        "cache_savings_usd": _money(totals.cache_savings_usd),
    }


_CSV_COLUMNS: Final = (
    "month",
    "group",
    "client",
    "model",
    "requests",
    "input_tokens",
    "output_tokens",
    "usd",
    "billed",
    "market",
    "savings",
    "projected_usd",
    "currency",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cache_savings_usd",
)


def _csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()

    def row(group: str, client: str, model: str, totals: Totals) -> None:
        writer.writerow(
            {
                "month": report.month,
                "group": group,
                "client": client,
                "model": model,
                **{key: _plain(value) for key, value in _figures(report, totals).items()},
                "currency": report.billing.currency,
            }
        )

    for model, totals in report.by_model.items():
        row("model", "", model, totals)
    for client, totals in report.by_client.items():
        row("client", client, "", totals)
    for (client, model), totals in report.by_client_model.items():
        row("client_model", client, model, totals)
    row("total", "", "", report.total)
    for unpriced in report.unpriced:
        writer.writerow(
            {
                "month": report.month,
                "group": "unpriced",
                "client": "",
                "model": unpriced.name,
                "requests": unpriced.requests,
                "input_tokens": unpriced.input_tokens,
                "output_tokens": unpriced.output_tokens,
                "currency": report.billing.currency,
            }
        )
    return out.getvalue()


def _plain(value: int | float) -> str:
    # No exponent (1e-06) and no thousands separators: what every spreadsheet reads as a number.
    return str(value) if isinstance(value, int) else f"{value:.{_DECIMALS}f}"


def _json(report: Report) -> str:
    billing = report.billing
    document = {
        "month": report.month,
        "generated_at": report.generated_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "elapsed_fraction": round(report.elapsed_fraction, 6),
        "currency": billing.currency,
        "usd_rate": billing.usd_rate,
        "market_usd_rate": billing.market_usd_rate,
        "by_model": [
            {"model": model, **_figures(report, totals)}
            for model, totals in report.by_model.items()
        ],
        "by_client": [
            {"client": client, **_figures(report, totals)}
            for client, totals in report.by_client.items()
        ],
        "by_client_model": [
            {"client": client, "model": model, **_figures(report, totals)}
            for (client, model), totals in report.by_client_model.items()
        ],
        "total": _figures(report, report.total),
        "unpriced": [
            {
                "name": row.name,
                "requests": row.requests,
                "input_tokens": row.input_tokens,
                "output_tokens": row.output_tokens,
            }
            for row in report.unpriced
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------
# Table: aligned columns, thousands separators.


def _count(value: int) -> str:
    return f"{value:,}"


def _amount(value: float) -> str:
    return f"{value:,.4f}"


def _table_rows(report: Report, names: dict[str, Totals]) -> list[list[str]]:
    return [
        [
            name,
            _count(totals.requests),
            _count(totals.input_tokens),
            _count(totals.output_tokens),
            _count(totals.cache_read_tokens),
            _count(totals.cache_write_tokens),
            _count(totals.reasoning_tokens),
            _amount(totals.usd),
            _amount(totals.cache_savings_usd),
            _amount(report.billed(totals.usd)),
            _amount(report.market(totals.usd)),
            _amount(report.savings(totals.usd)),
        ]
        for name, totals in names.items()
    ]


def _aligned(header: list[str], rows: list[list[str]], total: list[str]) -> list[str]:
    widths = [max(len(line[i]) for line in (header, *rows, total)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    body = [*(line(row) for row in rows), rule] if rows else []
    return [line(header), rule, *body, line(total)]


def _table(report: Report) -> str:
    currency = report.billing.currency
    billing = report.billing
    lines = [f"sheepdog usage report for {report.month} (calendar month, UTC)"]
    if report.elapsed_fraction < 1.0:
        lines.append(
            f"Month in progress: {report.elapsed_fraction:.1%} elapsed. "
            "Up to the last second of spend may not be in the ledger yet."
        )
    lines.append(
        f"The relay bills {billing.usd_rate:g} {currency} per USD of list price; "
        f"the market rate is {billing.market_usd_rate:g} {currency}."
    )
    money = [
        "USD (list)",
        "Cache saved USD",
        f"Billed {currency}",
        f"Market {currency}",
        f"Saved {currency}",
    ]
    counts = ["Requests", "Input tokens", "Output tokens", "Cache read", "Cache write", "Reasoning"]
    total = _table_rows(report, {"TOTAL": report.total})[0]
    for title, names in (("Model", report.by_model), ("Client", report.by_client)):
        lines.append("")
        lines.extend(_aligned([title, *counts, *money], _table_rows(report, names), total))
    if not report.by_model:
        lines.extend(["", f"No usage recorded for {report.month}."])
    if report.unpriced:
        lines.extend(["", "Model names without a price (metered as 'other', at no cost):"])
        rows = [
            [
                row.name or "(other names, past the first 100)",
                _count(row.requests),
                _count(row.input_tokens),
                _count(row.output_tokens),
            ]
            for row in report.unpriced
        ]
        header = ["Name", "Requests", "Input tokens", "Output tokens"]
        widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]
        for cells in (header, *rows):
            lines.append(
                "  ".join(
                    [cells[0].ljust(widths[0])]
                    + [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
                ).rstrip()
            )
    usd = report.projected(report.total.usd)
    lines.append("")
    if 0.0 < report.elapsed_fraction < 1.0:
        lines.append(
            f"Projected to month end at the current pace: {_amount(usd)} USD, billed "
            f"{_amount(report.billed(usd))} {currency} "
            f"(market {_amount(report.market(usd))} {currency}, "
            f"saved {_amount(report.savings(usd))} {currency})."
        )
        by_client = ", ".join(
            f"{client} {_amount(report.projected(totals.usd))}"
            for client, totals in report.by_client.items()
        )
        if by_client:
            lines.append(f"Projected USD per client: {by_client}.")
    else:
        lines.append(
            f"Month total: {_amount(usd)} USD, billed {_amount(report.billed(usd))} "
            f"{currency}, saved {_amount(report.savings(usd))} {currency}."
        )
    return "\n".join(lines) + "\n"


def report_command(config: ProxyConfig, db: Database, month: str | None, output_format: str) -> int:
    """``sheepdog report``: print ``month`` (default: the current one) of the ledger in ``db``."""
    now = SystemClock().now()
    month = month or month_of(now)
    try:
        rows, unpriced = asyncio.run(read_ledger(db, month))
    except DatabaseUnavailable as exc:
        print(f"sheepdog: cannot read the spend ledger {db.where}: {exc}", file=sys.stderr)
        return 1
    report = build_report(rows, month, config.billing, now, unpriced)
    sys.stdout.write(render(report, output_format))
    return 0
