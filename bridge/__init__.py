"""The alert bridge: Alertmanager webhooks to WeChat Work, Slack and email, through an outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from bridge.receiver import receive_alerts
from bridge.service import BRIDGE, Bridge
from sheepdog.core.runtime import RUNTIME

__all__ = ["BRIDGE", "Bridge", "setup"]


def setup(app: web.Application) -> None:
    """Add the bridge's routes, outbox and delivery workers to ``app``.

    Raises :class:`~sheepdog.core.errors.ConfigError` when a target's templates do not load.
    """
    runtime = app[RUNTIME]
    bridge = Bridge(runtime)
    app[BRIDGE] = bridge
    app.router.add_post("/alerts/{target}", receive_alerts)
    app.cleanup_ctx.append(_bridge_context)
    runtime.reload_hooks.append(bridge)
    runtime.readiness_checks["bridge"] = bridge.readiness


async def _bridge_context(app: web.Application) -> AsyncIterator[None]:
    bridge = app[BRIDGE]
    await bridge.start()
    yield
    await bridge.stop()
