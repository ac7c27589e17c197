"""The proxy's metrics, named and labelled as SPEC.md says; all on the registry passed in.

Beyond the contract, two counters say where metering is incomplete, so that nobody has to trust a
number that could be quietly wrong:

- ``llm_usage_missing_total{model,route}``: requests the upstream may bill for whose token usage
  sheepdog could not read (a stream that ended without a usage chunk, a client that went away
  before it, an upstream that answered 2xx without ``usage`` or in a coding sheepdog cannot
  decode). Their tokens are not in ``llm_tokens_total``: sheepdog never estimates.
- ``llm_upstream_interrupted_total{model,route,reason}``: responses the upstream broke off (reason
  ``timeout`` or ``error``) after the status had already been sent, so ``code`` still shows it;
  the client saw a truncated response, never a clean end; or ended with an error event inside a
  stream (reason ``stream_error``: Anthropic's ``overloaded_error`` mid-stream).

And one for what the prompt cache is worth: ``llm_cache_savings_usd_total{model,client}``, the USD
that cache reads saved against the model's input price (the premium paid for cache writes is in
``llm_cost_usd_total`` already).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from proxy.tokens import Usage
from sheepdog.core.exposition import (
    CounterChild,
    FastCollector,
    FastCounter,
    FastGauge,
    FastHistogram,
    GaugeChild,
    HistogramChild,
)

__all__ = ["DURATION_BUCKETS", "TTFT_BUCKETS", "Accounts", "ProxyMetrics", "RequestSeries"]

# OpenTelemetry GenAI conventions: duration 0.01 s doubling to 81.92 s; TTFT as listed.
DURATION_BUCKETS: Final = tuple(round(0.01 * 2**power, 2) for power in range(14))
TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
AUTH_FAILURE_REASONS: Final = ("missing_key", "invalid_key", "upstream_rejected")
TOKEN_TYPES: Final = ("input", "output")
TOKEN_DETAIL_TYPES: Final = ("cache_read", "cache_write", "reasoning")


@dataclass(frozen=True)
class Accounts:
    """What the account gauges show at scrape time."""

    currency: str
    usd_rate: float
    market_usd_rate: float
    budgets_usd: Mapping[str, float] = field(default_factory=dict)
    spend_month_usd: Mapping[str, float] = field(default_factory=dict)


class _AccountsCollector:
    """Budget, month-to-date spend and billing rates, read fresh at every scrape.

    Computed at scrape time so that a new month shows zero spend without waiting for a request,
    and a reload shows the new clients and rates without stale series.
    """

    def __init__(self, accounts: Callable[[], Accounts]) -> None:
        self._accounts = accounts

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families(None)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self._families(self._accounts())

    @staticmethod
    def _families(accounts: Accounts | None) -> list[GaugeMetricFamily]:
        budget = GaugeMetricFamily(
            "llm_budget_usd",
            "Monthly budget of each client that has one, in USD at list price.",
            labels=["client"],
        )
        spend = GaugeMetricFamily(
            "llm_spend_month_usd",
            "Spend this calendar month (UTC), in USD at list price, from the persistent ledger.",
            labels=["client"],
        )
        billing = GaugeMetricFamily(
            "llm_billing_usd_rate",
            "Units of the billing currency the relay charges per USD of list price.",
            labels=["currency"],
        )
        market = GaugeMetricFamily(
            "llm_market_usd_rate",
            "Units of the billing currency one USD costs elsewhere, for the savings figure.",
            labels=["currency"],
        )
        if accounts is not None:
            for client, usd in accounts.budgets_usd.items():
                budget.add_metric([client], usd)
            for client, usd in accounts.spend_month_usd.items():
                spend.add_metric([client], usd)
            billing.add_metric([accounts.currency], accounts.usd_rate)
            market.add_metric([accounts.currency], accounts.market_usd_rate)
        return [budget, spend, billing, market]


class _UpstreamUpCollector:
    """``llm_upstream_up``, read from each configured upstream's health at scrape time, so a
    reload shows exactly the upstreams configured now."""

    def __init__(self, up: Callable[[], Mapping[str, bool]]) -> None:
        self._up = up

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = self._family()
        for upstream, up in self._up().items():
            family.add_metric([upstream], 1.0 if up else 0.0)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "llm_upstream_up",
            "1 while the upstream is taking requests; 0 from the failures that cooled it down "
            "until a request succeeds on it again.",
            labels=["upstream"],
        )


class ProxyMetrics:
    """Every proxy metric; label children are cached, since label sets are bounded.

    The series live in a ``FastCollector`` (sheepdog/core/exposition.py): at 50 models × 20 clients
    they are thousands of samples, which it renders without prometheus_client's per-sample
    objects. Names, labels and buckets are as SPEC.md lists them.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        accounts: Callable[[], Accounts],
        upstreams_up: Callable[[], Mapping[str, bool]] = dict,
    ) -> None:
        self.requests = FastCounter(
            "llm_requests_total",
            "Requests to /v1/*, by the HTTP status sent to the client (499: it went away first).",
            ["model", "route", "code", "client"],
        )
        self.duration = FastHistogram(
            "llm_request_duration_seconds",
            "Time from receiving a relayed request to the end of its response.",
            ["model", "route"],
            buckets=DURATION_BUCKETS,
        )
        self.time_to_first_token = FastHistogram(
            "llm_time_to_first_token_seconds",
            "Time from receiving a streamed request to the arrival of its first content event.",
            ["model"],
            buckets=TTFT_BUCKETS,
        )
        self.tokens = FastCounter(
            "llm_tokens_total",
            "Tokens the upstream reported using, never estimated.",
            ["model", "type", "client"],
        )
        self.cost = FastCounter(
            "llm_cost_usd_total",
            "Cost of the reported tokens in USD at list price, each kind of token at its rate.",
            ["model", "client"],
        )
        self.token_details = FastCounter(
            "llm_token_details_total",
            "Cache reads and writes (of the input tokens) and reasoning (of the output tokens).",
            ["model", "type", "client"],
        )
        self.cache_savings = FastCounter(
            "llm_cache_savings_usd_total",
            "USD that cache reads saved against the model's input price, at list price.",
            ["model", "client"],
        )
        self.active = FastGauge(
            "llm_active_requests",
            "Requests being relayed right now.",
            ["model"],
        )
        self.auth_failures = FastCounter(
            "llm_auth_failures_total",
            "Requests refused for their key, or whose key the upstream rejected (401/403).",
            ["reason"],
        )
        self.usage_missing = FastCounter(
            "llm_usage_missing_total",
            "Requests the upstream may bill whose token usage could not be read (not estimated).",
            ["model", "route"],
        )
        self.upstream_interrupted = FastCounter(
            "llm_upstream_interrupted_total",
            "Responses the upstream broke off after their status was sent (reason timeout|error).",
            ["model", "route", "reason"],
        )
        self.rate_limited = FastCounter(
            "llm_rate_limited_total",
            "Requests refused with 429 over the client's requests_per_minute or tokens_per_minute.",
            ["client", "limit"],
        )
        self.upstream_requests = FastCounter(
            "llm_upstream_requests_total",
            "Attempts at each upstream, by its status, or error (no connection, or broken before "
            "the answer) or timeout (no answer in time).",
            ["upstream", "code"],
        )
        self.upstream_failovers = FastCounter(
            "llm_upstream_failovers_total",
            "Requests sent on from one upstream to the next, before any byte reached the client.",
            ["from", "to"],
        )
        registry.register(
            FastCollector(
                [
                    self.requests,
                    self.duration,
                    self.time_to_first_token,
                    self.tokens,
                    self.cost,
                    self.token_details,
                    self.cache_savings,
                    self.active,
                    self.auth_failures,
                    self.usage_missing,
                    self.upstream_interrupted,
                    self.rate_limited,
                    self.upstream_requests,
                    self.upstream_failovers,
                ]
            )
        )
        registry.register(_AccountsCollector(accounts))
        registry.register(_UpstreamUpCollector(upstreams_up))
        self._request_children: dict[tuple[str, str, str, str], CounterChild] = {}
        self._token_children: dict[tuple[str, str], _UsageCounters] = {}
        self._active_children: dict[str, GaugeChild] = {}
        self._duration_children: dict[tuple[str, str], HistogramChild] = {}
        self._attempt_children: dict[tuple[str, int | str], CounterChild] = {}
        self._request_series: dict[tuple[str, str, str], RequestSeries] = {}
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason)

    def prepare_series(self, models: Iterable[str], clients: Iterable[str]) -> None:
        """Create at zero the series every client will have, so ``increase()`` sees the first use.

        Called at start-up and on reload (for new clients and newly priced models).
        """
        clients = tuple(clients)
        for model in models:
            self.active_gauge(model)
            for client in clients:
                self.usage_counters(model, client)

    def prepare_guard_series(
        self, limited: Iterable[tuple[str, Iterable[str]]], upstreams: Iterable[str]
    ) -> None:
        """Create at zero the rate-limit series of each limited client (its limits), and the
        failover series between the configured upstreams, in the order they are tried."""
        for client, limits in limited:
            for limit in limits:
                self.rate_limited.labels(client, limit)
        names = tuple(upstreams)
        for index, source in enumerate(names):
            for target in names[index + 1 :]:
                self.upstream_failovers.labels(source, target)

    def count_attempt(self, upstream: str, code: int | str) -> None:
        """One attempt at ``upstream``: its status, ``error`` or ``timeout`` (a status is
        written out as a label only for the first attempt that had it)."""
        key = (upstream, code)
        child = self._attempt_children.get(key)
        if child is None:
            child = self._attempt_children[key] = self.upstream_requests.labels(upstream, str(code))
        child.inc()

    def request_series(self, model: str, route: str, client: str) -> RequestSeries:
        """The series a request of ``client`` for ``model`` on ``route`` adds to, resolved once:
        a dictionary lookup a request instead of one per metric. As bounded as the labels are
        (priced models and ``other``, the routes, the configured clients)."""
        key = (model, route, client)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = RequestSeries(self, model, route, client)
        return series

    def count_request(self, model: str, route: str, code: int, client: str) -> None:
        key = (model, route, str(code), client)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(*key)
        child.inc()

    def observe_duration(self, model: str, route: str, seconds: float) -> None:
        key = (model, route)
        child = self._duration_children.get(key)
        if child is None:
            child = self._duration_children[key] = self.duration.labels(*key)
        child.observe(seconds)

    def active_gauge(self, model: str) -> GaugeChild:
        child = self._active_children.get(model)
        if child is None:
            child = self._active_children[model] = self.active.labels(model)
        return child

    def count_usage(
        self, model: str, client: str, usage: Usage, usd: float, cache_savings_usd: float = 0.0
    ) -> None:
        self.usage_counters(model, client).add(usage, usd, cache_savings_usd)

    def usage_counters(self, model: str, client: str) -> _UsageCounters:
        key = (model, client)
        children = self._token_children.get(key)
        if children is None:
            children = self._token_children[key] = _UsageCounters(
                self.tokens.labels(model, "input", client),
                self.tokens.labels(model, "output", client),
                self.cost.labels(model, client),
                self.token_details.labels(model, "cache_read", client),
                self.token_details.labels(model, "cache_write", client),
                self.token_details.labels(model, "reasoning", client),
                self.cache_savings.labels(model, client),
            )
        return children


@dataclass(frozen=True, slots=True)
class _UsageCounters:
    """The series one (model, client) pair's usage adds to, created together."""

    input: CounterChild
    output: CounterChild
    cost: CounterChild
    cache_read: CounterChild
    cache_write: CounterChild
    reasoning: CounterChild
    savings: CounterChild

    def add(self, usage: Usage, usd: float, cache_savings_usd: float) -> None:
        # Added to the values directly, without a call each: counts and prices are never
        # negative (proxy.tokens bounds every count at zero, the config every price).
        self.input.value += usage.input_tokens
        self.output.value += usage.output_tokens
        self.cost.value += usd
        if usage.cache_read_tokens:
            self.cache_read.value += usage.cache_read_tokens
            self.savings.value += cache_savings_usd
        if usage.cache_write_tokens:
            self.cache_write.value += usage.cache_write_tokens
        if usage.reasoning_tokens:
            self.reasoning.value += usage.reasoning_tokens


class RequestSeries:
    """The series of one (model, route, client): requests by code, duration, usage."""

    __slots__ = ("_by_code", "_client", "_duration", "_metrics", "_model", "_route", "_usage")

    def __init__(self, metrics: ProxyMetrics, model: str, route: str, client: str) -> None:
        self._metrics = metrics
        self._model, self._route, self._client = model, route, client
        self._by_code: dict[int, CounterChild] = {}
        # Created at first use, as the series without this cache are: a request refused before
        # it was relayed has no duration, and only metered routes count usage.
        self._duration: HistogramChild | None = None
        self._usage: _UsageCounters | None = None

    def count(self, code: int) -> None:
        """One request answered with ``code``."""
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self._metrics.requests.labels(
                self._model, self._route, str(code), self._client
            )
        child.inc()

    def observe_duration(self, seconds: float) -> None:
        child = self._duration
        if child is None:
            child = self._duration = self._metrics.duration.labels(self._model, self._route)
        child.observe(seconds)

    def count_usage(self, usage: Usage, usd: float, cache_savings_usd: float = 0.0) -> None:
        counters = self._usage
        if counters is None:
            counters = self._usage = self._metrics.usage_counters(self._model, self._client)
        counters.add(usage, usd, cache_savings_usd)
