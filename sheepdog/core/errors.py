"""Errors that are meant for people: each names where the problem is."""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """A configuration problem at ``path``: a dotted key path like ``proxy.upstream.base_url``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def kind_of(value: Any) -> str:
    """How an error names the type of a value it got (never the value itself)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
