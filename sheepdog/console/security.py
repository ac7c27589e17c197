"""Who may use the console, and what keeps another site from using it through their browser.

- **Credentials**: the same ``auth`` as ``POST /-/reload``. A browser logs in with
  ``auth.basic`` (the 401 carries a ``Basic`` challenge, so it asks); a script may send a bearer
  token. Without ``auth`` the console is open, which the config allows only on loopback.
- **Forms**: every POST carries a token derived from the credentials the request came with,
  by an HMAC keyed with the configured credentials (or, with no ``auth``, with a key made when
  the service started, before it forked its workers). So any worker, and any replica with the
  same config, checks a token without shared state, and no other site can make one. A POST
  must also come from the console's own origin where the browser says where it comes from
  (``Origin``, ``Sec-Fetch-Site``).
- **Headers** on every answer: a CSP that allows no script and nothing from elsewhere, no
  framing, no referrer to other sites (``same-origin``: with ``no-referrer`` Chromium sends
  its forms with ``Origin: null``), no caching of pages that show state.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from sheepdog.core.auth import is_authorized
from sheepdog.core.settings import AuthConfig

__all__ = [
    "CSRF_FIELD",
    "SECURITY_HEADERS",
    "csrf_token",
    "is_authorized",
    "refusal_of_post",
]

CSRF_FIELD: Final = "csrf"

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""On every console answer (the stylesheet overrides ``Cache-Control``)."""

# Made at import, in the process that serves: `sheepdog serve` imports the app before it forks
# its workers, so every worker has the same key (and a worker started again too).
_PROCESS_KEY: Final = secrets.token_bytes(32)
_PURPOSE: Final = b"sheepdog console form v1"


def _key(auth: AuthConfig) -> bytes:
    """The HMAC key: every configured credential (the same on every replica of one config)."""
    if not auth.enabled:
        return _PROCESS_KEY
    digest = hashlib.sha256(_PURPOSE)
    for token in auth.bearer_tokens:
        digest.update(b"\0bearer\0" + token.reveal().encode("utf-8"))
    if auth.basic is not None:
        basic = f"{auth.basic.username}\0{auth.basic.password.reveal()}"
        digest.update(b"\0basic\0" + basic.encode("utf-8"))
    return digest.digest()


def csrf_token(request: web.Request, auth: AuthConfig) -> str:
    """The token the console's forms carry for the credentials ``request`` came with."""
    presented = request.headers.get(hdrs.AUTHORIZATION, "") if auth.enabled else ""
    message = _PURPOSE + b"\0" + presented.encode("utf-8", "replace")
    return hmac.new(_key(auth), message, hashlib.sha256).hexdigest()


def refusal_of_post(request: web.Request, auth: AuthConfig, token: str | None) -> str | None:
    """Why a (credentialed) POST is refused, or None: another origin, or a missing or wrong
    form token."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"the form was sent from another site (Sec-Fetch-Site: {fetch_site[:20]})"
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and not _same_origin(origin, request.host):
        return "the form was sent from another origin"
    if not token:
        return "the form token is missing: reload the page and send the form again"
    if not hmac.compare_digest(
        token.encode("utf-8", "replace"), csrf_token(request, auth).encode()
    ):
        return "the form token is not valid: reload the page and send the form again"
    return None


def _same_origin(origin: str, host: str) -> bool:
    """Whether ``Origin`` names the host (and port) the request was sent to."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    default = 443 if parts.scheme == "https" else 80
    want = _host_port(host, default)
    return want is not None and (parts.hostname.lower(), port or default) == want


def _host_port(host: str, default: int) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{host}")
        return (parts.hostname or "").lower(), parts.port or default
    except ValueError:
        return None
