"""Cutting text to a channel's limit without breaking it: by UTF-8 bytes or by characters,
never inside a character, at line boundaries where possible."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

__all__ = ["split_lines_to_fit", "truncate_bytes", "truncate_chars", "utf8_len"]

_ELLIPSIS: Final = "…"


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
    measure = size or utf8_len
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


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))
