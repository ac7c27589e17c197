"""Several upstreams: which ones serve a request, in what order, and how healthy each one is.

:class:`Routes` is worked out once per config: the upstreams in order, and for a model name the
ones whose ``models`` globs match it (cached per distinct name, as model resolution is). The
globs are matched against the model name exactly as the client sent it, the name the upstream
receives: ``gpt-*`` on a backup that is OpenAI itself then never gets ``openai/gpt-4.1``, which
OpenAI would refuse. A request that names no model (``GET /v1/models``, a body that is not JSON)
may go to any upstream.

:class:`Health` is passive: the outcome of each request's attempt says whether an upstream is
up. ``cooldown_after_failures`` failures in a row (a connection error, a timeout before the
answer, a 5xx or a 429) and it cools down for ``cooldown_seconds``; a 429 or 503 with
``Retry-After`` cools it down at once for that long (at most :data:`MAX_RETRY_AFTER_SECONDS`).
Once the cool-down is over one request at a time is let through as a trial: a success brings the
upstream back, a failure cools it down again. :class:`UpstreamPool` keeps each upstream's health
across reloads, by name and URL.
"""

from __future__ import annotations

import email.utils
import fnmatch
import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from aiohttp import ClientTimeout
from yarl import URL

from proxy.config import UpstreamConfig
from sheepdog.core.secret import Secret

__all__ = [
    "FAILOVER_STATUSES",
    "MAX_RETRY_AFTER_SECONDS",
    "Health",
    "Routes",
    "Upstream",
    "UpstreamPool",
    "retry_after_seconds",
]

FAILOVER_STATUSES: Final = frozenset({429, *range(500, 600)})
"""Answers that send a request on to the next upstream (while nothing reached the client)."""
MAX_RETRY_AFTER_SECONDS: Final = 3600.0
"""An upstream's ``Retry-After`` is honoured up to this long, so a bogus one cannot bench it
for days."""
_ROUTE_CACHE_SIZE: Final = 4096
_MAX_NAME_LENGTH: Final = 256


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream as the relay uses it: worked out from its config once."""

    name: str
    base_url: str
    anthropic_base_url: str
    authorization: Secret | None
    """``Bearer <key>``, for OpenAI routes."""
    key: Secret | None
    """The key alone, as ``x-api-key`` for the Anthropic API."""
    timeout: ClientTimeout
    """aiohttp's: the connect timeout only; the whole request's is ``timeout_seconds``."""
    timeout_seconds: float
    """Kept by the relay (proxy/deadlines.py), one attempt at this upstream at a time."""
    models: tuple[str, ...] | None
    cooldown_after_failures: int
    cooldown_seconds: float

    @classmethod
    def from_config(cls, config: UpstreamConfig) -> Upstream:
        key = config.api_key
        return cls(
            name=config.name,
            base_url=config.base_url,
            anthropic_base_url=config.anthropic_base_url or config.base_url,
            authorization=Secret(f"Bearer {key.reveal()}") if key is not None else None,
            key=key,
            # The connect timeout bounds opening a new connection only (sock_connect): as
            # aiohttp's `connect` it would also wrap taking a pooled one, a timer of its own for
            # every request (bench/analysis.md). Waiting for a free pooled connection counts
            # against the whole attempt's, which the relay keeps itself (proxy/deadlines.py).
            timeout=ClientTimeout(total=None, sock_connect=config.connect_timeout_seconds),
            timeout_seconds=config.timeout_seconds,
            models=config.models,
            cooldown_after_failures=config.cooldown_after_failures,
            cooldown_seconds=config.cooldown_seconds,
        )

    def url(self, raw_path: str, *, anthropic: bool) -> URL:
        """The URL for a request to ``/v1<rest>``: the base URL followed by ``<rest>``.

        ``raw_path`` is taken as the client sent it (query string included), so nothing is
        decoded and re-encoded on the way.
        """
        base = self.anthropic_base_url if anthropic else self.base_url
        return URL(base + raw_path[3:], encoded=True)

    def serves(self, model: str) -> bool:
        return self.models is None or any(
            fnmatch.fnmatchcase(model, pattern) for pattern in self.models
        )


class Routes:
    """The configured upstreams in order, and which of them serve a model."""

    def __init__(self, upstreams: Iterable[Upstream]) -> None:
        self.all: tuple[Upstream, ...] = tuple(upstreams)
        self.every_model = all(upstream.models is None for upstream in self.all)
        self._for_name = functools.lru_cache(maxsize=_ROUTE_CACHE_SIZE)(self._serving)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(upstream.name for upstream in self.all)

    def for_model(self, model: str | None) -> tuple[Upstream, ...]:
        """The upstreams, in order, that may be sent a request for ``model`` (as sent)."""
        if self.every_model or model is None:
            return self.all
        if len(model) > _MAX_NAME_LENGTH:
            return self._serving(model)  # not cached: no client can fill the cache with these
        return self._for_name(model)

    def _serving(self, model: str) -> tuple[Upstream, ...]:
        return tuple(upstream for upstream in self.all if upstream.serves(model))


class Health:
    """Passive health of one upstream (see the module)."""

    __slots__ = (
        "_cool_until",
        "_failures",
        "_trial",
        "cooldown_after_failures",
        "cooldown_seconds",
    )

    def __init__(self, cooldown_after_failures: int, cooldown_seconds: float) -> None:
        self.cooldown_after_failures = cooldown_after_failures
        self.cooldown_seconds = cooldown_seconds
        self._failures = 0
        self._cool_until: float | None = None  # set while down: cooling, or waiting for a trial
        self._trial = False  # a trial request is under way

    @property
    def up(self) -> bool:
        """False from the failure that cooled it down until a request succeeds on it again."""
        return self._cool_until is None

    def available(self, now: float) -> bool:
        """Whether a request may be sent to it now: it is up, or its cool-down is over and no
        trial is under way."""
        cool_until = self._cool_until
        return cool_until is None or (now >= cool_until and not self._trial)

    def begin(self, now: float) -> bool:
        """An attempt starts; returns whether it is the trial after a cool-down."""
        cool_until = self._cool_until
        if cool_until is not None and now >= cool_until and not self._trial:
            self._trial = True
            return True
        return False

    def succeeded(self) -> None:
        self._failures = 0
        self._cool_until = None
        self._trial = False

    def failed(self, now: float, retry_after: float | None = None) -> None:
        self._trial = False
        self._failures += 1
        cooldown: float | None = None
        if retry_after is not None:
            cooldown = min(retry_after, MAX_RETRY_AFTER_SECONDS)
        if self._cool_until is not None or self._failures >= self.cooldown_after_failures:
            cooldown = max(cooldown or 0.0, self.cooldown_seconds)
        if cooldown is not None:
            self._cool_until = max(self._cool_until or 0.0, now + cooldown)

    def abandoned(self, trial: bool) -> None:
        """The attempt ended with no verdict (the client went away): another may be the trial."""
        if trial:
            self._trial = False


class UpstreamPool:
    """Each configured upstream's health, kept across reloads by name and URLs."""

    def __init__(self, routes: Routes) -> None:
        self._health: dict[str, tuple[tuple[str, str], Health]] = {}
        self.adopt(routes)

    def adopt(self, routes: Routes) -> None:
        """Health for the upstreams of ``routes``: kept for those whose name and URLs are the
        same, fresh for the others; the rest forgotten."""
        health: dict[str, tuple[tuple[str, str], Health]] = {}
        for upstream in routes.all:
            where = (upstream.base_url, upstream.anthropic_base_url)
            known = self._health.get(upstream.name)
            if known is not None and known[0] == where:
                state = known[1]
                state.cooldown_after_failures = upstream.cooldown_after_failures
                state.cooldown_seconds = upstream.cooldown_seconds
            else:
                state = Health(upstream.cooldown_after_failures, upstream.cooldown_seconds)
            health[upstream.name] = (where, state)
        self._health = health
        self._by_name = {name: state for name, (_, state) in health.items()}

    def health(self, upstream: Upstream) -> Health:
        """``upstream``'s health; one of its own, untracked, for an upstream a reload has just
        removed while a request was on its way to it."""
        state = self._by_name.get(upstream.name)
        if state is None:
            return Health(upstream.cooldown_after_failures, upstream.cooldown_seconds)
        return state

    def candidates(self, upstreams: tuple[Upstream, ...], now: float) -> tuple[Upstream, ...]:
        """The upstreams to try in order: those available now; if none is, all of them (a
        chance of an answer is better than a certain error)."""
        by_name = self._by_name
        for upstream in upstreams:
            state = by_name.get(upstream.name)
            if state is not None and not state.available(now):
                break
        else:
            return upstreams  # the usual case: all of them, without making a new tuple
        available = tuple(u for u in upstreams if self.health(u).available(now))
        return available or upstreams

    def up(self) -> Mapping[str, bool]:
        """Whether each configured upstream is up (``llm_upstream_up``)."""
        return {name: state.up for name, state in self._by_name.items()}


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """An answer's ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), if valid."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            value = float(milliseconds) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    text = headers.get("Retry-After")
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
