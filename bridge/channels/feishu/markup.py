"""Keeping alert text from acting as a Feishu card's markup, and keeping the card valid JSON.

The template is a card in JSON, so every ``{{ … }}`` lands inside a JSON string. Most of the
card's text is ``lark_md``, which acts on ``<at id=…></at>`` (a mention, ``all`` for everyone),
``<font>``, ``<a href>``, ``<link>``, ``[text](url)``, ``*``, ``_``, ``~`` and backticks. Feishu
documents HTML character references as its escape (卡片富文本, 特殊字符转义说明): every value
is written with ``&#60;`` for ``<`` and so on (:func:`lark_md`), which the card shows as the
character itself, then escaped for a JSON string. Texts that are ``plain_text`` (the header
title, button texts) take no markup: write them with ``|plain``, which only escapes for JSON.
URLs (buttons, links) go through ``|url``: escaped for JSON, and nothing but ``http``/``https``
(the card is refused otherwise).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final
from urllib.parse import quote

import jinja2
from markupsafe import Markup

__all__ = ["finalize", "json_string", "lark_md", "md_link", "plain", "url"]

# The characters lark_md gives a meaning to, as numeric character references.
_LARK_MD: Final = {char: f"&#{ord(char)};" for char in "&<>*_~`[]()\\$"}
_LARK_MD_PATTERN: Final = re.compile("[" + re.escape("".join(_LARK_MD)) + "]")
_HTTP: Final = re.compile(r"^https?://", re.IGNORECASE)


def lark_md(text: str) -> str:
    """``text`` as lark_md shows it and acts on nothing in it."""
    return _LARK_MD_PATTERN.sub(lambda match: _LARK_MD[match.group(0)], text)


def json_string(text: str) -> str:
    """``text`` escaped for the inside of a JSON string (no quotes around it)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _text(value: Any) -> str:
    return "" if value is None or isinstance(value, jinja2.Undefined) else str(value)


def finalize(value: Any) -> Markup:
    """Every ``{{ … }}`` of the card template: lark_md-escaped, then JSON-escaped. Markup (from
    |plain, |url, |md_link, |tojson, macros, blocks) goes in as it is."""
    if isinstance(value, Markup):
        return value
    return Markup(json_string(lark_md(_text(value))))  # noqa: S704 - escaped for both


def plain(value: Any) -> Markup:
    """For a ``plain_text`` field: escaped for JSON only."""
    return Markup(json_string(_text(value)))  # noqa: S704 - escaped for JSON


def url(value: Any) -> Markup:
    """A link's address, escaped for JSON; empty unless it is ``http`` or ``https``."""
    text = _text(value).strip()
    return Markup(json_string(text) if _HTTP.match(text) else "")  # noqa: S704


def md_link(address: Any, text: Any) -> Markup:
    """``[text](url)`` in lark_md, the text escaped, the URL quoted so that it cannot end the
    link early; just the text when the URL is not ``http`` or ``https``."""
    shown = lark_md(_text(text))
    target = _text(address).strip()
    if not _HTTP.match(target):
        return Markup(json_string(shown))  # noqa: S704
    safe = quote(target, safe=":/?#@!$&'*+,;=%~._-")
    return Markup(json_string(f"[{shown}]({safe})"))  # noqa: S704 - both parts made safe
