"""The proxy's section of the config (``proxy:``): upstream, clients, billing, prices.

Every default is written here, once; :mod:`proxy.settings` derives what the relay needs from a
validated :class:`ProxyConfig` without restating any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from proxy.price_table import DEFAULT_PRICING
from sheepdog.core.config import (
    NAME_PATTERN,
    ConfigModel,
    HttpUrl,
    NonNegativeNumber,
    PositiveNumber,
    Text,
    config_error,
    section,
    whole_number,
)
from sheepdog.core.secret import Secret

__all__ = [
    "BillingConfig",
    "ClientConfig",
    "ModelPrice",
    "ProxyConfig",
    "UpstreamConfig",
    "default_pricing",
]

_MIB = 1024 * 1024
_DEFAULT_KEY_VARIABLE = "HOLYSHEEP_API_KEY"


def _optional_key(value: Any) -> Secret | None:
    # An empty key (``api_key: ${KEY:-}``) means none: requests go upstream without one.
    if value == "" or value is None:
        return None
    return Secret.validate(value)


class UpstreamConfig(ConfigModel):
    base_url: HttpUrl = "https://api.holysheep.ai/v1"
    api_key: Annotated[Secret | None, BeforeValidator(_optional_key)] = None
    timeout_seconds: PositiveNumber = 120.0
    connect_timeout_seconds: PositiveNumber = 10.0

    @model_validator(mode="before")
    @classmethod
    def _key_from_environment(cls, data: Any, info: ValidationInfo) -> Any:
        # The built-in default: the HolySheep key from the environment, if there is one.
        if isinstance(data, dict) and not {"api_key", "api_key_file"} & set(data):
            key = (info.context or {}).get("env", {}).get(_DEFAULT_KEY_VARIABLE)
            if key:
                data = {**data, "api_key": key}
        return data

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")


class ClientConfig(ConfigModel):
    name: Text
    key: Secret
    monthly_budget_usd: NonNegativeNumber | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not NAME_PATTERN.match(name) or name == "anonymous":
            raise config_error(
                f"{name!r} is not a valid client name (letters, digits, '_', '.', '-'; "
                "not 'anonymous')"
            )
        return name


class BillingConfig(ConfigModel):
    """How the relay bills (HolySheep: ¥1 buys $1 of list price)."""

    currency: Text = "CNY"
    usd_rate: PositiveNumber = 1.0
    market_usd_rate: PositiveNumber = 7.3


class ModelPrice(ConfigModel):
    """USD per 1M tokens."""

    input: NonNegativeNumber
    output: NonNegativeNumber


def default_pricing() -> dict[str, ModelPrice]:
    return {
        model: ModelPrice(input=input_price, output=output_price)
        for model, (input_price, output_price) in DEFAULT_PRICING.items()
    }


class ProxyConfig(ConfigModel):
    upstream: UpstreamConfig = section()
    clients: tuple[ClientConfig, ...] = ()
    billing: BillingConfig = section()
    pricing: Mapping[Text, ModelPrice] = Field(default_factory=default_pricing)
    """The shipped prices, with the configured ones added or put in their place."""
    max_body_bytes: Annotated[int, whole_number(minimum=1024)] = 20 * _MIB

    @field_validator("pricing")
    @classmethod
    def _over_defaults(cls, pricing: Mapping[str, ModelPrice]) -> dict[str, ModelPrice]:
        return {**default_pricing(), **pricing}

    @field_validator("clients")
    @classmethod
    def _distinct_clients(cls, clients: tuple[ClientConfig, ...]) -> tuple[ClientConfig, ...]:
        names: set[str] = set()
        keys: set[Secret] = set()
        for index, client in enumerate(clients):
            if client.name in names:
                raise config_error(f"duplicate client name {client.name!r}", index, "name")
            if client.key in keys:
                raise config_error("the same key is given to two clients", index, "key")
            names.add(client.name)
            keys.add(client.key)
        return clients
