"""A realistic Alertmanager payload: what `sheepdog render` shows by default, and what every
template is tried on when the config is loaded."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["SAMPLE_PAYLOAD"]

SAMPLE_PAYLOAD: Final[dict[str, Any]] = {
    "receiver": "sheepdog",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "LLMRelayHighErrorRate",
                "model": "gpt-4.1",
                "service": "llm-relay",
                "severity": "critical",
                "instance": "relay-1:8000",
            },
            "annotations": {
                "summary": "错误率超过 1%",
                "description": "5xx ratio is 3.2% over the last 5 minutes",
                "runbook_url": "https://runbooks.example/llm-relay-errors",
            },
            "startsAt": "2026-11-26T21:57:39Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=llm%3Aerror_ratio%3Arate5m",
            "fingerprint": "cb48e77bc03c439c",
        },
        {
            "status": "firing",
            "labels": {
                "alertname": "LLMRelayHighErrorRate",
                "model": "gpt-4.1",
                "service": "llm-relay",
                "severity": "critical",
                "instance": "relay-2:8000",
            },
            "annotations": {
                "summary": "错误率超过 1%",
                "description": "5xx ratio is 2.1% over the last 5 minutes",
                "runbook_url": "https://runbooks.example/llm-relay-errors",
            },
            "startsAt": "2026-11-26T21:58:09Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=llm%3Aerror_ratio%3Arate5m",
            "fingerprint": "5b1f0e2a9c7d4e31",
        },
    ],
    "groupLabels": {"alertname": "LLMRelayHighErrorRate"},
    "commonLabels": {
        "alertname": "LLMRelayHighErrorRate",
        "model": "gpt-4.1",
        "service": "llm-relay",
        "severity": "critical",
    },
    "commonAnnotations": {"summary": "错误率超过 1%"},
    "externalURL": "http://alertmanager:9093",
    "version": "4",
    "groupKey": '{}:{alertname="LLMRelayHighErrorRate"}',
    "truncatedAlerts": 0,
}
