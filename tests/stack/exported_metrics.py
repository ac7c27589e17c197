"""The metrics sheepdog exports: the SPEC's metrics table, then the families beyond it.

This is the one list the stack (rules, dashboards) is checked against, and
``test_end_to_end.py`` compares it with the live ``/metrics`` of ``sheepdog serve``, both ways:
every family here is there, and every ``llm_*`` and ``sheepdog_*`` family there is here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricType = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Metric:
    """One exported metric family: its name, type and label names."""

    name: str
    type: MetricType
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


# Histogram buckets from the SPEC (OpenTelemetry GenAI conventions).
DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01 ... 81.92 s
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
    0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
)  # fmt: skip

METRICS: tuple[Metric, ...] = (
    Metric("llm_requests_total", "counter", ("model", "route", "code", "client")),
    Metric(
        "llm_request_duration_seconds", "histogram", ("model", "route"), buckets=DURATION_BUCKETS
    ),
    Metric("llm_time_to_first_token_seconds", "histogram", ("model",), buckets=TTFT_BUCKETS),
    Metric("llm_tokens_total", "counter", ("model", "type", "client")),
    Metric("llm_cost_usd_total", "counter", ("model", "client")),
    Metric("llm_active_requests", "gauge", ("model",)),
    Metric("llm_auth_failures_total", "counter", ("reason",)),
    Metric("llm_budget_usd", "gauge", ("client",)),
    Metric("llm_spend_month_usd", "gauge", ("client",)),
    Metric("llm_billing_usd_rate", "gauge", ("currency",)),
    Metric("llm_market_usd_rate", "gauge", ("currency",)),
    Metric("sheepdog_alerts_received_total", "counter", ("target", "status")),
    Metric("sheepdog_notifications_total", "counter", ("target", "result")),
    Metric("sheepdog_notification_duration_seconds", "histogram", ("target",)),
    Metric("sheepdog_outbox_pending", "gauge", ("target",)),
    Metric("sheepdog_outbox_oldest_seconds", "gauge", ("target",)),
    Metric("llm_token_details_total", "counter", ("model", "type", "client")),
    Metric("llm_rate_limited_total", "counter", ("client", "limit")),
    Metric("llm_upstream_requests_total", "counter", ("upstream", "code")),
    Metric("llm_upstream_up", "gauge", ("upstream",)),
    Metric("llm_upstream_failovers_total", "counter", ("from", "to")),
    Metric("sheepdog_watchdog_last_heartbeat_timestamp_seconds", "gauge", ()),
    # Beyond the SPEC. The proxy: where metering is incomplete (docs/proxy.md).
    Metric("llm_usage_missing_total", "counter", ("model", "route")),
    Metric("llm_upstream_interrupted_total", "counter", ("model", "route", "reason")),
    Metric("llm_cache_savings_usd_total", "counter", ("model", "client")),
    # The service itself (README "Metrics").
    Metric("sheepdog_build_info", "gauge", ("version", "python")),
    Metric("sheepdog_config_last_reload_successful", "gauge", ()),
    Metric("sheepdog_config_last_reload_success_timestamp_seconds", "gauge", ()),
    # The bridge (bridge/metrics.py): why attempts failed, dead letters, digests.
    Metric("sheepdog_notification_failures_total", "counter", ("target", "reason")),
    Metric("sheepdog_outbox_dead", "gauge", ("target",)),
    Metric("sheepdog_notifications_merged_total", "counter", ("target",)),
)


def exported_series_names() -> frozenset[str]:
    """Every series name the metrics above produce in the exposition format.

    Histograms add ``_bucket``, ``_sum``, ``_count``; counters and histograms may add ``_created``
    (prometheus_client does, and Prometheus ingests it as a gauge).
    """
    names: set[str] = set()
    for metric in METRICS:
        if metric.type == "gauge":
            names.add(metric.name)
        elif metric.type == "counter":
            base = metric.name.removesuffix("_total")
            names.update({metric.name, f"{base}_created"})
        else:
            names.update(
                f"{metric.name}{suffix}" for suffix in ("_bucket", "_sum", "_count", "_created")
            )
    return frozenset(names)
