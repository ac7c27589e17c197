"""An email target's config: ``type: email``, the SMTP relay, sender and recipients."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from bridge.channels.base import TargetConfig
from sheepdog.core.config import (
    ConfigModel,
    ConfigPath,
    NonNegativeNumber,
    PositiveNumber,
    Text,
    config_error,
    whole_number,
)
from sheepdog.core.secret import Secret

__all__ = ["DEFAULT_PORTS", "EmailTarget", "SmtpConfig", "SmtpSecurity"]

SmtpSecurity = Literal["starttls", "tls", "none"]
DEFAULT_PORTS: Final[dict[str, int]] = {"starttls": 587, "tls": 465, "none": 25}


class SmtpConfig(ConfigModel):
    host: Text
    security: SmtpSecurity = "starttls"
    """``starttls`` (the upgrade is required, never skipped), ``tls`` (implicit) or ``none``."""
    port: Annotated[int, whole_number(minimum=1, maximum=65535)]
    """Default: 587 for starttls, 465 for tls, 25 for none."""
    username: Text | None = None
    password: Secret | None = None
    timeout_seconds: PositiveNumber = 30.0
    ca_file: ConfigPath | None = None
    """CA certificates to trust instead of the system's (a private relay's own CA)."""

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("port") is None:
            security = data.get("security", "starttls")
            if isinstance(security, str) and security in DEFAULT_PORTS:
                data = {**data, "port": DEFAULT_PORTS[security]}
        return data

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, path: Any) -> Any:
        if path is not None and not path.is_file():
            raise config_error(f"{path}: no such file")
        return path

    @model_validator(mode="after")
    def _consistent(self) -> SmtpConfig:
        if self.password is not None and self.username is None:
            raise config_error("required when a password is given", "username")
        if self.security == "none" and self.ca_file is not None:
            raise config_error("applies only to security starttls or tls", "ca_file")
        return self


def _address(value: str) -> str:
    if "@" not in value:
        raise config_error(f"{value!r} is not an email address")
    return value


class EmailTarget(TargetConfig):
    type: Literal["email"]
    rate_per_minute: NonNegativeNumber = 60.0
    smtp: SmtpConfig
    from_address: Text = Field(alias="from")
    to: tuple[Text, ...]

    @field_validator("from_address")
    @classmethod
    def _from_is_an_address(cls, value: str) -> str:
        return _address(value)

    @field_validator("to")
    @classmethod
    def _to_addresses(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        if not values:
            raise config_error("needs at least one address")
        for index, value in enumerate(values):
            if "@" not in value:
                raise config_error(f"{value!r} is not an email address", index)
        return values
