"""Who may post alerts and reload: credentials as Alertmanager's ``http_config`` sends them."""

from __future__ import annotations

import binascii
import hmac
from base64 import b64decode

from aiohttp import hdrs, web

from sheepdog.core.settings import AuthConfig


def is_authorized(request: web.Request, auth: AuthConfig) -> bool:
    """True when auth is off, or the request carries a configured bearer token or basic login.

    Every configured credential is compared, in constant time, whatever matched first: the time
    taken says nothing about which one was close.
    """
    if not auth.enabled:
        return True
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        matched = False
        for token in auth.bearer_tokens:
            matched |= token.matches(value)
        return matched
    if scheme == "basic" and value and auth.basic is not None:
        try:
            decoded = b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, sep, password = decoded.partition(":")
        if not sep:
            return False
        user_ok = _equal(auth.basic.username, username)
        password_ok = auth.basic.password.matches(password)
        return user_ok & password_ok
    return False


def _equal(expected: str, presented: str) -> bool:
    return hmac.compare_digest(expected.encode("utf-8"), presented.encode("utf-8"))


def unauthorized() -> web.Response:
    """401 with the challenge a browser or curl understands, and no hint of what was wrong."""
    return web.json_response(
        {"error": "missing or invalid credentials"},
        status=401,
        headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="sheepdog"'},
    )
