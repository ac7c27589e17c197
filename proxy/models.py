"""Which priced model a request's ``model`` names, whatever the spelling.

SDKs and relays spell one model many ways: ``claude-sonnet-4-5-20250929``, ``claude-sonnet-4-5``,
``anthropic/claude-sonnet-4.5``, ``gpt-4.1-2025-04-14``, ``openai/gpt-4.1``. A name resolves, in
order, to: itself where it is priced; its alias (``proxy.model_aliases``); else the priced model
with the same *canonical* name — the name lower-cased, without a provider prefix (anything up to
the last ``/``), without a date suffix (``-20250929``, ``-2025-04-14``, ``@20250929``, Volcengine's
``-250615``) or ``-latest``, and with ``.`` between version digits written ``-``. Anything else is
``other``.

Resolution is cached per distinct name (an LRU of :data:`CACHE_SIZE`), so a request pays one dict
lookup; a client sending a new random name each time costs a few microseconds a request and can
never grow a label set, since only priced names (or ``other``) come out.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["CACHE_SIZE", "OTHER_MODEL", "ModelResolver", "canonical_name"]

OTHER_MODEL: Final = "other"
"""The model label for anything not priced: unknown, absent or malformed model names."""

CACHE_SIZE: Final = 4096
# Names longer than this are not model names; they resolve to "other" without being looked at.
_MAX_NAME_LENGTH: Final = 256

_SUFFIXES: Final = re.compile(
    r"(?:-latest"
    r"|[-@]20\d{2}-?[01]\d-?[0-3]\d"  # -20250929, -2025-04-14, @20250929
    r"|-\d{2}[01]\d[0-3]\d"  # -250615 (yymmdd, Volcengine)
    r")$"
)
_VERSION_DOT: Final = re.compile(r"(?<=\d)\.(?=\d)")


def canonical_name(name: str) -> str:
    """``name`` with the differences that do not change the model taken out (see the module)."""
    name = name.strip().lower().rpartition("/")[2]
    while True:
        stripped = _SUFFIXES.sub("", name)
        if stripped == name or not stripped:
            break
        name = stripped
    return _VERSION_DOT.sub("-", name)


class ModelResolver:
    """Resolves client-sent names to priced names (or ``other``), each distinct name once."""

    def __init__(self, priced: Iterable[str], aliases: Mapping[str, str] | None = None) -> None:
        self._priced = frozenset(priced)
        self._aliases = dict(aliases or {})
        self._canonical: dict[str, str] = {}
        # First spelling wins: the catalogue lists a model's own name before its variants.
        for name in self._priced_in_order(priced):
            self._canonical.setdefault(canonical_name(name), name)
        for alias, target in self._aliases.items():
            self._canonical.setdefault(canonical_name(alias), target)
        self.resolve = functools.lru_cache(maxsize=CACHE_SIZE)(self._resolve)

    @staticmethod
    def _priced_in_order(priced: Iterable[str]) -> list[str]:
        names = list(priced)
        # A name that is its own canonical form (undated, unprefixed) is preferred for its group.
        return sorted(names, key=lambda name: canonical_name(name) != name.replace(".", "-"))

    def label(self, model: object) -> str:
        """The ``model`` label for a request's ``model`` value (any JSON value)."""
        if not isinstance(model, str) or len(model) > _MAX_NAME_LENGTH:
            return OTHER_MODEL
        return self.resolve(model)

    def _resolve(self, name: str) -> str:
        if name in self._priced:
            return name
        target = self._aliases.get(name)
        if target is not None:
            return target
        return self._canonical.get(canonical_name(name), OTHER_MODEL)
