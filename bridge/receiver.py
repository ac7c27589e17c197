"""``POST /alerts/{target}``: accept an Alertmanager webhook, store it, answer.

Alertmanager retries only 5xx and network errors, so the answer decides whether an alert can be
lost: 200 only once the notification is in the outbox on disk, 503 when it could not be stored,
and a 4xx only for what no retry would fix (bad credentials, unknown target, too big, not an
Alertmanager payload).

``POST /alerts/watchdog`` (the reserved target) is the watchdog's heartbeat: the same
credentials, limits, validation and answers, but what is stored is the heartbeat
(:mod:`bridge.watchdog`), not a notification.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from bridge.config import WATCHDOG_TARGET
from bridge.payload import Payload, PayloadError, parse_json, validate_payload
from bridge.service import BRIDGE, Bridge
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
    if target not in config.targets and target != WATCHDOG_TARGET:
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
    if target == WATCHDOG_TARGET:
        return await _heartbeat(bridge, payload)

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


async def _heartbeat(bridge: Bridge, payload: Payload) -> web.Response:
    # A resolved Watchdog is the opposite of a heartbeat: Prometheus stopped renewing it.
    if not any(alert["status"] == "firing" for alert in payload["alerts"]):
        log.warning(
            "a resolved notification at /alerts/watchdog is no heartbeat: Prometheus stopped "
            "sending Watchdog (set send_resolved: false on Alertmanager's watchdog receiver)",
            extra={"target": WATCHDOG_TARGET, "alerts": len(payload["alerts"])},
        )
        return web.json_response({"status": "ignored", "reason": "resolved, not a heartbeat"})
    store = asyncio.ensure_future(bridge.watchdog.heartbeat())
    try:
        state = await asyncio.shield(store)
    except DatabaseUnavailable as exc:
        log.error(
            "could not store a Watchdog heartbeat; answering 503 so Alertmanager retries",
            extra={"target": WATCHDOG_TARGET, "reason": str(exc)},
        )
        return _error(503, "could not store the heartbeat; retry later")
    log.debug("Watchdog heartbeat", extra={"target": WATCHDOG_TARGET})
    return web.json_response({"status": "heartbeat", "at": state.last_heartbeat_at})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
