"""Merging notifications that waited for the rate limit into one digest payload."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridge.payload import Payload
from bridge.render import Digest

__all__ = ["merge"]


def merge(payloads: Sequence[Payload]) -> tuple[Payload, Digest | None]:
    """One payload holding every alert of ``payloads`` (oldest first), and what it merged.

    An alert (known by its fingerprint) that appears more than once is shown as it was last
    reported: firing then resolved shows as resolved, with both times. A single payload comes
    back as it is, with no digest.
    """
    if len(payloads) == 1:
        return payloads[0], None
    latest: dict[str, dict[str, Any]] = {}
    for payload in payloads:
        for alert in payload["alerts"]:
            latest.pop(alert["fingerprint"], None)  # keep the order of the latest report
            latest[alert["fingerprint"]] = alert
    alerts = list(latest.values())
    firing = any(alert["status"] == "firing" for alert in alerts)
    merged: Payload = {
        "version": "4",
        "receiver": payloads[0].get("receiver", ""),
        "status": "firing" if firing else "resolved",
        "alerts": alerts,
        "groupLabels": _common([p.get("groupLabels", {}) for p in payloads]),
        "commonLabels": _common([alert["labels"] for alert in alerts]),
        "commonAnnotations": _common([alert.get("annotations", {}) for alert in alerts]),
        "externalURL": next((p["externalURL"] for p in payloads if p.get("externalURL")), ""),
        "groupKey": "",
        "truncatedAlerts": sum(int(p.get("truncatedAlerts", 0)) for p in payloads),
    }
    groups = len({p.get("groupKey", "") for p in payloads})
    return merged, Digest(notifications=len(payloads), groups=groups)


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {
        key: value
        for key, value in first.items()
        if all(other.get(key) == value for other in maps[1:])
    }
