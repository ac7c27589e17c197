"""Model labels and list prices: what a request is metered as, and what each kind of token costs.

A model's :class:`Price` has rates in USD per 1M tokens for each kind of token — input, output,
cache reads, cache writes (5-minute, and 1-hour where the protocol tells them apart) and
reasoning — and optional long-context tiers: above a number of input tokens (all of them, cache
reads and writes included), the whole request is priced at the tier's rates, as Anthropic, Google,
OpenAI and Alibaba bill it. A rate not given falls back in a fixed order: a tier's to the base
price's same rate; ``cache_read`` and ``cache_write`` to ``input``; ``cache_write_1h`` to
``cache_write``; ``reasoning`` to ``output``.

The :class:`PriceBook` is built once per config from three layers, each over the one before: the
shipped catalogue (:mod:`proxy.price_table`), ``proxy.pricing_file`` (LiteLLM's format) and
``proxy.pricing``. A layer's entry replaces the model of the same canonical name (see
:mod:`proxy.models`) in the layers below, keeping that model's label, so that adding a price file
never renames a series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from proxy.models import OTHER_MODEL, ModelResolver, canonical_name
from proxy.tokens import Usage

__all__ = ["OTHER_MODEL", "Price", "PriceBook", "Rates", "Tier", "Usage"]

_PER_MILLION: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per 1M tokens of each kind; None: not given (see the fallbacks above)."""

    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    reasoning: float | None = None


@dataclass(frozen=True, slots=True)
class Tier:
    """Rates for requests with more than ``above_input_tokens`` input tokens."""

    above_input_tokens: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    reasoning: float | None = None
    tiers: tuple[Tier, ...] = ()

    def base(self) -> Rates:
        return Rates(
            self.input,
            self.output,
            self.cache_read,
            self.cache_write,
            self.cache_write_1h,
            self.reasoning,
        )


@dataclass(frozen=True, slots=True)
class _PerToken:
    """Resolved rates in USD per token, every kind filled in."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    cache_write_1h: float
    reasoning: float

    @classmethod
    def of(cls, rates: Rates, under: Rates) -> _PerToken:
        def pick(value: float | None, fallback: float | None) -> float | None:
            return value if value is not None else fallback

        input_rate = pick(rates.input, under.input) or 0.0
        output_rate = pick(rates.output, under.output) or 0.0
        cache_read = pick(pick(rates.cache_read, under.cache_read), input_rate)
        cache_write = pick(pick(rates.cache_write, under.cache_write), input_rate)
        cache_write_1h = pick(pick(rates.cache_write_1h, under.cache_write_1h), cache_write)
        reasoning = pick(pick(rates.reasoning, under.reasoning), output_rate)
        assert cache_read is not None and cache_write is not None
        assert cache_write_1h is not None and reasoning is not None
        return cls(
            input_rate / _PER_MILLION,
            output_rate / _PER_MILLION,
            cache_read / _PER_MILLION,
            cache_write / _PER_MILLION,
            cache_write_1h / _PER_MILLION,
            reasoning / _PER_MILLION,
        )

    def cost(self, usage: Usage) -> float:
        uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        write_5m = usage.cache_write_tokens - usage.cache_write_1h_tokens
        visible = usage.output_tokens - usage.reasoning_tokens
        return (
            uncached * self.input
            + usage.cache_read_tokens * self.cache_read
            + write_5m * self.cache_write
            + usage.cache_write_1h_tokens * self.cache_write_1h
            + visible * self.output
            + usage.reasoning_tokens * self.reasoning
        )

    def cache_savings(self, usage: Usage) -> float:
        """What the cache reads saved against the input rate (never negative)."""
        return max(0.0, usage.cache_read_tokens * (self.input - self.cache_read))


@dataclass(frozen=True, slots=True)
class _Schedule:
    """A model's per-token rates: the base, then tiers by ascending threshold."""

    base: _PerToken
    tiers: tuple[tuple[int, _PerToken], ...] = ()

    @classmethod
    def of(cls, price: Price) -> _Schedule:
        base = price.base()
        tiers = sorted(price.tiers, key=lambda tier: tier.above_input_tokens)
        return cls(
            _PerToken.of(base, Rates()),
            tuple((tier.above_input_tokens, _PerToken.of(tier.rates, base)) for tier in tiers),
        )

    def rates_for(self, usage: Usage) -> _PerToken:
        rates = self.base
        for threshold, tier in self.tiers:
            if usage.input_tokens <= threshold:
                break
            rates = tier
        return rates


@dataclass
class _Layered:
    """Entries merged layer over layer by canonical name, each keeping its first label."""

    prices: dict[str, Price] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # canonical name -> label

    def add_layer(self, layer: Mapping[str, Price]) -> None:
        below = dict(self.labels)
        groups: dict[str, list[str]] = {}
        for name in layer:
            groups.setdefault(canonical_name(name), []).append(name)
        for canonical, names in groups.items():
            # The group's plainest spelling stands for the model below; other spellings in the
            # same layer (a dated snapshot priced apart) are models of their own.
            representative = min(names, key=lambda name: (len(name), name))
            for name in names:
                label = below.get(canonical) if name == representative else None
                if name in self.prices:
                    self.prices[name] = layer[name]
                elif label is not None:
                    self.prices[label] = layer[name]
                else:
                    self.prices[name] = layer[name]
                    self.labels.setdefault(canonical, name)


class PriceBook:
    """Prices per token, looked up by the model label a client's model name resolves to."""

    def __init__(
        self,
        *layers: Mapping[str, Price],
        aliases: Mapping[str, str] | None = None,
        named: Iterable[str] = (),
    ) -> None:
        merged = _Layered()
        for layer in layers:
            merged.add_layer(layer)
        self.prices: dict[str, Price] = merged.prices
        self.resolver = ModelResolver(self.prices, _aliases_to_labels(aliases or {}, merged))
        # Per-token rates, worked out once rather than per request.
        self._schedules = {model: _Schedule.of(price) for model, price in self.prices.items()}
        self.named: tuple[str, ...] = tuple(
            dict.fromkeys(label for name in named if (label := self.label(name)) != OTHER_MODEL)
        )
        """The labels of the models the operator named (``proxy.pricing``, alias targets)."""

    @property
    def models(self) -> tuple[str, ...]:
        """Every priced model label."""
        return tuple(self.prices)

    def label(self, model: object) -> str:
        """The ``model`` label: the priced model a name resolves to, else ``other``."""
        return self.resolver.label(model)

    def _rates(self, label: str, usage: Usage) -> _PerToken | None:
        schedule = self._schedules.get(label)
        return None if schedule is None else schedule.rates_for(usage)

    def cost_usd(self, label: str, usage: Usage) -> float:
        """USD at list price, each kind of token at its rate; 0 for ``other`` (never guessed)."""
        rates = self._rates(label, usage)
        return 0.0 if rates is None else rates.cost(usage)

    def charge(self, label: str, usage: Usage) -> tuple[float, float]:
        """:meth:`cost_usd` and :meth:`cache_savings_usd` together, the rates looked up once
        (every metered request)."""
        rates = self._rates(label, usage)
        if rates is None:
            return 0.0, 0.0
        return rates.cost(usage), rates.cache_savings(usage)

    def cache_savings_usd(self, label: str, usage: Usage) -> float:
        """USD the cache reads saved against the input price; 0 for ``other``."""
        rates = self._rates(label, usage)
        return 0.0 if rates is None else rates.cache_savings(usage)


def _aliases_to_labels(aliases: Mapping[str, str], merged: _Layered) -> dict[str, str]:
    """Aliases pointing at the label their target resolves to (validated by the config)."""
    resolver = ModelResolver(merged.prices)
    return {alias: resolver.resolve(target) for alias, target in aliases.items()}
