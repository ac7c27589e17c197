"""The Alertmanager webhook payload (version 4): validation, and the key that spots a retry."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

__all__ = [
    "MAX_DEPTH",
    "ZERO_TIME",
    "PayloadError",
    "alert_names",
    "dedup_key",
    "parse_json",
    "parse_time",
    "validate_payload",
]

ZERO_TIME: Final = "0001-01-01T00:00:00Z"
"""What Alertmanager puts in ``endsAt`` while an alert is still firing."""

MAX_DEPTH: Final = 32
"""How deeply objects and lists may nest in a payload; Alertmanager's own go 3 levels deep."""

_STATUSES: Final = ("firing", "resolved")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
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


def parse_json(body: bytes | str) -> Any:
    """The JSON document in ``body``, or :class:`PayloadError` saying why there is none."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise PayloadError("body", "not UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            "body", f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise PayloadError("body", f"nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # e.g. a number with more digits than Python converts
        raise PayloadError("body", f"not JSON that can be read: {_short(str(exc))}") from None


def validate_payload(document: Any) -> Payload:
    """Check ``document`` (parsed JSON) and return it with optional fields filled in.

    Required: ``version`` "4", ``status``, ``alerts`` (each with ``status``, ``labels`` and
    ``startsAt``). Fields Alertmanager always sends but other senders may leave out get
    Alertmanager's defaults. Extra fields are kept as they came, but for unpaired UTF-16
    surrogates (``"\\ud800"`` is valid JSON, yet no text): they become U+FFFD, as Alertmanager's
    own JSON decoder makes them. Nesting deeper than :data:`MAX_DEPTH` is refused.
    """
    document = _clean(document, "", 0)
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


def _clean(value: Any, where: str, depth: int) -> Any:
    """``value`` with unpaired surrogates replaced; PayloadError where it nests too deeply."""
    if isinstance(value, str):
        return _text(value)
    if not isinstance(value, dict | list):
        return value
    if depth >= MAX_DEPTH:
        raise PayloadError(where or "body", f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, list):
        return [_clean(item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value)]
    return {
        _text(key): _clean(item, f"{where}.{_name(key)}" if where else _name(key), depth + 1)
        for key, item in value.items()
    }


def _text(text: str) -> str:
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def _name(key: str) -> str:
    """A key as part of a field path, cut short: keys are the sender's, of any length."""
    key = _text(key)
    return key if len(key) <= 40 else key[:39] + "…"


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
