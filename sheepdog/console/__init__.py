"""The web console at ``/ui/``: targets, dead letters, a template playground, the month's spend.

Server-rendered (Jinja2, one stylesheet, no script, nothing from elsewhere), behind the same
``auth`` as ``/-/reload`` (:mod:`sheepdog.console.security`). It reads both halves through
their public read functions — the outbox's overview and dead letters, the rendering
``sheepdog render`` prints, the ledger and the report ``sheepdog report`` builds — so it belongs
to the composition root. It keeps no state of its own: any worker or replica answers any
request, a form made by another included.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from sheepdog.console.dead_letters import dead_letters_page, retry
from sheepdog.console.playground import playground_page, render_pasted
from sheepdog.console.site import CONSOLE, Console, Handler, guarded, stylesheet
from sheepdog.console.spend import spend_csv, spend_page
from sheepdog.console.targets import targets_page

__all__ = ["PREFIX", "setup_console"]

PREFIX: Final = "/ui/"


def setup_console(app: web.Application) -> None:
    """Serve the console under ``/ui/`` of ``app``, which holds the proxy and the bridge.

    Its routes are the app's own, each behind :func:`guard`, rather than a sub-application's:
    aiohttp before 3.10.11 resolves a sub-application's prefix through ``request.url``, which
    today's yarl refuses to build from a ``Host`` with a port, so every console page was a 500
    at the aiohttp floor."""
    app[CONSOLE] = Console()
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "", targets_page),
        ("GET", "dead-letters", dead_letters_page),
        ("POST", "dead-letters/retry", retry),
        ("GET", "playground", playground_page),
        ("POST", "playground", render_pasted),
        ("GET", "spend", spend_page),
        ("GET", "spend.csv", spend_csv),
        ("GET", "console.css", stylesheet),
        ("GET", "/ui", _not_found),  # the guard leads it to /ui/
        ("*", "{anything:.*}", _not_found),  # after credentials: a 404 page, or the 401
    ]
    for method, path, handler in routes:
        app.router.add_route(
            method, path if path.startswith("/") else PREFIX + path, guarded(handler)
        )
    app.router.add_get("/", _to_console)


async def _not_found(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text="There is no such console page.")


async def _to_console(request: web.Request) -> web.Response:
    raise web.HTTPFound(PREFIX)
