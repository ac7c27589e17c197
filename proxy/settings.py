"""What the relay needs from the config, worked out once per config rather than per request."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import ClientTimeout

from proxy.clients import ClientDirectory
from proxy.config import BillingConfig, ProxyConfig
from proxy.pricing import PriceBook
from proxy.upstreams import Routes, Upstream

__all__ = ["ProxySettings"]


@dataclass(frozen=True, slots=True)
class ProxySettings:
    routes: Routes
    max_body_bytes: int
    clients: ClientDirectory
    prices: PriceBook
    billing: BillingConfig

    @classmethod
    def from_config(cls, proxy: ProxyConfig) -> ProxySettings:
        """Everything the relay needs from ``proxy``, worked out now: client lookup, per-token
        prices, each upstream's headers and timeouts, which upstreams serve which models."""
        return cls(
            routes=Routes(Upstream.from_config(upstream) for upstream in proxy.upstream_list),
            max_body_bytes=proxy.max_body_bytes,
            clients=ClientDirectory(proxy.clients),
            prices=proxy.prices,
            billing=proxy.billing,
        )

    @property
    def timeout(self) -> ClientTimeout:
        """The first upstream's timeouts: the session's default (each request sets its own)."""
        return self.routes.all[0].timeout
