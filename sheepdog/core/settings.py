"""The core settings: where sheepdog listens, keeps its state and logs, and who may post alerts.

These keys sit at the top of the config file, beside the ``proxy`` and ``bridge`` sections that
each half declares for itself.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, PlainValidator

from sheepdog.core.config import (
    ConfigModel,
    ConfigPath,
    PositiveNumber,
    Text,
    config_error,
    section,
    whole_number,
)
from sheepdog.core.errors import kind_of
from sheepdog.core.secret import Secret

__all__ = [
    "AuthConfig",
    "BasicAuth",
    "CoreSettings",
    "DatabaseConfig",
    "ListenAddress",
    "LogFormat",
    "LogLevel",
]

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


def _postgres_url(value: Any) -> Secret:
    secret = Secret.validate(value)
    try:
        parts = urlsplit(secret.reveal())
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = None
    # The URL may hold a password: say what is wrong without echoing it.
    if parts is None or parts.scheme not in ("postgresql", "postgres"):
        raise config_error("must be a postgresql:// URL (postgresql://user:password@host/db)")
    if not parts.hostname and "host=" not in parts.query:
        raise config_error("must name a host (postgresql://user:password@host/db)")
    return secret


PostgresUrl = Annotated[Secret, BeforeValidator(_postgres_url)]


class DatabaseConfig(ConfigModel):
    """PostgreSQL instead of SQLite in ``state_dir``: state that replicas share."""

    url: PostgresUrl | None = None
    lease_seconds: PositiveNumber = 30.0
    """How long a process's claim on a destination lasts unless renewed: after a crash, the
    time before another process takes over its deliveries."""

    @property
    def enabled(self) -> bool:
        return self.url is not None


class CoreSettings(ConfigModel):
    """The top-level keys every part of sheepdog shares."""

    listen: Annotated[ListenAddress, PlainValidator(ListenAddress.parse)] = Field(
        default="127.0.0.1:8000", validate_default=True
    )
    state_dir: ConfigPath = Field(default="./var", validate_default=True)
    workers: Annotated[int, whole_number(minimum=1, maximum=64)] = 1
    """Processes serving ``listen`` together (SO_REUSEPORT), sharing the state."""
    database: DatabaseConfig = section()
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"
    auth: AuthConfig = section()
