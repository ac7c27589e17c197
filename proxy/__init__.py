"""The relay proxy: OpenAI-compatible, metered, guarded by client keys and budgets."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add the proxy's routes and resources to ``app``."""
