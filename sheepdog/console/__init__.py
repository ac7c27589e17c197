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
from sheepdog.console.site import CONSOLE, Console, guard, stylesheet
from sheepdog.console.spend import spend_csv, spend_page
from sheepdog.console.targets import targets_page

__all__ = ["PREFIX", "setup_console"]

PREFIX: Final = "/ui/"


def setup_console(app: web.Application) -> None:
    """Serve the console under ``/ui/`` of ``app``, which holds the proxy and the bridge."""
    console = web.Application(middlewares=[guard])
    console[CONSOLE] = Console()
    console.router.add_get("/", targets_page)
    console.router.add_get("/dead-letters", dead_letters_page)
    console.router.add_post("/dead-letters/retry", retry)
    console.router.add_get("/playground", playground_page)
    console.router.add_post("/playground", render_pasted)
    console.router.add_get("/spend", spend_page)
    console.router.add_get("/spend.csv", spend_csv)
    console.router.add_get("/console.css", stylesheet)
    app.add_subapp(PREFIX, console)
    app.router.add_get("/", _to_console)


async def _to_console(request: web.Request) -> web.Response:
    raise web.HTTPFound(PREFIX)
