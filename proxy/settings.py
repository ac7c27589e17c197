"""What the relay needs from the config, worked out once per config rather than per request."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import ClientTimeout
from yarl import URL

from proxy.clients import ClientDirectory
from proxy.config import BillingConfig, ProxyConfig
from proxy.pricing import PriceBook
from sheepdog.core.secret import Secret

__all__ = ["ProxySettings"]


@dataclass(frozen=True, slots=True)
class ProxySettings:
    upstream_base_url: str
    upstream_authorization: Secret | None
    upstream_anthropic_base_url: str
    upstream_key: Secret | None
    timeout: ClientTimeout
    timeout_seconds: float
    max_body_bytes: int
    clients: ClientDirectory
    prices: PriceBook
    billing: BillingConfig

    @classmethod
    def from_config(cls, proxy: ProxyConfig) -> ProxySettings:
        """Everything the relay needs from ``proxy``, worked out now: client lookup, per-token
        prices, the upstream's headers and timeouts."""
        upstream = proxy.upstream
        key = upstream.api_key
        return cls(
            upstream_base_url=upstream.base_url,
            upstream_authorization=Secret(f"Bearer {key.reveal()}") if key is not None else None,
            upstream_anthropic_base_url=upstream.anthropic_base_url or upstream.base_url,
            upstream_key=key,
            # The connect timeout bounds opening a new connection only (sock_connect): as
            # aiohttp's `connect` it would also wrap taking a pooled one, a timer of its own
            # for every request, ~5 us each (bench/analysis.md). Waiting for a free connection
            # in the pool is bounded by the whole request's, which the relay keeps itself
            # (proxy/deadlines.py) rather than with a timer per request.
            timeout=ClientTimeout(total=None, sock_connect=upstream.connect_timeout_seconds),
            timeout_seconds=upstream.timeout_seconds,
            max_body_bytes=proxy.max_body_bytes,
            clients=ClientDirectory(proxy.clients),
            prices=proxy.prices,
            billing=proxy.billing,
        )

    def upstream_url(self, raw_path: str) -> URL:
        """The upstream URL for a request to ``/v1<rest>``: the base URL followed by ``<rest>``.

        ``raw_path`` is taken as the client sent it (query string included), so nothing is
        decoded and re-encoded on the way.
        """
        return URL(self.upstream_base_url + raw_path[3:], encoded=True)

    def anthropic_url(self, raw_path: str) -> URL:
        """The upstream URL for an Anthropic API request: ``anthropic_base_url`` + ``<rest>``."""
        return URL(self.upstream_anthropic_base_url + raw_path[3:], encoded=True)
