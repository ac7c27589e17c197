"""A chat robot's markdown as HTML, for the playground's preview: safe whatever the text holds.

Everything is escaped; only the constructs the channel's client renders
(:class:`~bridge.channels.base.MarkdownSubset`) become HTML, and only HTML of our own making:
a fixed set of tags and classes, links to ``http``/``https`` only, images never loaded (shown
as a link), colours as one of the stylesheet's classes (the page's CSP allows no inline style).
What the client shows as written (a ``<font>`` of a client without colours, a table in plain
markdown) the preview shows as written too. A value the bridge neutralized (a zero-width space
after ``<``, between ``]`` and ``(``) is no markup here either, as in the client.

It is a preview, not the client: line breaks are kept as written, and spacing differs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from markupsafe import Markup, escape

from bridge.channels.base import MarkdownSubset

__all__ = ["PALETTE", "nearest_color", "to_html"]

PALETTE: Final = {
    "red": (0xE0, 0x1E, 0x5A),
    "orange": (0xF5, 0xA6, 0x23),
    "yellow": (0xEC, 0xB2, 0x2E),
    "green": (0x2E, 0xB6, 0x7D),
    "blue": (0x36, 0xC5, 0xF0),
    "grey": (0x9E, 0x9E, 0x9E),
}
"""The colours the stylesheet has a class for (``md-red`` …)."""

_HEX: Final = re.compile(r"^#?([0-9a-fA-F]{6})$")
_HTTP: Final = re.compile(r"^https?://[^\s<>\"']+$", re.IGNORECASE)
_HEADING: Final = re.compile(r"^(#{1,6})\s+(.*)$")
_QUOTE: Final = re.compile(r"^>\s?(.*)$")
_BULLET: Final = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED: Final = re.compile(r"^\s*\d{1,9}[.)]\s+(.*)$")
_FENCE: Final = re.compile(r"^\s*```")
_TABLE_RULE: Final = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_CELL_SPLIT: Final = re.compile(r"(?<!\\)\|")

_CODE: Final = r"`(?P<code>[^`\n]+)`"
_IMAGE: Final = r"!\[(?P<alt>[^\[\]\n]*)\]\((?P<src>[^()\s]*)\)"
_LINK: Final = r"\[(?P<text>[^\[\]\n]*)\]\((?P<href>[^()\s]*)\)"
_BOLD: Final = r"\*\*(?P<bold>[^\n]+?)\*\*"
_ITALIC: Final = r"\*(?P<italic>[^*\n]+)\*"
_FONT: Final = r"<font\s+color\s*=\s*[\"']?(?P<color>[#\w]+)[\"']?\s*>(?P<colored>.*?)</font>"
_MENTION: Final = r"<@(?P<mention>[^<>\s]+)>"


def nearest_color(hex_color: str) -> str:
    """The palette colour closest to ``#RRGGBB``."""
    match = _HEX.match(hex_color)
    if match is None:
        return "grey"
    value = int(match.group(1), 16)
    rgb = (value >> 16, (value >> 8) & 0xFF, value & 0xFF)
    return min(
        PALETTE, key=lambda name: sum((a - b) ** 2 for a, b in zip(PALETTE[name], rgb, strict=True))
    )


def _inline_pattern(subset: MarkdownSubset) -> re.Pattern[str]:
    parts = []
    if subset.inline_code:
        parts.append(_CODE)
    parts.append(_IMAGE)  # shown as a link, or as written: never confused with a link
    if subset.links:
        parts.append(_LINK)
    if subset.bold:
        parts.append(_BOLD)
    if subset.italic:
        parts.append(_ITALIC)
    if subset.font_colors is not None or subset.hex_colors:
        parts.append(_FONT)
    if subset.mentions:
        parts.append(_MENTION)
    return re.compile("|".join(parts), re.DOTALL)


class _Renderer:
    def __init__(self, subset: MarkdownSubset) -> None:
        self.subset = subset
        self.inline_pattern = _inline_pattern(subset)

    # Inline ----------------------------------------------------------------------------------

    def inline(self, text: str) -> Markup:
        out: list[str] = []
        position = 0
        for match in self.inline_pattern.finditer(text):
            out.append(escape(text[position : match.start()]))
            out.append(self._construct(match))
            position = match.end()
        out.append(escape(text[position:]))
        return Markup("".join(out))  # noqa: S704 - every piece escaped or made here

    def _construct(self, match: re.Match[str]) -> str:
        found = match.groupdict()
        if found.get("code") is not None:
            return f"<code>{escape(found['code'])}</code>"
        if found.get("src") is not None:
            if not self.subset.images:
                return str(escape(match.group(0)))
            return self._link(found["src"], f"🖼 {found['alt'] or 'image'}", image=True)
        if found.get("href") is not None:
            return self._link(found["href"], found["text"])
        if found.get("bold") is not None:
            return f"<strong>{self.inline(found['bold'])}</strong>"
        if found.get("italic") is not None:
            return f"<em>{self.inline(found['italic'])}</em>"
        if found.get("color") is not None:
            color = self._color(found["color"])
            if color is None:  # a colour the client does not know: the text, uncoloured
                return str(self.inline(found["colored"]))
            return f'<span class="md-{color}">{self.inline(found["colored"])}</span>'
        if found.get("mention") is not None:
            return f'<span class="md-mention">@{escape(found["mention"])}</span>'
        raise AssertionError(f"unhandled markdown construct {match.group(0)!r}")

    def _link(self, href: str, text: str, *, image: bool = False) -> str:
        label = self.inline(text) if not image else escape(text)
        if not _HTTP.match(href):
            return str(label)  # the client would not open it either
        kind = ' class="md-image"' if image else ""
        return f'<a{kind} href="{escape(href)}" rel="noopener noreferrer nofollow">{label}</a>'

    def _color(self, name: str) -> str | None:
        named = self.subset.font_colors or {}
        if name in named:
            return nearest_color(named[name])
        if self.subset.hex_colors and _HEX.match(name):
            return nearest_color(name)
        return None

    # Blocks ----------------------------------------------------------------------------------

    def blocks(self, text: str) -> Iterator[str]:
        lines = text.replace("\r\n", "\n").split("\n")
        index = 0
        paragraph: list[str] = []

        def flush() -> Iterator[str]:
            if paragraph:
                yield "<p>" + "<br>".join(self.inline(line) for line in paragraph) + "</p>"
                paragraph.clear()

        while index < len(lines):
            line = lines[index]
            subset = self.subset
            if subset.code_blocks and _FENCE.match(line):
                yield from flush()
                end = index + 1
                while end < len(lines) and not _FENCE.match(lines[end]):
                    end += 1
                yield f"<pre><code>{escape(chr(10).join(lines[index + 1 : end]))}</code></pre>"
                index = end + 1
                continue
            if (
                subset.tables
                and "|" in line
                and index + 1 < len(lines)
                and _TABLE_RULE.match(lines[index + 1])
            ):
                yield from flush()
                end = index + 2
                while end < len(lines) and "|" in lines[end] and lines[end].strip():
                    end += 1
                yield self._table(lines[index], lines[index + 2 : end])
                index = end
                continue
            heading = _HEADING.match(line) if subset.headings else None
            if heading is not None:
                yield from flush()
                level = len(heading.group(1))
                yield f'<p class="md-h md-h{level}">{self.inline(heading.group(2))}</p>'
                index += 1
                continue
            if subset.quotes and _QUOTE.match(line):
                yield from flush()
                end, quoted = self._run(lines, index, _QUOTE)
                yield "<blockquote>" + "<br>".join(self.inline(q) for q in quoted) + "</blockquote>"
                index = end
                continue
            if subset.lists and (_BULLET.match(line) or _NUMBERED.match(line)):
                yield from flush()
                pattern = _BULLET if _BULLET.match(line) else _NUMBERED
                tag = "ul" if pattern is _BULLET else "ol"
                end, items = self._run(lines, index, pattern)
                body = "".join(f"<li>{self.inline(item)}</li>" for item in items)
                yield f"<{tag}>{body}</{tag}>"
                index = end
                continue
            if not line.strip():
                yield from flush()
            else:
                paragraph.append(line)
            index += 1
        yield from flush()

    @staticmethod
    def _run(lines: list[str], start: int, pattern: re.Pattern[str]) -> tuple[int, list[str]]:
        """The lines from ``start`` that match ``pattern``, as their first group."""
        found: list[str] = []
        end = start
        while end < len(lines) and (match := pattern.match(lines[end])) is not None:
            found.append(match.group(1))
            end += 1
        return end, found

    def _table(self, header: str, rows: list[str]) -> str:
        def cells(line: str, tag: str) -> str:
            stripped = line.strip()
            stripped = stripped.removeprefix("|").removesuffix("|")
            parts = (cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(stripped))
            return "".join(f"<{tag}>{self.inline(part)}</{tag}>" for part in parts)

        head = f"<thead><tr>{cells(header, 'th')}</tr></thead>"
        body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
        return f'<div class="md-table"><table>{head}<tbody>{body}</tbody></table></div>'


def to_html(text: str, subset: MarkdownSubset) -> Markup:
    """``text`` as the client would show it, in HTML that holds nothing ``text`` could inject."""
    return Markup("\n".join(_Renderer(subset).blocks(text)))  # noqa: S704 - escaped pieces
