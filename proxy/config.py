"""The proxy's section of the config (``proxy:``): upstreams, clients, billing, prices.

Every default is written here, once; :mod:`proxy.settings` derives what the relay needs from a
validated :class:`ProxyConfig` without restating any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, PrivateAttr, ValidationInfo, field_validator, model_validator

from proxy.litellm_prices import PriceFileError, read_litellm_prices
from proxy.models import OTHER_MODEL
from proxy.price_table import catalogue_prices
from proxy.pricing import Price, PriceBook, Rates, Tier
from sheepdog.core.config import (
    NAME_PATTERN,
    ConfigModel,
    ConfigPath,
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
    "ListedUpstreamConfig",
    "ModelPrice",
    "ProxyConfig",
    "TierPrice",
    "UpstreamConfig",
]

_MIB = 1024 * 1024
_DEFAULT_KEY_VARIABLE = "HOLYSHEEP_API_KEY"


def _optional_key(value: Any) -> Secret | None:
    # An empty key (``api_key: ${KEY:-}``) means none: requests go upstream without one.
    if value == "" or value is None:
        return None
    return Secret.validate(value)


def _checked_name(name: str, what: str) -> str:
    if not NAME_PATTERN.match(name):
        raise config_error(f"{name!r} is not a valid {what} name (letters, digits, '_', '.', '-')")
    return name


class UpstreamConfig(ConfigModel):
    """The one upstream of ``proxy.upstream`` (the built-in default: HolySheep)."""

    # The `upstream` label of the upstream metrics.
    name: Text = "default"
    base_url: HttpUrl = "https://api.holysheep.ai/v1"
    # Where /v1/messages goes: {anthropic_base_url}/messages. Relays such as HolySheep serve both
    # APIs under one /v1, so it defaults to base_url; DeepSeek, Kimi and GLM serve the Anthropic
    # API under a path of its own (https://api.deepseek.com/anthropic/v1).
    anthropic_base_url: HttpUrl | None = None
    api_key: Annotated[Secret | None, BeforeValidator(_optional_key)] = None
    timeout_seconds: PositiveNumber = 120.0
    connect_timeout_seconds: PositiveNumber = 10.0
    # Glob patterns (fnmatch, case-sensitive) of the model names, as clients send them, that this
    # upstream serves; absent: every model.
    models: tuple[Text, ...] | None = None
    # Passive health: this many failures in a row and the upstream cools down this long.
    cooldown_after_failures: Annotated[int, whole_number(minimum=1)] = 3
    cooldown_seconds: PositiveNumber = 30.0

    @model_validator(mode="before")
    @classmethod
    def _key_from_environment(cls, data: Any, info: ValidationInfo) -> Any:
        # The built-in default: the HolySheep key from the environment, if there is one.
        if isinstance(data, dict) and not {"api_key", "api_key_file"} & set(data):
            key = (info.context or {}).get("env", {}).get(_DEFAULT_KEY_VARIABLE)
            if key:
                data = {**data, "api_key": key}
        return data

    @field_validator("base_url", "anthropic_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value is not None else None

    @field_validator("name")
    @classmethod
    def _valid_upstream_name(cls, name: str) -> str:
        return _checked_name(name, "upstream")

    @field_validator("models")
    @classmethod
    def _some_models(cls, models: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if models is not None and not models:
            raise config_error("lists no model: leave models out for an upstream of every model")
        for index, pattern in enumerate(models or ()):
            if not pattern.strip():
                raise config_error("an empty pattern matches no model", index)
        return models


class ListedUpstreamConfig(UpstreamConfig):
    """One of ``proxy.upstreams``: named, and with no key unless the entry gives one."""

    name: Text

    @model_validator(mode="before")
    @classmethod
    def _key_from_environment(cls, data: Any, info: ValidationInfo) -> Any:
        # $HOLYSHEEP_API_KEY belongs to the default upstream alone: a listed upstream without a
        # key of its own (a local server) must never be sent the HolySheep key.
        return data


class ClientConfig(ConfigModel):
    name: Text
    key: Secret
    monthly_budget_usd: NonNegativeNumber | None = None
    # Sliding 60-second windows (proxy.limits); tokens are input + output, counted as usage
    # arrives.
    requests_per_minute: Annotated[int, whole_number(minimum=1)] | None = None
    tokens_per_minute: Annotated[int, whole_number(minimum=1)] | None = None

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


class TierPrice(ConfigModel):
    """Rates for requests with more than ``above_input_tokens`` input tokens (USD per 1M)."""

    above_input_tokens: Annotated[int, whole_number(minimum=1)]
    input: NonNegativeNumber | None = None
    output: NonNegativeNumber | None = None
    cache_read: NonNegativeNumber | None = None
    cache_write: NonNegativeNumber | None = None
    cache_write_1h: NonNegativeNumber | None = None
    reasoning: NonNegativeNumber | None = None


class ModelPrice(ConfigModel):
    """USD per 1M tokens of each kind; see :mod:`proxy.pricing` for what an absent rate means."""

    input: NonNegativeNumber
    output: NonNegativeNumber
    cache_read: NonNegativeNumber | None = None
    cache_write: NonNegativeNumber | None = None
    cache_write_1h: NonNegativeNumber | None = None
    reasoning: NonNegativeNumber | None = None
    tiers: tuple[TierPrice, ...] = ()

    def price(self) -> Price:
        return Price(
            self.input,
            self.output,
            self.cache_read,
            self.cache_write,
            self.cache_write_1h,
            self.reasoning,
            tuple(
                Tier(
                    tier.above_input_tokens,
                    Rates(
                        tier.input,
                        tier.output,
                        tier.cache_read,
                        tier.cache_write,
                        tier.cache_write_1h,
                        tier.reasoning,
                    ),
                )
                for tier in self.tiers
            ),
        )


class ProxyConfig(ConfigModel):
    upstream: UpstreamConfig = section()
    upstreams: tuple[ListedUpstreamConfig, ...] = ()
    """Instead of ``upstream``: several, tried in order (docs/proxy.md, "Several upstreams")."""
    clients: tuple[ClientConfig, ...] = ()
    billing: BillingConfig = section()
    pricing: Mapping[Text, ModelPrice] = {}
    """Prices configured here, over the price file and the shipped catalogue."""
    pricing_file: ConfigPath | None = None
    """A catalogue in LiteLLM's model_prices_and_context_window.json format."""
    model_aliases: Mapping[Text, Text] = {}
    """Client-sent names priced as another model: ``{my-claude: claude-sonnet-4.5}``."""
    max_body_bytes: Annotated[int, whole_number(minimum=1024)] = 20 * _MIB
    _prices: PriceBook = PrivateAttr()
    _file_count: int = PrivateAttr(default=0)

    @model_validator(mode="after")
    def _build_prices(self) -> ProxyConfig:
        file_prices: dict[str, Price] = {}
        if self.pricing_file is not None:
            try:
                file_prices = read_litellm_prices(self.pricing_file)
            except PriceFileError as exc:
                raise config_error(str(exc), "pricing_file") from None
        self._file_count = len(file_prices)
        configured = {name: price.price() for name, price in self.pricing.items()}
        layers = (catalogue_prices(), file_prices, configured)
        unaliased = PriceBook(*layers)
        for alias, target in self.model_aliases.items():
            if unaliased.label(target) == OTHER_MODEL:
                raise config_error(
                    f"{target!r} has no price: alias it to a priced model or price it under "
                    "proxy.pricing",
                    "model_aliases",
                    alias,
                )
        self._prices = PriceBook(
            *layers,
            aliases=self.model_aliases,
            named=(*self.pricing, *self.model_aliases.values()),
        )
        return self

    @model_validator(mode="before")
    @classmethod
    def _one_kind_of_upstream(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("upstream") is not None and "upstreams" in data:
            raise config_error("give either upstream or upstreams, not both", "upstreams")
        return data

    @field_validator("upstreams")
    @classmethod
    def _distinct_upstreams(
        cls, upstreams: tuple[ListedUpstreamConfig, ...]
    ) -> tuple[ListedUpstreamConfig, ...]:
        if not upstreams:
            raise config_error("lists no upstream: give at least one, or use upstream")
        names: set[str] = set()
        for index, upstream in enumerate(upstreams):
            if upstream.name in names:
                raise config_error(f"duplicate upstream name {upstream.name!r}", index, "name")
            names.add(upstream.name)
        return upstreams

    @property
    def upstream_list(self) -> tuple[UpstreamConfig, ...]:
        """The upstreams in the order they are tried: ``upstreams``, else the one ``upstream``."""
        return self.upstreams or (self.upstream,)

    @property
    def prices(self) -> PriceBook:
        """Every price (catalogue, file, configured) and how client-sent names resolve."""
        return self._prices

    @property
    def file_models(self) -> int:
        """How many models the price file priced (0 without one)."""
        return self._file_count

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
