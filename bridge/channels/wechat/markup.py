"""Keeping alert text from acting as WeChat Work markdown.

The robot's ``markdown`` acts on ``<@userid>`` (a mention), ``<font color=...>`` and
``[text](url)`` (a link); ``markdown_v2`` on links and images (``![text](url)``), and it has
tables and code blocks. Neither can mention everyone (``@all`` works only in text messages, and
sheepdog puts only configured or annotated people there). Values are neutralized as
:mod:`bridge.channels.markdown` describes (a zero-width space breaks the syntax; the text reads
the same). In a ``markdown_v2`` table cell (:func:`table_cell`) a ``|`` is written ``\\|`` and a
line break as a space, so that a value stays in its cell.
"""

from __future__ import annotations

from typing import Any

import jinja2

from bridge.channels.markdown import (
    ZERO_WIDTH_SPACE,
    finalize,
    join_markup,
    markdown_link,
    neutralize,
)

__all__ = [
    "ZERO_WIDTH_SPACE",
    "finalize",
    "join_markup",
    "markdown_link",
    "neutralize",
    "table_cell",
]


def table_cell(value: Any) -> str:
    """A value for a ``markdown_v2`` table cell: one line, its ``|`` escaped so that it cannot
    end the cell (neutralized like any other value when printed)."""
    text = "" if value is None or isinstance(value, jinja2.Undefined) else str(value)
    return " ".join(text.split()).replace("|", "\\|")
