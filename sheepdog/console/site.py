"""What every console page shares: templates, the guard in front of every request, formatting."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import hdrs, web
from multidict import MultiDict, MultiDictProxy

from bridge import BRIDGE, Bridge
from bridge.language import humanize_seconds
from proxy import RELAY
from proxy.relay import Relay
from sheepdog import __version__
from sheepdog.config import Config
from sheepdog.console.security import (
    CSRF_FIELD,
    SECURITY_HEADERS,
    csrf_token,
    is_authorized,
    refusal_of_post,
)
from sheepdog.core.db import DatabaseUnavailable
from sheepdog.core.runtime import RUNTIME, Runtime

__all__ = [
    "CONSOLE",
    "FORM",
    "Console",
    "Handler",
    "Parts",
    "field",
    "guard",
    "guarded",
    "page",
    "parts",
]

log = logging.getLogger("sheepdog.console")

_HERE: Final = Path(__file__).parent
FORM: Final[ContextVar[MultiDictProxy[str] | None]] = ContextVar(
    "sheepdog.console.form", default=None
)
"""The POST's fields while its handler runs, read within the size limit and checked by
:func:`guard`. A context variable rather than request storage: aiohttp's typed
``web.RequestKey`` is newer than its floor (3.9.1), and newer releases warn on a string key."""
_FORM_OVERHEAD_BYTES: Final = 64 * 1024
_MAX_FIELDS: Final = 100
NAV: Final = (
    ("targets", "Targets", "/ui/"),
    ("dead-letters", "Dead letters", "/ui/dead-letters"),
    ("playground", "Playground", "/ui/playground"),
    ("spend", "Spend", "/ui/spend"),
)


class Console:
    """The templates, compiled once, and the stylesheet."""

    def __init__(self) -> None:
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.stylesheet = (_HERE / "static" / "console.css").read_bytes()
        self.stylesheet_version = hashlib.sha256(self.stylesheet).hexdigest()[:12]


CONSOLE: Final = web.AppKey("sheepdog.console", Console)


@dataclass(frozen=True, slots=True)
class Parts:
    """The running service, as a console page reads it."""

    runtime: Runtime
    config: Config
    bridge: Bridge
    relay: Relay

    @property
    def zone(self) -> tzinfo:
        return ZoneInfo(self.bridge.config.timezone)

    def now(self) -> float:
        return self.runtime.clock.now().timestamp()

    def when(self, moment: float | None) -> str:
        """``2026-11-26 21:57:39`` in the bridge's zone, or an em dash."""
        if moment is None:
            return "—"
        return datetime.fromtimestamp(moment, self.zone).strftime("%Y-%m-%d %H:%M:%S")

    def ago(self, moment: float | None) -> str:
        """``5m 2s ago``, or an em dash."""
        if moment is None:
            return "—"
        seconds = self.now() - moment
        return f"{humanize_seconds(seconds)} ago" if seconds >= 1 else "just now"


def parts(request: web.Request) -> Parts:
    runtime = request.config_dict[RUNTIME]
    return Parts(
        runtime=runtime,
        config=cast(Config, runtime.settings),
        bridge=request.config_dict[BRIDGE],
        relay=request.config_dict[RELAY],
    )


def page(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """``template`` rendered with what every page shows (navigation, the form token)."""
    console = request.config_dict[CONSOLE]
    runtime = request.config_dict[RUNTIME]
    html = console.templates.get_template(template).render(
        nav=NAV,
        version=__version__,
        stylesheet=f"/ui/console.css?v={console.stylesheet_version}",
        csrf=csrf_token(request, runtime.settings.auth),
        csrf_field=CSRF_FIELD,
        **context,
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def field(request: web.Request, name: str) -> str | None:
    """A field of the POST's form (None if absent)."""
    form = FORM.get()
    return form.get(name) if form is not None else None


def _simple_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    """An answer made without the service's parts: 401, 403, 404, 413, 503."""
    html = (
        request.config_dict[CONSOLE]
        .templates.get_template("message.html.j2")
        .render(
            title=title,
            message=message,
            status=status,
            stylesheet=f"/ui/console.css?v={request.config_dict[CONSOLE].stylesheet_version}",
        )
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def _unauthorized(request: web.Request) -> web.Response:
    auth = request.config_dict[RUNTIME].settings.auth
    if auth.basic is not None:
        message = "Log in with the user name and password of auth.basic in sheepdog's config."
        challenge = 'Basic realm="sheepdog console", charset="UTF-8"'
    else:
        message = (
            "This sheepdog accepts bearer tokens only (auth.bearer_tokens), which a browser "
            "cannot send: add auth.basic to its config to use the console from a browser, or "
            "send 'Authorization: Bearer <token>' from a script."
        )
        challenge = 'Bearer realm="sheepdog"'
    response = _simple_page(request, 401, "Log in to sheepdog", message)
    response.headers[hdrs.WWW_AUTHENTICATE] = challenge
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(handler: Handler) -> Handler:
    """``handler`` behind :func:`guard`."""

    async def run(request: web.Request) -> web.StreamResponse:
        return await guard(request, handler)

    return run


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Credentials first, then, for a POST, its size, origin and form token; security headers
    on every answer; a database out of reach is a 503 page, never a traceback."""
    try:
        response = await _guarded(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect
            exc.headers.update(SECURITY_HEADERS)
            raise
        response = _simple_page(request, exc.status, exc.reason, exc.text or exc.reason)
    except DatabaseUnavailable as exc:
        log.warning("console: the database cannot be reached", extra={"reason": str(exc)})
        response = _simple_page(
            request, 503, "Database unavailable", f"The state cannot be read now: {exc}"
        )
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.can_read_body:  # answered before the body was read (401, 411, 413)
        response.force_close()  # so no unread byte of it is taken for the next request
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/ui":
        raise web.HTTPFound("/ui/")
    auth = request.config_dict[RUNTIME].settings.auth
    if not is_authorized(request, auth):
        return _unauthorized(request)
    if request.method == hdrs.METH_POST:
        limit = request.config_dict[BRIDGE].config.max_body_bytes * 3 + _FORM_OVERHEAD_BYTES
        length = request.content_length
        if length is None:
            return _simple_page(request, 411, "Length required", "Send the form's length.")
        if length > limit:
            return _simple_page(
                request, 413, "Too large", f"The form is over the {limit}-byte limit."
            )
        form = _form(request.content_type, await request.read())
        if form is None:
            return _simple_page(
                request, 400, "Not a form", "Send the console's forms as the browser does."
            )
        why = refusal_of_post(request, auth, form.get(CSRF_FIELD))
        if why is not None:
            log.warning("console: a form was refused", extra={"reason": why})
            return _simple_page(request, 403, "Form refused", why)
        token = FORM.set(form)
        try:
            return await handler(request)
        finally:
            FORM.reset(token)
    return await handler(request)


def _form(content_type: str, body: bytes) -> MultiDictProxy[str] | None:
    """The fields of an ``application/x-www-form-urlencoded`` body in UTF-8 (what the console's
    forms send), or None for anything else."""
    if content_type != "application/x-www-form-urlencoded":
        return None
    try:
        text = body.decode("utf-8")
        fields = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return None
    return MultiDictProxy(MultiDict(fields))


async def stylesheet(request: web.Request) -> web.Response:
    """The one stylesheet (no state in it: cached by the browser for a day)."""
    console = request.config_dict[CONSOLE]
    return web.Response(
        body=console.stylesheet,
        content_type="text/css",
        charset="utf-8",
        headers={"Cache-Control": "private, max-age=86400"},
    )


def utc_now(request: web.Request) -> datetime:
    return request.config_dict[RUNTIME].clock.now().astimezone(UTC)
