"""The whole config: the core settings at the top, ``proxy:`` and ``bridge:`` as each half
declares them, and the rules that span sections (the loopback safety rule).

The composition root: this module, :mod:`sheepdog.app`, :mod:`sheepdog.cli` and
:mod:`sheepdog.serve` are the only ones that import both halves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr, model_validator

from bridge.config import BridgeConfig
from proxy.config import ProxyConfig
from sheepdog.core.config import config_error, read_document, section, validate_document
from sheepdog.core.config import secrets_of as secrets_of
from sheepdog.core.errors import ConfigError
from sheepdog.core.settings import CoreSettings

__all__ = [
    "Config",
    "ConfigError",
    "discover_config_path",
    "load_config",
    "parse_config",
    "secrets_of",
]


class Config(CoreSettings):
    """A validated config. Defaults are complete: an empty file is a valid config."""

    proxy: ProxyConfig = section()
    bridge: BridgeConfig = section()

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file it was read from; None for the built-in defaults."""
        return self._source

    @model_validator(mode="after")
    def _not_open_beyond_loopback(self) -> Config:
        """Refuse an open proxy or an open alert endpoint on an address others can reach."""
        if self.listen.is_loopback:
            return self
        if not self.proxy.clients:
            raise config_error(
                f"required when listen ({self.listen}) is not a loopback address: without "
                "client keys anyone who reaches sheepdog spends the upstream key",
                "proxy",
                "clients",
            )
        if not self.auth.enabled:
            raise config_error(
                f"bearer_tokens or basic required when listen ({self.listen}) is not a "
                "loopback address: without them anyone can post alerts and reload the config",
                "auth",
            )
        return self


def discover_config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """``--config``, else ``$SHEEPDOG_CONFIG``, else ``./sheepdog.yaml`` if present, else None."""
    if explicit:
        return Path(explicit)
    if env.get("SHEEPDOG_CONFIG"):
        return Path(env["SHEEPDOG_CONFIG"])
    local = Path("sheepdog.yaml")
    return local if local.is_file() else None


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate the config at ``path`` (built-in defaults when None)."""
    env = os.environ if env is None else env
    if path is None:
        return parse_config({}, env=env)
    config = parse_config(read_document(path), env=env, base_dir=path.parent)
    config._source = path
    return config


def parse_config(
    raw: Any, *, env: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> Config:
    """Validate an already parsed YAML document (None or a mapping) into a :class:`Config`."""
    return validate_document(Config, raw, env=os.environ if env is None else env, base_dir=base_dir)
