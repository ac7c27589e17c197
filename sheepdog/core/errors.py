"""Errors that are meant for people: each names where the problem is."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration problem at ``path``: a dotted key path like ``proxy.upstream.base_url``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
