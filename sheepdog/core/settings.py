"""The core settings: where sheepdog listens, keeps its state and logs, and who may post alerts.

These keys sit at the top of the config file, beside the ``proxy`` and ``bridge`` sections that
each half declares for itself.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator

from sheepdog.core.config import ConfigModel, ConfigPath, Text, config_error, section
from sheepdog.core.errors import kind_of
from sheepdog.core.secret import Secret

__all__ = ["AuthConfig", "BasicAuth", "CoreSettings", "ListenAddress", "LogFormat", "LogLevel"]

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, value: Any) -> ListenAddress:
        """``host:port`` (``[::1]:8000`` for IPv6)."""
        if isinstance(value, ListenAddress):
            return value
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise config_error(f"must be a string, got {kind_of(value)}")
        text = str(value)
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit() or not host:
            raise config_error(f"{text!r} is not host:port (e.g. 127.0.0.1:8000)")
        port = int(port_text)
        if not 0 < port < 65536:
            raise config_error(f"port {port} is out of range")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return cls(host=host, port=port)


class BasicAuth(ConfigModel):
    username: Text
    password: Secret


class AuthConfig(ConfigModel):
    """Credentials that ``POST /alerts/*`` and ``POST /-/reload`` accept."""

    bearer_tokens: tuple[Secret, ...] = ()
    basic: BasicAuth | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.bearer_tokens) or self.basic is not None


class CoreSettings(ConfigModel):
    """The top-level keys every part of sheepdog shares."""

    listen: Annotated[ListenAddress, PlainValidator(ListenAddress.parse)] = Field(
        default="127.0.0.1:8000", validate_default=True
    )
    state_dir: ConfigPath = Field(default="./var", validate_default=True)
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"
    auth: AuthConfig = section()
