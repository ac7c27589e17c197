"""The optional parts of the shipped configs (DingTalk, Feishu): commented-out blocks that a user
enables by uncommenting them, as the files' comments say.

A block is the lines between ``# >>> optional: <name>`` and ``# <<< optional: <name>``, each
commented with ``# `` after its indentation. :func:`enable` uncomments the named blocks, just as
a user would, so that the tests check exactly what a user gets.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["OPTIONAL", "enable", "optional_blocks"]

OPTIONAL: Final = ("dingtalk", "feishu")
_BEGIN: Final = re.compile(r"^\s*# >>> optional: (\S+)\s*$")
_END: Final = re.compile(r"^\s*# <<< optional: (\S+)\s*$")
_COMMENTED: Final = re.compile(r"^(\s*)# ?(.*)$")


def optional_blocks(text: str) -> list[str]:
    """The names of the optional blocks in ``text``, in order (a name may come several times)."""
    return [match.group(1) for line in text.splitlines() if (match := _BEGIN.match(line))]


def enable(text: str, *names: str) -> str:
    """``text`` with the optional blocks ``names`` uncommented (every block when none given)."""
    wanted = set(names or optional_blocks(text))
    lines: list[str] = []
    inside: str | None = None
    for line in text.splitlines(keepends=True):
        begin, end = _BEGIN.match(line), _END.match(line)
        if begin:
            assert inside is None, f"optional block {begin.group(1)!r} inside {inside!r}"
            inside = begin.group(1)
        elif end:
            assert end.group(1) == inside, f"optional block {inside!r} ends as {end.group(1)!r}"
            inside = None
        elif inside in wanted:
            commented = _COMMENTED.match(line)
            assert commented, f"a line of optional block {inside!r} is not commented: {line!r}"
            line = commented.group(1) + commented.group(2) + "\n"
        lines.append(line)
    assert inside is None, f"optional block {inside!r} has no end"
    return "".join(lines)
