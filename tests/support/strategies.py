"""Hypothesis strategies for the JSON and YAML documents the fuzz tests send.

Each fuzz test brings the strings its target finds hard (markup for the bridge, model names for
the proxy, config values for the loader); the shapes around them are the same everywhere.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

__all__ = ["documents", "nested", "scalars"]


def scalars(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """null, booleans, integers beyond 64 bits, floats with NaN and the infinities, ``text``."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        text,
    )


def documents(
    text: st.SearchStrategy[str],
    *,
    keys: st.SearchStrategy[Any] | None = None,
    max_size: int,
    max_leaves: int,
) -> st.SearchStrategy[Any]:
    """Scalars, and lists and objects of them nested, up to ``max_size`` items each.

    ``keys`` are the objects' keys (by default ``text``).
    """
    return st.recursive(
        scalars(text),
        lambda children: st.one_of(
            st.lists(children, max_size=max_size),
            st.dictionaries(keys if keys is not None else text, children, max_size=max_size),
        ),
        max_leaves=max_leaves,
    )


def nested(depth: int) -> Any:
    """A document ``depth`` levels deep, objects and lists taking turns: past any parser's
    recursion limit when deep enough."""
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value
