"""Model labels and list prices: what a request is metered as, and what its tokens cost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from proxy.config import ModelPrice

__all__ = ["OTHER_MODEL", "PriceBook", "Usage"]

OTHER_MODEL: Final = "other"
"""The model label for anything not priced: unknown, absent or malformed model names."""

_PER_MILLION: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the upstream reported for one request."""

    input_tokens: int
    output_tokens: int


class PriceBook:
    """Prices per token, looked up by the model name a client sent."""

    def __init__(self, pricing: Mapping[str, ModelPrice]) -> None:
        # Per-token prices, computed once rather than dividing by a million on every request.
        self._per_token: dict[str, tuple[float, float]] = {
            model: (price.input / _PER_MILLION, price.output / _PER_MILLION)
            for model, price in pricing.items()
        }

    @property
    def models(self) -> tuple[str, ...]:
        """Every priced model, in configuration order."""
        return tuple(self._per_token)

    def label(self, model: object) -> str:
        """The ``model`` label: the name itself where it is priced, else ``other``.

        Clients can send any string; only configured names become label values, so the number of
        series stays bounded.
        """
        if isinstance(model, str) and model in self._per_token:
            return model
        return OTHER_MODEL

    def cost_usd(self, label: str, usage: Usage) -> float:
        """USD at list price; 0 for ``other``, since sheepdog never guesses a price."""
        prices = self._per_token.get(label)
        if prices is None:
            return 0.0
        input_price, output_price = prices
        return usage.input_tokens * input_price + usage.output_tokens * output_price
