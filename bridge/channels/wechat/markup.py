"""Keeping alert text from acting as WeChat Work markdown.

The robot's markdown acts on ``<@userid>`` (a mention), ``<font color=...>`` and
``[text](url)`` (a link); it cannot mention everyone (``@all`` works only in text messages, and
sheepdog puts only configured or annotated mobiles there). A label or annotation value is
printed with a zero-width space (U+200B) after every ``<`` and between ``]`` and ``(``: the
text looks the same, but no tag, mention or link can start in it. The robot documents no
escape character, so this breaks the syntax rather than escaping it. The template's own markup
(its literal text, and :func:`markdown_link`) is left as written.
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
    return text.replace("<", "<" + ZERO_WIDTH_SPACE).replace("](", "]" + ZERO_WIDTH_SPACE + "(")


def finalize(value: Any) -> Any:
    """Every ``{{ … }}`` of a WeChat template: values neutralized, Markup left as it is."""
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
