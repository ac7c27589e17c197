"""Keeping alert text from acting as a chat robot's markdown (WeChat Work, DingTalk).

These robots document no escape character. A label or annotation value is printed with a
zero-width space (U+200B) after every ``<``, between ``]`` and ``(`` and inside every run of
three backticks: the text looks the same, but no tag (``<font>``, ``<@userid>``), link, image or
code block can start in it. Markup the template means (its literal text, :func:`markdown_link`)
is left as written. A channel's Jinja environment uses :func:`finalize` on every ``{{ … }}``.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

import jinja2
from markupsafe import Markup

__all__ = ["ZERO_WIDTH_SPACE", "finalize", "join_markup", "markdown_link", "neutralize"]

ZERO_WIDTH_SPACE: Final = "\u200b"


def neutralize(text: str) -> str:
    """``text`` shown as it reads, acted on as nothing."""
    return (
        text.replace("<", "<" + ZERO_WIDTH_SPACE)
        .replace("](", "]" + ZERO_WIDTH_SPACE + "(")
        .replace("```", "``" + ZERO_WIDTH_SPACE + "`")
    )


def finalize(value: Any) -> Any:
    """Every ``{{ … }}`` of the template: values neutralized, Markup left as it is."""
    if isinstance(value, Markup):
        return value
    if value is None or isinstance(value, jinja2.Undefined):
        return ""
    return neutralize(str(value))


def markdown_link(url: Any, text: Any) -> Markup:
    """``[text](url)``: a link the template means, its text neutralized and its URL quoted so
    that nothing in it can end the link early."""
    safe_url = quote(str(url), safe=":/?#@!$&'*+,;=%~._-")
    return Markup(f"[{neutralize(str(text))}]({safe_url})")  # noqa: S704 - both parts made safe


def join_markup(items: Any, separator: str = "") -> Markup:
    """Join Markup pieces (links) into Markup; anything else in ``items`` is neutralized."""
    return Markup(separator.join(str(finalize(item)) for item in items))  # noqa: S704
