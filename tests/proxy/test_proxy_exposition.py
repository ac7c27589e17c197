"""The proxy's series render themselves exactly as prometheus_client would render them."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any

import aiohttp
import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import Accounts, ProxyMetrics, _AccountsCollector, _UpstreamUpCollector
from proxy.pricing import Usage
from sheepdog.core.exposition import (
    FastCollector,
    FastCounter,
    FastGauge,
    FastHistogram,
    MetricsRegistry,
    escape_label_value,
    render,
)
from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import TEAM_B_KEY, StartProxy

ACCEPTS = (
    "",
    "text/plain; version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=underscores",
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=0.0.4;q=0.3",
    "application/openmetrics-text",
)
# Label values that need escaping, or that look like syntax, or are not ASCII.
AWKWARD = ("back\\slash", 'quote"d', "new\nline", 'all\\"\n', "ünïcode ✓", '{x="1"}', ",", "")
ACCOUNTS = Accounts("CNY", 7.1, 7.3, {"team-a": 10.0}, {"team-a": 1.25, "team-b": 0.0})
UPSTREAMS_UP = {"holysheep": True, "backup": False}


@pytest.fixture(autouse=True)
def _no_created() -> None:
    disable_created_metrics()  # type: ignore[no-untyped-call]


def _reference(metrics: ProxyMetrics) -> tuple[CollectorRegistry, dict[str, Any]]:
    """The same families as prometheus_client metrics, on a registry of their own."""
    registry = CollectorRegistry()
    families: dict[str, Any] = {}
    for attribute, family in vars(metrics).items():
        if isinstance(family, FastCounter):
            families[attribute] = Counter(
                family.name, family.documentation, family.labelnames, registry=registry
            )
        elif isinstance(family, FastGauge):
            families[attribute] = Gauge(
                family.name, family.documentation, family.labelnames, registry=registry
            )
        elif isinstance(family, FastHistogram):
            families[attribute] = Histogram(
                family.name,
                family.documentation,
                family.labelnames,
                buckets=family._bounds,
                registry=registry,
            )
    registry.register(_AccountsCollector(lambda: ACCOUNTS))
    registry.register(_UpstreamUpCollector(lambda: UPSTREAMS_UP))
    return registry, families


def _traffic(seed: int, models: Iterable[str], clients: Iterable[str]) -> list[tuple[Any, ...]]:
    """Operations as (family attribute, label values, method, amount)."""
    rnd = random.Random(seed)
    models, clients = list(models), list(clients)
    ops: list[tuple[Any, ...]] = []
    for _ in range(3000):
        model, client = rnd.choice(models), rnd.choice(clients)
        route = rnd.choice(("chat", "responses", "embeddings", 'odd"route'))
        kind = rnd.randrange(11)
        if kind == 0:
            ops.append(
                ("requests", (model, route, str(rnd.choice((200, 429, 499))), client), "inc", 1)
            )
        elif kind == 1:
            seconds = rnd.choice((0.01, 0.02, 81.92, 0.0, 1e-9, 100.0, 2e6, rnd.random() * 10))
            ops.append(("duration", (model, route), "observe", seconds))
        elif kind == 2:
            ops.append(
                (
                    "time_to_first_token",
                    (model,),
                    "observe",
                    rnd.choice((0.001, 5.0, 11.0, rnd.random())),
                )
            )
        elif kind == 3:
            tokens = rnd.choice((0, 1, 999_999, 1_000_000, 12_345_678))
            ops.append(("tokens", (model, rnd.choice(("input", "output")), client), "inc", tokens))
        elif kind == 4:
            ops.append(
                ("cost", (model, client), "inc", rnd.choice((0.0, 1e-7, 0.1, 3.5e6, rnd.random())))
            )
        elif kind == 5:
            ops.append(("active", (model,), rnd.choice(("inc", "dec")), 1))
        elif kind == 6:
            ops.append(("usage_missing", (model, route), "inc", 1))
        elif kind == 7:
            ops.append(
                ("upstream_interrupted", (model, route, rnd.choice(("timeout", "error"))), "inc", 1)
            )
        elif kind == 8:
            ops.append(("rate_limited", (client, rnd.choice(("requests", "tokens"))), "inc", 1))
        elif kind == 9:
            code = rnd.choice(("200", "429", "503", "error", "timeout"))
            ops.append(("upstream_requests", (rnd.choice(("a", "b", "")), code), "inc", 1))
        else:
            ops.append(("upstream_failovers", (model, client), "inc", 1))
    return ops


def _apply(families: dict[str, Any], ops: list[tuple[Any, ...]]) -> None:
    for attribute, values, method, amount in ops:
        getattr(families[attribute].labels(*values), method)(amount)


def _samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _pair(
    seed: int, models: list[str], clients: list[str]
) -> tuple[MetricsRegistry, CollectorRegistry]:
    """A registry with the proxy's metrics and a prometheus_client one after the same traffic."""
    fast = MetricsRegistry()
    metrics = ProxyMetrics(fast, lambda: ACCOUNTS, lambda: UPSTREAMS_UP)
    reference, families = _reference(metrics)
    for reason in ("missing_key", "invalid_key", "upstream_rejected"):
        families["auth_failures"].labels(reason)
    ops = _traffic(seed, models, clients)
    _apply(vars(metrics), ops)
    _apply(families, ops)
    return fast, reference


@pytest.mark.parametrize("seed", range(5))
def test_fast_exposition_is_prometheus_clients_own(seed: int) -> None:
    """After varied traffic, the text is byte for byte prometheus_client's for the same series."""
    models = [f"model-{n}" for n in range(7)] + ["other", *AWKWARD[:4]]
    clients = [f"team-{n}" for n in range(5)] + ["anonymous"]
    fast, reference = _pair(seed, models, clients)

    expected = generate_latest(reference)
    rendered = render(fast, generate_latest)
    assert rendered == expected
    # The collect() path (OpenMetrics, ?name[]=, get_sample_value) gives the same samples.
    assert generate_latest(fast) == expected
    assert _samples(rendered.decode()) == _samples(expected.decode())
    assert len(_samples(rendered.decode())) > 1000


@pytest.mark.parametrize("accept", ACCEPTS)
def test_every_format_a_scraper_can_ask_for(accept: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text 0.0.4 and 1.0.0, OpenMetrics, any escaping: the bytes of prometheus_client's encoder,
    rendered without collect()."""
    fast, reference = _pair(7, ["gpt-4.1", 'q"uote', "other"], ["team-a", "team-b"])
    encoder, _ = choose_encoder(accept)
    expected = encoder(reference)
    assert encoder(fast) == expected

    def no_collect(self: FastCollector) -> None:
        raise AssertionError("the fast path called collect()")

    monkeypatch.setattr(FastCollector, "collect", no_collect)
    rendered = render(fast, encoder)
    assert rendered == expected
    if "openmetrics" in accept:
        assert rendered == openmetrics_latest(reference)
        assert rendered.endswith(b"# EOF\n")
        assert rendered.count(b"# EOF") == 1


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain;version=1.0.0;escaping=dots",
        "application/openmetrics-text;version=1.0.0;escaping=dots",
        "application/openmetrics-text;version=2.0.0",
    ],
)
def test_formats_that_change_names_or_lines_are_left_to_the_encoder(accept: str) -> None:
    """Dots escaping rewrites every ``_``, OpenMetrics 2.0 may write other lines: the encoder's
    own output, whatever the installed prometheus_client makes of the Accept header."""
    fast, reference = _pair(3, ["gpt-4.1", "other"], ["team-a"])
    encoder, _ = choose_encoder(accept)
    assert render(fast, encoder) == encoder(reference)


def test_registration_order_is_kept_through_unregister_and_refused_duplicates() -> None:
    """Collectors come out in the order they were registered, as ``generate_latest`` has them,
    also after one is unregistered and registered again and a duplicate name was refused."""
    registry, reference = MetricsRegistry(), CollectorRegistry()
    fast = FastCounter("fast_total", "Fast.", ["a"])
    fast.labels("x").inc()
    fast_collector = FastCollector([fast])
    first = Gauge("first", "First.", registry=registry)
    registry.register(fast_collector)
    Gauge("last", "Last.", registry=registry).set(3)
    with pytest.raises(ValueError, match="Duplicated"):
        Gauge("first", "Again.", registry=registry)
    registry.unregister(first)
    registry.register(first)
    first.set(2)
    assert [type(c) for c in registry.collectors()] == [FastCollector, Gauge, Gauge]

    slow = Counter("fast_total", "Fast.", ["a"], registry=reference)
    Gauge("last", "Last.", registry=reference).set(3)
    Gauge("first", "First.", registry=reference).set(2)
    slow.labels("x").inc()
    for encoder in (generate_latest, openmetrics_latest):
        assert render(registry, encoder) == encoder(reference) == encoder(registry)


def test_target_info_is_rendered_by_the_encoder() -> None:
    """A registry with target info (sheepdog sets none) gets prometheus_client's own output."""
    registry = MetricsRegistry()
    ProxyMetrics(registry, lambda: ACCOUNTS).count_request("gpt-4.1", "chat", 200, "team-a")
    registry.set_target_info({"service": "sheepdog"})
    for encoder in (generate_latest, openmetrics_latest):
        assert b"target_info" in render(registry, encoder)
        assert render(registry, encoder) == encoder(registry)


def test_label_values_are_escaped_as_prometheus_client_does() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    registry, reference = MetricsRegistry(), CollectorRegistry()
    fast = FastCounter("escapes_total", 'Help with a \\ backslash, "quotes"\nand a newline.', ["v"])
    slow = Counter("escapes_total", fast.documentation, ["v"], registry=reference)
    registry.register(FastCollector([fast]))
    for value in AWKWARD:
        fast.labels(value).inc(2)
        slow.labels(value).inc(2)
    for encoder in (generate_latest, openmetrics_latest):
        assert render(registry, encoder) == encoder(reference)
    parsed = _samples(render(registry, generate_latest).decode())
    assert {dict(labels)["v"] for _, labels, _ in parsed} == set(AWKWARD)


def test_numbers_are_formatted_as_prometheus_client_does() -> None:
    registry, reference = MetricsRegistry(), CollectorRegistry()
    fast = FastGauge("numbers", "Awkward numbers.", ["n"])
    slow = Gauge("numbers", "Awkward numbers.", ["n"], registry=reference)
    registry.register(FastCollector([fast]))
    values = (
        0,
        1,
        -1,
        0.5,
        1e6,
        1e-7,
        123456789.0,
        2**53 + 1,
        -2.5e10,
        math.inf,
        -math.inf,
        math.nan,
        1 / 3,
    )
    for index, value in enumerate(values):
        fast.labels(str(index)).set(value)
        slow.labels(str(index)).set(value)
    assert render(registry, generate_latest) == generate_latest(reference)


def test_histogram_bounds_and_nan_fall_where_prometheus_clients_do() -> None:
    registry, reference = MetricsRegistry(), CollectorRegistry()
    buckets = (0.01, 0.02, 1.0, 1e6)
    fast = FastHistogram("h_seconds", "H.", ["m"], buckets)
    slow = Histogram("h_seconds", "H.", ["m"], buckets=buckets, registry=reference)
    registry.register(FastCollector([fast]))
    for value in (0.0, 0.01, 0.010000001, 0.02, 1.0, 1e6, 1e6 + 1, math.inf, -1.0, math.nan):
        fast.labels("x").observe(value)
        slow.labels("x").observe(value)
    assert render(registry, generate_latest) == generate_latest(reference)


def test_counters_refuse_to_go_down_and_labels_must_match() -> None:
    counter = FastCounter("c_total", "C.", ["a", "b"])
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("x", "y").inc(-1)
    with pytest.raises(ValueError, match="expected labels"):
        counter.labels("x")
    with pytest.raises(ValueError, match="invalid metric or label name"):
        FastCounter("bad-name_total", "C.", ["a"])
    with pytest.raises(ValueError, match="le"):
        FastHistogram("h", "H.", ["le"], (1.0,))


def test_get_sample_value_reads_the_fast_series() -> None:
    registry = MetricsRegistry()
    metrics = ProxyMetrics(registry, lambda: ACCOUNTS)
    metrics.count_request("gpt-4.1", "chat", 200, "team-a")
    metrics.count_usage("gpt-4.1", "team-a", Usage(input_tokens=10, output_tokens=3), 0.5)
    metrics.observe_duration("gpt-4.1", "chat", 0.03)
    labels = {"model": "gpt-4.1", "route": "chat", "code": "200", "client": "team-a"}
    assert registry.get_sample_value("llm_requests_total", labels) == 1
    tokens = {"model": "gpt-4.1", "type": "output", "client": "team-a"}
    assert registry.get_sample_value("llm_tokens_total", tokens) == 3
    bucket = {"model": "gpt-4.1", "route": "chat", "le": "0.04"}
    assert registry.get_sample_value("llm_request_duration_seconds_bucket", bucket) == 1
    assert registry.get_sample_value("llm_budget_usd", {"client": "team-a"}) == 10.0


async def test_metrics_endpoint_serves_what_the_encoder_would(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """Over HTTP, after real relayed traffic, in every format and with ?name[]=."""
    upstream.script("gpt-4.1", prompt_tokens=1000, completion_tokens=500)
    proxy = await start_proxy()
    async with proxy.client() as team_a, proxy.client(TEAM_B_KEY) as team_b:
        await team_a.chat.completions.create(model="gpt-4.1", messages=[])
        stream = await team_b.chat.completions.create(model="gpt-4.1", messages=[], stream=True)
        _ = [chunk async for chunk in stream]
    url = proxy.url("/metrics")
    async with aiohttp.ClientSession() as session:
        for accept in ACCEPTS:
            encoder, content_type = choose_encoder(accept)
            for encoding in ("gzip", "identity"):
                headers = {"Accept": accept, "Accept-Encoding": encoding}
                async with session.get(url, headers=headers) as response:
                    body = await response.read()
                    assert response.headers["Content-Type"] == content_type
                # Nothing changes between the two renders: no traffic, no time-dependent series.
                assert body == encoder(proxy.registry), (accept, encoding)
        params = {"name[]": "llm_requests_total"}
        async with session.get(url, params=params) as response:
            text = await response.text()
    assert _samples(text) == {
        sample for sample in _samples(proxy.exposition()) if sample[0] == "llm_requests_total"
    }
    assert len(_samples(text)) >= 2
