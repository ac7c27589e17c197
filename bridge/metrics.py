"""The bridge's metrics, on the registry it is given (never the global one)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bridge.classify import REASONS

__all__ = ["BridgeMetrics"]

# Sending one message takes from milliseconds to the request timeout.
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ALERT_STATUSES = ("firing", "resolved")
_RESULTS = ("sent", "retried", "failed")


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.alerts_received = Counter(
            "sheepdog_alerts_received_total",
            "Alerts accepted into the outbox (an Alertmanager retry is not counted again).",
            ["target", "status"],
            registry=registry,
        )
        self.notifications = Counter(
            "sheepdog_notifications_total",
            "Messages sent to a channel, by result: sent, retried (attempt failed, will be "
            "tried again) or failed (dead-lettered).",
            ["target", "result"],
            registry=registry,
        )
        self.failures = Counter(
            "sheepdog_notification_failures_total",
            "Failed delivery attempts, by reason (retried or not).",
            ["target", "reason"],
            registry=registry,
        )
        self.duration = Histogram(
            "sheepdog_notification_duration_seconds",
            "Time taken by one delivery attempt.",
            ["target"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.pending = Gauge(
            "sheepdog_outbox_pending",
            "Notifications in the outbox waiting to be sent (pending or in flight).",
            ["target"],
            registry=registry,
        )
        self.oldest = Gauge(
            "sheepdog_outbox_oldest_seconds",
            "Age of the oldest notification waiting to be sent, 0 when none waits.",
            ["target"],
            registry=registry,
        )
        self.dead = Gauge(
            "sheepdog_outbox_dead",
            "Dead letters in the outbox: notifications that could not be delivered.",
            ["target"],
            registry=registry,
        )
        self.merged = Counter(
            "sheepdog_notifications_merged_total",
            "Notifications merged into digest messages because of the rate limit.",
            ["target"],
            registry=registry,
        )

    def add_targets(
        self, targets: Mapping[str, Iterable[str]], age_of: Callable[[str], float]
    ) -> None:
        """Create every series of ``targets`` at zero, so they exist from the start; each
        target's failure reasons are the shared ones and its channel's (``targets[name]``)."""
        for target, channel_reasons in targets.items():
            for status in _ALERT_STATUSES:
                self.alerts_received.labels(target, status)
            for result in _RESULTS:
                self.notifications.labels(target, result)
            for reason in (*REASONS, *channel_reasons):
                self.failures.labels(target, reason)
            self.duration.labels(target)
            self.pending.labels(target).set(0)
            self.dead.labels(target).set(0)
            self.merged.labels(target)
            self.oldest.labels(target).set_function(_bind(age_of, target))

    def remove_targets(self, targets: Iterable[str]) -> None:
        """Drop the gauges of targets no longer configured (their counters stay)."""
        for target in targets:
            for gauge in (self.pending, self.oldest, self.dead):
                with contextlib.suppress(KeyError):
                    gauge.remove(target)


def _bind(age_of: Callable[[str], float], target: str) -> Callable[[], float]:
    return lambda: age_of(target)
