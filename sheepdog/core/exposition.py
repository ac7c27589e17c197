"""Label series that format themselves: a scrape of thousands of them without prometheus_client's
per-sample objects.

prometheus_client's ``collect()`` builds a ``Sample`` and a labels dict for every series at every
scrape, and ``generate_latest`` then sorts, escapes and formats each one again: about 20 µs a
sample, 150 ms for the proxy's 50 models × 20 clients. Here each series keeps the text before its
value (``name{label="v",...} ``), made once when the series is created, and a scrape formats only
the numbers. ``render`` gives byte for byte what prometheus_client's encoders (the text format
and OpenMetrics) write for the same series: labels sorted by name, values escaped and numbers
formatted the same way. ``collect()`` still gives the ordinary families, for ``?name[]=``,
``get_sample_value`` and any other encoder.

Only prometheus_client's public API is used: the service's metrics live on a
:class:`MetricsRegistry`, which remembers its collectors in registration order as they pass through
``register``, so that ``render`` can write the fast ones itself and hand the others, in the same
order, to prometheus_client's own encoder.

Updates happen on the event loop thread only and take no lock; a scrape reads from a worker
thread, copying each dict of series first, so it sees every series created before it began. A
histogram's ``_sum`` may lag its buckets by the one observation being made during the copy. No
``_created`` samples: the service turns them off (``disable_created_metrics``).
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "CounterChild",
    "FastCollector",
    "FastCounter",
    "FastGauge",
    "FastHistogram",
    "GaugeChild",
    "HistogramChild",
    "MetricsRegistry",
    "escape_label_value",
    "render",
]

_INF = float("inf")
_EOF = "# EOF\n"
# The name escaping schemes a scraper may ask for (``escaping=`` in its Accept header) that leave
# names valid in the legacy character set, as all of ours are, unchanged; ``dots`` does not.
_ESCAPING_KEEPS_OUR_NAMES = frozenset({"underscores", "values", "allow-utf-8"})
_OPENMETRICS_VERSION = "1.0.0"
_LEGACY_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# prometheus_client's number format (``1.0``, ``+Inf``, ``1e+06``), typed.
_go_float: Callable[[float], str] = floatToGoString


def escape_label_value(value: str) -> str:
    """As prometheus_client escapes label values: backslash, newline, double quote."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _series_prefix(name: str, labels: Sequence[tuple[str, str]]) -> str:
    """``name{a="1",b="2"} `` with labels sorted by name, or ``name `` without labels."""
    if not labels:
        return f"{name} "
    inner = ",".join(f'{key}="{escape_label_value(value)}"' for key, value in sorted(labels))
    return f"{name}{{{inner}}} "


class CounterChild:
    __slots__ = ("labels", "prefix", "value")

    def __init__(self, labels: dict[str, str], prefix: str) -> None:
        self.labels = labels
        self.prefix = prefix
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class GaugeChild:
    __slots__ = ("labels", "prefix", "value")

    def __init__(self, labels: dict[str, str], prefix: str) -> None:
        self.labels = labels
        self.prefix = prefix
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class HistogramChild:
    __slots__ = (
        "_bounds",
        "bucket_prefixes",
        "count_prefix",
        "counts",
        "labels",
        "sum",
        "sum_prefix",
    )

    def __init__(
        self,
        labels: dict[str, str],
        bounds: tuple[float, ...],
        bucket_prefixes: tuple[str, ...],
        count_prefix: str,
        sum_prefix: str,
    ) -> None:
        self.labels = labels
        self._bounds = bounds
        self.bucket_prefixes = bucket_prefixes
        self.count_prefix = count_prefix
        self.sum_prefix = sum_prefix
        self.counts = [0.0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.sum += amount
        if amount == amount:  # NaN falls in no bucket, as in prometheus_client
            self.counts[bisect_left(self._bounds, amount)] += 1


_Child = TypeVar("_Child", CounterChild, GaugeChild, HistogramChild)


class _Family(Generic[_Child]):
    """A labelled metric; ``labels(*values)`` returns its series, created at zero on first use."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Child] = {}
        exposed = self._exposed_name()
        for label in (self.name, *self.labelnames):
            if not _LEGACY_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"{self.name}: invalid metric or label name {label!r}")
        self.text_header = (
            f"# HELP {exposed} {_escape_help(documentation)}\n# TYPE {exposed} {self.kind}\n"
        )
        self.openmetrics_header = (
            f"# HELP {self.name} {escape_label_value(documentation)}\n"
            f"# TYPE {self.name} {self.kind}\n"
        )

    def _exposed_name(self) -> str:
        return self.name

    def labels(self, *values: str) -> _Child:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            values = tuple(str(value) for value in values)
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = self._new_child(
                    dict(zip(self.labelnames, values, strict=True))
                )
        return child

    def _new_child(self, labels: dict[str, str]) -> _Child:
        raise NotImplementedError

    def series(self) -> list[_Child]:
        # list() of a dict's values is one C call, so the loop thread cannot resize it midway.
        return list(self._children.values())

    def describe(self) -> Metric:
        return Metric(self.name, self.documentation, self.kind)

    def metric(self) -> Metric:
        raise NotImplementedError

    def render(self, out: list[str]) -> None:
        """Append the series' sample lines, the same in both formats."""
        raise NotImplementedError


class FastCounter(_Family[CounterChild]):
    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        # As prometheus_client: the family is named without ``_total``, its sample with it.
        super().__init__(name.removesuffix("_total"), documentation, labelnames)

    def _exposed_name(self) -> str:
        return f"{self.name}_total"

    def _new_child(self, labels: dict[str, str]) -> CounterChild:
        return CounterChild(labels, _series_prefix(f"{self.name}_total", list(labels.items())))

    def metric(self) -> Metric:
        metric = self.describe()
        for child in self.series():
            metric.add_sample(f"{self.name}_total", dict(child.labels), child.value)
        return metric

    def render(self, out: list[str]) -> None:
        fmt = _go_float
        out.extend([f"{child.prefix}{fmt(child.value)}\n" for child in self.series()])


class FastGauge(_Family[GaugeChild]):
    kind = "gauge"

    def _new_child(self, labels: dict[str, str]) -> GaugeChild:
        return GaugeChild(labels, _series_prefix(self.name, list(labels.items())))

    def metric(self) -> Metric:
        metric = self.describe()
        for child in self.series():
            metric.add_sample(self.name, dict(child.labels), child.value)
        return metric

    def render(self, out: list[str]) -> None:
        fmt = _go_float
        out.extend([f"{child.prefix}{fmt(child.value)}\n" for child in self.series()])


class FastHistogram(_Family[HistogramChild]):
    kind = "histogram"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        bounds = [float(bound) for bound in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if not bounds or bounds[-1] != _INF:
            bounds.append(_INF)
        if "le" in self.labelnames:
            raise ValueError("Invalid label metric name: le")
        self._bounds = tuple(bounds)
        self._le = tuple(_go_float(bound) for bound in bounds)

    def _new_child(self, labels: dict[str, str]) -> HistogramChild:
        items = list(labels.items())
        return HistogramChild(
            labels,
            self._bounds,
            tuple(_series_prefix(f"{self.name}_bucket", [*items, ("le", le)]) for le in self._le),
            _series_prefix(f"{self.name}_count", items),
            _series_prefix(f"{self.name}_sum", items),
        )

    @staticmethod
    def _snapshot(child: HistogramChild) -> tuple[list[float], float]:
        return child.counts[:], child.sum

    def metric(self) -> Metric:
        metric = self.describe()
        for child in self.series():
            counts, total = self._snapshot(child)
            acc = 0.0
            for le, count in zip(self._le, counts, strict=True):
                acc += count
                metric.add_sample(f"{self.name}_bucket", {**child.labels, "le": le}, acc)
            metric.add_sample(f"{self.name}_count", dict(child.labels), acc)
            metric.add_sample(f"{self.name}_sum", dict(child.labels), total)
        return metric

    def render(self, out: list[str]) -> None:
        fmt = _go_float
        for child in self.series():
            counts, total = self._snapshot(child)
            acc = 0.0
            for prefix, count in zip(child.bucket_prefixes, counts, strict=True):
                acc += count
                out.append(f"{prefix}{fmt(acc)}\n")
            out.append(f"{child.count_prefix}{fmt(acc)}\n")
            out.append(f"{child.sum_prefix}{fmt(total)}\n")


class FastCollector(Collector):
    """Families registered as one collector, in the order given; renders its own text."""

    def __init__(
        self,
        families: Iterable[_Family[CounterChild] | _Family[GaugeChild] | _Family[HistogramChild]],
    ) -> None:
        self._families = tuple(families)

    def describe(self) -> Iterable[Metric]:
        return [family.describe() for family in self._families]

    def collect(self) -> Iterable[Metric]:
        return [family.metric() for family in self._families]

    def render_text(self, openmetrics: bool = False) -> str:
        """The families as ``generate_latest`` (or, for ``openmetrics``, the OpenMetrics encoder
        without its ``# EOF``) writes them."""
        out: list[str] = []
        for family in self._families:
            out.append(family.openmetrics_header if openmetrics else family.text_header)
            family.render(out)
        return "".join(out)


class MetricsRegistry(CollectorRegistry):
    """A ``CollectorRegistry`` that also keeps its collectors in registration order.

    prometheus_client's registry does not tell which collectors it holds; this one remembers
    what passes through ``register`` and ``unregister`` (every metric given ``registry=`` does),
    so that :func:`render` can let ``FastCollector``s write their own text and keep the order
    ``generate_latest`` uses.
    """

    def __init__(self) -> None:
        super().__init__()
        self._collectors_in_order: list[Collector] = []
        self._order_lock = threading.Lock()

    def register(self, collector: Collector) -> None:
        with self._order_lock:
            super().register(collector)  # refuses duplicate names before we note the collector
            self._collectors_in_order.append(collector)

    def unregister(self, collector: Collector) -> None:
        with self._order_lock:
            super().unregister(collector)
            self._collectors_in_order.remove(collector)

    def collectors(self) -> list[Collector]:
        """The registered collectors, in the order they were registered."""
        with self._order_lock:
            return list(self._collectors_in_order)


class _Collectors(Collector):
    def __init__(self, collectors: Sequence[Collector]) -> None:
        self._collectors = tuple(collectors)

    def collect(self) -> Iterable[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def _fast_format(encoder: Callable[[Collector], bytes]) -> bool | None:
    """For an encoder ``choose_encoder`` gives: False for the text format, True for OpenMetrics 1.0,
    where our names come out unchanged; None for anything else (``render`` then just calls it)."""
    func, options = (
        (encoder.func, dict(encoder.keywords)) if isinstance(encoder, partial) else (encoder, {})
    )
    escaping = options.pop("escaping", "underscores")
    version = options.pop("version", _OPENMETRICS_VERSION)
    if options or escaping not in _ESCAPING_KEEPS_OUR_NAMES or version != _OPENMETRICS_VERSION:
        return None
    if func is generate_latest:
        return False
    if func is openmetrics_generate_latest:
        return True
    return None


def render(registry: MetricsRegistry, encoder: Callable[[Collector], bytes]) -> bytes:
    """What ``encoder(registry)`` returns, with ``FastCollector``s rendering themselves.

    ``encoder`` is one ``choose_encoder`` gives: the text format, or OpenMetrics 1.0, with any
    escaping that leaves legacy names as they are; for anything else it is simply called, as it is
    when the registry has target info (which sheepdog never sets).
    """
    openmetrics = _fast_format(encoder)
    if openmetrics is None or registry.get_target_info():
        return encoder(registry)
    parts: list[str] = []
    pending: list[Collector] = []

    def flush() -> None:
        if pending:
            text = encoder(_Collectors(pending)).decode()
            parts.append(text.removesuffix(_EOF) if openmetrics else text)
            pending.clear()

    for collector in registry.collectors():
        if isinstance(collector, FastCollector):
            flush()
            parts.append(collector.render_text(openmetrics))
        else:
            pending.append(collector)
    flush()
    if openmetrics:
        parts.append(_EOF)
    return "".join(parts).encode()
