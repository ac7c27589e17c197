"""Helpers every notifier shares: posting JSON, hiding URLs, cutting text without breaking it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import aiohttp

from bridge.classify import Verdict, classify_exception, classify_response

__all__ = [
    "post_json",
    "redact_url",
    "scrub",
    "split_lines_to_fit",
    "truncate_bytes",
    "truncate_chars",
    "url_secrets",
]

REDACTED: Final = "<redacted>"
_ELLIPSIS: Final = "…"


def redact_url(url: str) -> str:
    """``https://host/<redacted>``: the scheme and host only, as the path or query hold the key."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}/{REDACTED}"


def url_secrets(url: str) -> list[str]:
    """The pieces of ``url`` that may be a key: the URL itself, path segments, query values."""
    parts = urlsplit(url)
    pieces = [url, parts.path, parts.query]
    pieces += [segment for segment in parts.path.split("/") if len(segment) >= 6]
    pieces += [value for _, value in parse_qsl(parts.query) if value]
    if parts.password:
        pieces.append(parts.password)
    # Longest first, so that a URL is replaced whole before its parts are.
    return sorted({piece for piece in pieces if piece}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of every secret replaced by ``<redacted>``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


async def post_json(
    session: aiohttp.ClientSession,
    channel: str,
    url: str,
    body: dict[str, Any],
    *,
    timeout: float,  # noqa: ASYNC109 - a per-request timeout, handed to aiohttp
) -> Verdict:
    """POST ``body`` as JSON and classify what comes back (or what went wrong on the way).

    Never raises for a delivery problem, and the verdict's detail never holds the URL.
    """
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    try:
        async with session.post(
            url,
            data=data,
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            answer = await response.read()
            verdict = classify_response(channel, response.status, answer, response.headers)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        verdict = classify_exception(exc)
    return _scrubbed(verdict, url_secrets(url))


def _scrubbed(verdict: Verdict, secrets: list[str]) -> Verdict:
    detail = scrub(verdict.detail, secrets)
    if detail == verdict.detail:
        return verdict
    return Verdict(verdict.outcome, verdict.reason, detail, verdict.retry_after)


def truncate_bytes(text: str, limit: int, marker: str = _ELLIPSIS) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, ending in ``marker`` if it was cut.

    Never splits a multi-byte character.
    """
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    room = limit - len(marker.encode("utf-8"))
    if room <= 0:
        return _prefix_bytes(marker, limit)
    return _prefix_bytes(text, room) + marker


def truncate_chars(text: str, limit: int, marker: str = _ELLIPSIS) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``marker`` if it was cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


def _prefix_bytes(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``limit`` bytes."""
    encoded = text.encode("utf-8")[: max(0, limit)]
    # errors="ignore" drops the partial character a byte cut may leave at the end.
    return encoded.decode("utf-8", errors="ignore")


def split_lines_to_fit(
    text: str, limit: int, size: Callable[[str], int] | None = None
) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` (by ``size``, default UTF-8 bytes).

    Cuts at line boundaries where it can, and inside a line (never inside a character) only
    when that line alone is over the limit. Joining the pieces with newlines gives the text
    back, except for the newlines at the cuts.
    """
    measure = size or _utf8_len
    if limit <= 0:
        raise ValueError("limit must be positive")
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        candidate = f"{current}\n{line}" if current else line
        if measure(candidate) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(current)
        current = ""
        while measure(line) > limit:
            head = _longest_prefix(line, limit, measure)
            pieces.append(head)
            line = line[len(head) :]
        current = line
    if current or not pieces:
        pieces.append(current)
    return pieces


def _longest_prefix(text: str, limit: int, measure: Callable[[str], int]) -> str:
    low, high = 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))
