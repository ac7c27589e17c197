"""The Alertmanager webhook payload (version 4): validation, and the key that spots a retry."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

__all__ = [
    "ZERO_TIME",
    "PayloadError",
    "alert_names",
    "dedup_key",
    "parse_time",
    "validate_payload",
]

ZERO_TIME: Final = "0001-01-01T00:00:00Z"
"""What Alertmanager puts in ``endsAt`` while an alert is still firing."""

_STATUSES: Final = ("firing", "resolved")
_RFC3339: Final = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:\d{2})$"
)

Payload = dict[str, Any]


class PayloadError(ValueError):
    """Not an Alertmanager v4 payload; ``field`` says where (``alerts[3].labels``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def validate_payload(document: Any) -> Payload:
    """Check ``document`` (parsed JSON) and return it with optional fields filled in.

    Required: ``version`` "4", ``status``, ``alerts`` (each with ``status``, ``labels`` and
    ``startsAt``). Fields Alertmanager always sends but other senders may leave out get
    Alertmanager's defaults. Extra fields are kept as they came.
    """
    if not isinstance(document, dict):
        raise PayloadError("body", "must be a JSON object (an Alertmanager webhook payload)")
    payload: Payload = dict(document)
    version = payload.get("version")
    if version is None:
        raise PayloadError("version", 'required (Alertmanager sends "4")')
    if str(version) != "4":
        raise PayloadError("version", f'unsupported version {version!r}, expected "4"')
    payload["version"] = "4"
    payload["status"] = _status(payload.get("status"), "status")
    for key in ("receiver", "externalURL", "groupKey"):
        payload[key] = _string(payload.get(key, ""), key)
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        payload[key] = _string_map(payload.get(key, {}), key)
    truncated = payload.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError("truncatedAlerts", "must be a whole number, at least 0")
    payload["truncatedAlerts"] = truncated

    alerts = payload.get("alerts")
    if alerts is None:
        raise PayloadError("alerts", "required")
    if not isinstance(alerts, list):
        raise PayloadError("alerts", f"must be a list, got {_kind(alerts)}")
    if not alerts:
        raise PayloadError("alerts", "must hold at least one alert")
    payload["alerts"] = [_alert(alert, f"alerts[{index}]") for index, alert in enumerate(alerts)]
    return payload


def _alert(alert: Any, where: str) -> dict[str, Any]:
    if not isinstance(alert, dict):
        raise PayloadError(where, f"must be an object, got {_kind(alert)}")
    result = dict(alert)
    result["status"] = _status(alert.get("status"), f"{where}.status")
    if "labels" not in alert:
        raise PayloadError(f"{where}.labels", "required")
    result["labels"] = _string_map(alert["labels"], f"{where}.labels")
    result["annotations"] = _string_map(alert.get("annotations", {}), f"{where}.annotations")
    if "startsAt" not in alert:
        raise PayloadError(f"{where}.startsAt", "required")
    result["startsAt"] = _time(alert["startsAt"], f"{where}.startsAt")
    result["endsAt"] = _time(alert.get("endsAt", ZERO_TIME), f"{where}.endsAt")
    result["generatorURL"] = _string(alert.get("generatorURL", ""), f"{where}.generatorURL")
    fingerprint = alert.get("fingerprint")
    if fingerprint is None or fingerprint == "":
        fingerprint = _labels_fingerprint(result["labels"])
    result["fingerprint"] = _string(fingerprint, f"{where}.fingerprint")
    return result


def _status(value: Any, where: str) -> str:
    if value is None:
        raise PayloadError(where, 'required ("firing" or "resolved")')
    if value not in _STATUSES:
        raise PayloadError(where, f'must be "firing" or "resolved", got {_short(value)}')
    return str(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PayloadError(where, f"must be a string, got {_kind(value)}")
    return value


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise PayloadError(where, "must be an object of strings")
    return dict(value)


def _time(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _RFC3339.match(value.strip()):
        raise PayloadError(where, f"must be an RFC 3339 time, got {_short(value)}")
    if int(value.strip()[:4]) > 1 and parse_time(value) is None:
        raise PayloadError(where, f"is not a valid date and time: {_short(value)}")
    return value


def parse_time(value: str) -> datetime | None:
    """An RFC 3339 time as Alertmanager writes it (nanoseconds allowed) → aware datetime.

    None for the zero time (``0001-01-01T00:00:00Z``: "not ended") and for anything unparsable.
    """
    match = _RFC3339.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if int(year) <= 1:
        return None
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if zone in ("Z", "z"):
        tz = UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
        )
    except ValueError:
        return None
    return moment.astimezone(UTC)


def dedup_key(target: str, payload: Mapping[str, Any]) -> str:
    """Equal for an Alertmanager retry of the same notification, different otherwise.

    A retry carries the same group, status and alerts; each alert is known by its fingerprint,
    status and times. Annotations are left out: they do not make a notification new.
    """
    alerts = sorted(
        (a["fingerprint"], a["status"], a["startsAt"], a["endsAt"]) for a in payload["alerts"]
    )
    identity = [target, payload.get("groupKey", ""), payload["status"], alerts]
    text = json.dumps(identity, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def alert_names(payload: Mapping[str, Any]) -> list[str]:
    """The distinct alert names of a payload, in order of first appearance."""
    names: dict[str, None] = {}
    for alert in payload["alerts"]:
        names.setdefault(alert["labels"].get("alertname", "(no alertname)"), None)
    return list(names)


def _labels_fingerprint(labels: Mapping[str, str]) -> str:
    text = json.dumps(sorted(labels.items()), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
