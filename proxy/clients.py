"""Who is calling: client keys from ``Authorization: Bearer <key>``, or ``x-api-key: <key>``.

The anthropic SDKs and Claude Code send ``x-api-key``; the openai SDKs ``Authorization``. The key
is read from ``Authorization`` when a request has that header, else from ``x-api-key``, on every
route.

Lookup is a dict keyed by the BLAKE2s digest of each configured key, then a constant-time
comparison with the key found. The dict lookup's timing depends only on the digest of what was
presented, which an attacker cannot steer towards a real key, so it reveals nothing about the
configured keys; and it costs the same with 2 clients or 2,000, unlike comparing against every key.
BLAKE2s rather than SHA-256: CPython computes it itself, where hashlib's SHA-256 goes through
OpenSSL's EVP layer, whose set-up costs more than the digest of a short key (every request
authenticates; bench/analysis.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from proxy.config import ClientConfig

__all__ = ["ANONYMOUS", "AuthFailure", "Caller", "ClientDirectory"]

ANONYMOUS: Final = "anonymous"
"""The ``client`` label of an open proxy's callers, and of requests refused before we know who."""

AuthFailure = Literal["missing_key", "invalid_key"]


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    monthly_budget_usd: float | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    @property
    def rate_limited(self) -> bool:
        """Whether either per-minute limit applies (proxy.limits)."""
        return self.requests_per_minute is not None or self.tokens_per_minute is not None


_ANONYMOUS_CALLER: Final = Caller(ANONYMOUS)


def _digest(key: bytes) -> bytes:
    return hashlib.blake2s(key).digest()


class ClientDirectory:
    """The configured clients; with none, the proxy is open and every caller is anonymous."""

    def __init__(self, clients: Iterable[ClientConfig]) -> None:
        self._by_digest: dict[bytes, ClientConfig] = {
            _digest(client.key.reveal().encode("utf-8")): client for client in clients
        }
        self._callers = {
            client.name: Caller(
                client.name,
                client.monthly_budget_usd,
                client.requests_per_minute,
                client.tokens_per_minute,
            )
            for client in self._by_digest.values()
        }

    @property
    def is_open(self) -> bool:
        return not self._by_digest

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._callers)

    def callers(self) -> tuple[Caller, ...]:
        return tuple(self._callers.values())

    def budgets(self) -> dict[str, float]:
        """Monthly budgets in USD of the clients that have one."""
        return {
            name: caller.monthly_budget_usd
            for name, caller in self._callers.items()
            if caller.monthly_budget_usd is not None
        }

    def authenticate(
        self, authorization: str | None, api_key: str | None = None
    ) -> Caller | AuthFailure:
        """The caller the ``Authorization`` (else ``x-api-key``) header value identifies, or why
        not."""
        if self.is_open:
            return _ANONYMOUS_CALLER
        if authorization:
            if authorization.startswith("Bearer "):  # as every SDK writes it
                key = authorization[7:].strip()
            else:
                scheme, _, key = authorization.partition(" ")
                key = key.strip()
                if scheme.lower() != "bearer":
                    key = ""
        else:
            key = (api_key or "").strip()
        if not key:
            return "missing_key"
        presented = key.encode("utf-8", "surrogateescape")
        client = self._by_digest.get(_digest(presented))
        if client is None or not client.key.matches(presented):
            return "invalid_key"
        return self._callers[client.name]
