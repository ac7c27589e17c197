"""The alert bridge: Alertmanager webhooks to WeChat Work, Slack and email, through an outbox."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add the bridge's routes, outbox and delivery workers to ``app``."""
