"""``POST /alerts/{target}``: accept an Alertmanager webhook, store it, answer.

Alertmanager retries only 5xx and network errors, so the answer decides whether an alert can be
lost: 200 only once the notification is in the outbox on disk, 503 when it could not be stored,
and a 4xx only for what no retry would fix (bad credentials, unknown target, too big, not an
Alertmanager payload).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from bridge.payload import PayloadError, parse_json, validate_payload
from bridge.service import BRIDGE
from sheepdog.core.auth import is_authorized, unauthorized
from sheepdog.core.db import DatabaseUnavailable
from sheepdog.core.runtime import RUNTIME

__all__ = ["receive_alerts"]

log = logging.getLogger("sheepdog.bridge.receiver")


async def receive_alerts(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    bridge = request.app[BRIDGE]
    if not is_authorized(request, runtime.settings.auth):
        return unauthorized()
    config = bridge.config
    target = request.match_info["target"]
    if target not in config.targets:
        known = ", ".join(sorted(config.targets))
        return _error(404, f"unknown target {target!r} (configured: {known})")
    limit = config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _error(413, f"body over the {limit}-byte limit (bridge.max_body_bytes)")
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            return _error(413, f"body over the {limit}-byte limit (bridge.max_body_bytes)")
    try:
        payload = validate_payload(parse_json(bytes(body)))
    except PayloadError as exc:
        log.warning(
            "rejected a payload that is not an Alertmanager v4 webhook",
            extra={"target": target, "field": exc.field, "reason": exc.message},
        )
        return _error(400, str(exc))

    # Shielded: if Alertmanager hangs up now, the row is still written (and its retry is then
    # recognised as a duplicate) rather than left half-done.
    store = asyncio.ensure_future(bridge.accept(target, payload))
    try:
        row_id, is_new = await asyncio.shield(store)
    except DatabaseUnavailable as exc:
        log.error(
            "could not store a notification; answering 503 so Alertmanager retries",
            extra={"target": target, "reason": str(exc)},
        )
        return _error(503, "could not store the notification; retry later")
    log.info(
        "notification accepted" if is_new else "repeated notification recognised",
        extra={
            "target": target,
            "id": row_id,
            "status": payload["status"],
            "alerts": len(payload["alerts"]),
        },
    )
    return web.json_response({"status": "accepted" if is_new else "duplicate", "id": row_id})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
