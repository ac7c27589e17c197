"""The Dead letters page: what could not be delivered and why, and sending it again."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from bridge.outbox import Row
from sheepdog.console.site import field, page, parts

__all__ = ["dead_letters_page", "retry"]

SHOWN: Final = 200
"""Dead letters listed on the page (oldest first); Retry all sends every one."""
_IDS: Final = re.compile(r"^\d{1,18}(,\d{1,18}){0,49}$")


@dataclass(frozen=True, slots=True)
class Letter:
    row: Row
    summary: str
    severity: str


def _summary(payload: dict[str, Any] | None) -> tuple[str, str]:
    """The first alert's summary (or description) and the group's severity."""
    if payload is None:
        return "", ""
    alerts = payload.get("alerts") or [{}]
    annotations = alerts[0].get("annotations") or {}
    summary = str(annotations.get("summary") or annotations.get("description") or "")
    severity = str((payload.get("commonLabels") or {}).get("severity") or "")
    return summary[:300], severity[:40]


def _ids(text: str | None) -> list[int]:
    return [int(part) for part in text.split(",")] if text and _IDS.match(text) else []


async def dead_letters_page(request: web.Request) -> web.Response:
    service = parts(request)
    rows = await service.bridge.outbox.dead_letters()
    shown = rows[:SHOWN]
    payloads = await service.bridge.outbox.payloads([row.id for row in shown])
    letters = [Letter(row, *_summary(payloads.get(row.id))) for row in shown]
    query = request.query
    queued = query.get("queued", "")
    result = None
    if queued.isdigit() or "refused" in query:
        result = {
            "queued": int(queued) if queued.isdigit() else 0,
            "ids": _ids(query.get("ids")),
            "refused": _ids(query.get("refused")),
        }
    return page(
        request,
        "dead_letters.html.j2",
        active="dead-letters",
        service=service,
        letters=letters,
        total=len(rows),
        result=result,
    )


async def retry(request: web.Request) -> web.Response:
    """Retry one dead letter (``id``) or all (``all``): ``sheepdog outbox retry``, then the
    workers are woken. Answers with a redirect to the page, which shows the result."""
    service = parts(request)
    one = field(request, "id")
    if field(request, "all") is not None:
        ids = None
    elif one is not None and one.isdigit() and len(one) <= 18:
        ids = [int(one)]
    else:
        raise web.HTTPBadRequest(text="Say which dead letter to retry (id), or all.")
    queued, refused = await service.bridge.retry_dead(ids)
    location = f"/ui/dead-letters?queued={len(queued)}"
    if queued:
        location += "&ids=" + ",".join(map(str, queued[:50]))
    if refused:
        location += "&refused=" + ",".join(map(str, list(refused)[:50]))
    raise web.HTTPSeeOther(location)
