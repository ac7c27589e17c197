"""``${VAR}`` and ``${VAR:-default}`` expansion in the string values of a parsed YAML tree."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sheepdog.core.errors import ConfigError

# $$ is a literal dollar; ${NAME} or ${NAME:-default} is a variable. A bare $ stays as it is.
_PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


# YAML aliases share nodes, so a small file can describe a huge tree ("billion laughs").
MAX_NODES = 100_000


def expand_tree(node: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Return ``node`` with every string value expanded; keys are left as written."""
    budget = [MAX_NODES]
    return _expand(node, env, path, budget)


def _expand(node: Any, env: Mapping[str, str], path: str, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(path or "config", f"more than {MAX_NODES} values (aliases expanded)")
    if isinstance(node, str):
        return expand_string(node, env, path)
    if isinstance(node, dict):
        return {k: _expand(v, env, _join(path, k), budget) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(item, env, f"{path}[{i}]", budget) for i, item in enumerate(node)]
    return node


class Expanded(str):
    """A string that took a variable's value: ``written`` is how the config file wrote it.

    An error about such a value (a ``_file`` path) shows ``written``, never what the
    environment put in: that may be secret.
    """

    written: str

    def __new__(cls, value: str, written: str) -> Expanded:
        self = super().__new__(cls, value)
        self.written = written
        return self


def expand_string(text: str, env: Mapping[str, str], path: str) -> str:
    """Expand one string; an unset variable without a default is an error naming it."""
    if "$" not in text:
        return text
    took_variable = False

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        nonlocal took_variable
        took_variable = True
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is not None:
            return value
        if default is not None:
            return default
        raise ConfigError(
            path or "config",
            f"environment variable {name} is not set (use ${{{name}:-default}} for a fallback)",
        )

    expanded = _PATTERN.sub(replace, text)
    return Expanded(expanded, text) if took_variable else expanded


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)
