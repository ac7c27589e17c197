"""The Spend page: the month per client against its budget, per model, the names without a
price, and the CSV ``sheepdog report --format csv`` makes, all from the spend ledger."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from proxy.ledger import month_of
from proxy.report import Report, Totals, build_report, parse_month, render
from sheepdog.console.site import Parts, page, parts, utc_now

__all__ = ["spend_csv", "spend_page"]


@dataclass(frozen=True, slots=True)
class ClientLine:
    name: str
    totals: Totals
    budget: float | None
    configured: bool

    @property
    def used(self) -> float | None:
        """The share of the budget spent (above 1 when over it)."""
        if self.budget is None:
            return None
        if self.budget == 0:
            return 1.0 if self.totals.usd > 0 else 0.0
        return self.totals.usd / self.budget


def _month(request: web.Request) -> str:
    text = request.query.get("month")
    if text is None:
        return month_of(utc_now(request))
    try:
        return parse_month(text[:20])
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


def _neighbours(month: str) -> tuple[str, str]:
    year, number = (int(part) for part in month.split("-"))
    before = f"{year - 1:04d}-12" if number == 1 else f"{year:04d}-{number - 1:02d}"
    after = f"{year + 1:04d}-01" if number == 12 else f"{year:04d}-{number + 1:02d}"
    return before, after


async def _report(request: web.Request, service: Parts, month: str) -> Report:
    ledger = service.relay.ledger
    rows = await ledger.read_month(month)
    unpriced = await ledger.read_unpriced(month)
    return build_report(rows, month, service.config.proxy.billing, utc_now(request), unpriced)


def _clients(service: Parts, report: Report) -> list[ClientLine]:
    lines = [
        ClientLine(
            client.name,
            report.by_client.get(client.name, Totals()),
            client.monthly_budget_usd,
            True,
        )
        for client in service.config.proxy.clients
    ]
    configured = {line.name for line in lines}
    lines += [
        ClientLine(name, totals, None, False)
        for name, totals in report.by_client.items()
        if name not in configured
    ]
    return sorted(lines, key=lambda line: (-line.totals.usd, line.name))


async def spend_page(request: web.Request) -> web.Response:
    service = parts(request)
    month = _month(request)
    report = await _report(request, service, month)
    before, after = _neighbours(month)
    current = month_of(utc_now(request))
    return page(
        request,
        "spend.html.j2",
        active="spend",
        report=report,
        clients=_clients(service, report),
        month=month,
        before=before,
        after=after if after <= current else None,
        in_progress=0.0 < report.elapsed_fraction < 1.0,
    )


async def spend_csv(request: web.Request) -> web.Response:
    """The month as ``sheepdog report --month M --format csv`` prints it."""
    service = parts(request)
    month = _month(request)
    report = await _report(request, service, month)
    return web.Response(
        text=render(report, "csv"),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="sheepdog-usage-{month}.csv"'},
    )
