"""Which headers cross the proxy, in each direction.

Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and never cross; nor do the ones a
``Connection`` header names. ``Host`` and ``Content-Length`` are recomputed. Upstream, the client's
credentials are replaced by the upstream key; ``Accept-Encoding`` is narrowed to codings the proxy
can decode for metering (see :mod:`proxy.encoding`).
"""

from __future__ import annotations

from typing import Final

from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.encoding import IDENTITY, upstream_accept_encoding

__all__ = ["client_response_headers", "skipped_auto_headers", "upstream_request_headers"]

_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Credentials a client may send in other conventions (Azure's api-key, x-api-key) are a client's
# key just as much as Authorization is: none of them may reach the upstream.
_NOT_UPSTREAM: Final = _HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    "api-key",
    "x-api-key",
    "accept-encoding",
    "expect",
}
_NOT_DOWNSTREAM: Final = _HOP_BY_HOP | {"content-length"}
# aiohttp would otherwise add its own User-Agent and, for a bytes body, a Content-Type: the
# upstream gets the client's headers and nothing invented.
_AUTO_HEADERS: Final = (hdrs.USER_AGENT, hdrs.CONTENT_TYPE)


def skipped_auto_headers(headers: CIMultiDict[str]) -> tuple[str, ...] | None:
    """What aiohttp must be told not to add to ``headers``: None when they have both already,
    as SDK requests do (aiohttp copies and sorts the names on every request it is given)."""
    if hdrs.USER_AGENT in headers and hdrs.CONTENT_TYPE in headers:
        return None
    return _AUTO_HEADERS


def _copy(headers: CIMultiDictProxy[str], dropped: frozenset[str]) -> CIMultiDict[str]:
    """``headers`` without ``dropped`` and those their ``Connection`` names, order kept.

    Copied whole and then trimmed: multidict copies in C, and deleting the few names present
    costs half of testing every header in Python (this runs twice a request).
    """
    copy = CIMultiDict(headers)
    for name in dropped:
        if name in copy:
            del copy[name]
    connection = headers.get(hdrs.CONNECTION)
    if connection:
        for token in connection.split(","):
            copy.popall(token.strip(), None)
    return copy


def upstream_request_headers(
    client_headers: CIMultiDictProxy[str], authorization: str | None, *, stream: bool
) -> CIMultiDict[str]:
    """The headers to send upstream for a client request with ``client_headers``.

    A stream is asked for uncompressed: the proxy may have to take the usage-only event out of it,
    and compressing an event stream only delays its events.
    """
    headers = _copy(client_headers, _NOT_UPSTREAM)
    if authorization is not None:
        headers[hdrs.AUTHORIZATION] = authorization
    headers[hdrs.ACCEPT_ENCODING] = (
        IDENTITY if stream else upstream_accept_encoding(client_headers.get(hdrs.ACCEPT_ENCODING))
    )
    return headers


def client_response_headers(upstream_headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream response's headers as the client gets them."""
    return _copy(upstream_headers, _NOT_DOWNSTREAM)
