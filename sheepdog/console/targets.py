"""The Targets page: what each target has waiting, what died, what last went out or failed."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from bridge.channels.registry import channel_of
from bridge.language import humanize_seconds
from bridge.outbox import TargetStats
from bridge.watchdog import WatchState
from sheepdog.console.site import Parts, page, parts
from sheepdog.core.postgres import describe_url

__all__ = ["targets_page"]


@dataclass(frozen=True, slots=True)
class TargetLine:
    name: str
    channel: str
    destination: str
    rate: str
    stats: TargetStats
    configured: bool = True


@dataclass(frozen=True, slots=True)
class WatchdogView:
    target: str | None
    silence: str | None
    state: WatchState
    silent: bool


def _lines(service: Parts, overview: dict[str, TargetStats]) -> list[TargetLine]:
    lines = []
    for name, target in service.bridge.config.targets.items():
        channel = channel_of(target.type)
        rate = f"{target.rate_per_minute:g}/min" if target.rate_per_minute else "no limit"
        lines.append(
            TargetLine(
                name=name,
                channel=target.type,
                destination=channel.describe_destination(target),
                rate=rate,
                stats=overview.get(name, TargetStats()),
            )
        )
    # Rows of targets a reload removed stay in the outbox until the target comes back.
    for name, stats in sorted(overview.items()):
        if name not in service.bridge.config.targets and (stats.waiting or stats.dead):
            lines.append(TargetLine(name, "?", "not in the config", "—", stats, False))
    return lines


async def targets_page(request: web.Request) -> web.Response:
    service = parts(request)
    overview = await service.bridge.outbox.overview()
    watchdog_config = service.bridge.config.watchdog
    state = await service.bridge.watchdog.store.read()
    watchdog = WatchdogView(
        target=watchdog_config.target if watchdog_config else None,
        silence=humanize_seconds(watchdog_config.silence_seconds) if watchdog_config else None,
        state=state,
        silent=state.silent,
    )
    problems = {
        name: reason
        for name, check in service.runtime.readiness_checks.items()
        if (reason := check()) is not None
    }
    url = service.config.database.url
    return page(
        request,
        "targets.html.j2",
        active="targets",
        service=service,
        lines=_lines(service, overview),
        watchdog=watchdog,
        problems=problems,
        database=describe_url(url.reveal())
        if url is not None
        else f"SQLite in {service.config.state_dir}",
        source=str(service.config.source or "built-in defaults"),
    )
