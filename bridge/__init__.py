"""The alert bridge: Alertmanager webhooks to group chats and email, through a durable outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from bridge.config import BridgeConfig
from bridge.receiver import receive_alerts
from bridge.service import BRIDGE, Bridge, PreparedBridge
from sheepdog.core.runtime import RUNTIME

__all__ = ["BRIDGE", "Bridge", "BridgeConfig", "PreparedBridge", "setup"]


def setup(app: web.Application, config: BridgeConfig) -> Bridge:
    """Add the bridge's routes, outbox and delivery workers to ``app``; returns the bridge,
    whose :meth:`Bridge.prepare` takes a reloaded config.

    Raises :class:`~sheepdog.core.errors.ConfigError` when a target's templates do not load.
    """
    runtime = app[RUNTIME]
    bridge = Bridge(runtime, config)
    app[BRIDGE] = bridge
    app.router.add_post("/alerts/{target}", receive_alerts)
    app.cleanup_ctx.append(_bridge_context)
    runtime.readiness_checks["bridge"] = bridge.readiness
    return bridge


async def _bridge_context(app: web.Application) -> AsyncIterator[None]:
    bridge = app[BRIDGE]
    await bridge.start()
    yield
    await bridge.stop()
