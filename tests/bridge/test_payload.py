"""Alertmanager v4 payloads: what is accepted, what is refused (naming the field), retries."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.payload import PayloadError, dedup_key, parse_time, validate_payload
from tests.bridge.conftest import fixture_payload, make_payload


@pytest.mark.parametrize("name", ["firing-one.json", "firing-truncated.json", "resolved-one.json"])
def test_real_payloads_are_accepted(name: str) -> None:
    """Payloads captured from Alertmanager 0.25 validate unchanged."""
    payload = fixture_payload(name)
    assert validate_payload(copy.deepcopy(payload)) == payload


def _broken(change: Any) -> dict[str, Any]:
    payload = make_payload(4)
    change(payload)
    return payload


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda p: p.pop("version"), "version", "required"),
        (lambda p: p.update(version="3"), "version", "unsupported version"),
        (lambda p: p.update(status="ok"), "status", 'must be "firing" or "resolved"'),
        (lambda p: p.pop("alerts"), "alerts", "required"),
        (lambda p: p.update(alerts={}), "alerts", "must be a list"),
        (lambda p: p.update(alerts=[]), "alerts", "at least one"),
        (lambda p: p["alerts"].__setitem__(2, "x"), "alerts[2]", "must be an object"),
        (
            lambda p: p["alerts"][3].update(labels={"a": 1}),
            "alerts[3].labels",
            "must be an object of strings",
        ),
        (
            lambda p: p["alerts"][3].update(labels=["a"]),
            "alerts[3].labels",
            "must be an object of strings",
        ),
        (lambda p: p["alerts"][1].pop("labels"), "alerts[1].labels", "required"),
        (
            lambda p: p["alerts"][0].update(annotations={"x": None}),
            "alerts[0].annotations",
            "must be an object of strings",
        ),
        (lambda p: p["alerts"][0].update(status="pending"), "alerts[0].status", "must be"),
        (lambda p: p["alerts"][0].pop("startsAt"), "alerts[0].startsAt", "required"),
        (lambda p: p["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt", "RFC 3339"),
        (
            lambda p: p["alerts"][0].update(endsAt="2026-13-40T00:00:00Z"),
            "alerts[0].endsAt",
            "not a valid date",
        ),
        (
            lambda p: p["alerts"][0].update(generatorURL=5),
            "alerts[0].generatorURL",
            "must be a string",
        ),
        (lambda p: p.update(commonLabels="x"), "commonLabels", "must be an object of strings"),
        (lambda p: p.update(groupKey=None), "groupKey", "must be a string"),
        (lambda p: p.update(truncatedAlerts=-1), "truncatedAlerts", "at least 0"),
        (lambda p: p.update(truncatedAlerts="3"), "truncatedAlerts", "whole number"),
    ],
)
def test_refusals_name_the_field(change: Any, field: str, message: str) -> None:
    """Each way a payload can be wrong is refused with the field's path and what is wrong."""
    with pytest.raises(PayloadError) as caught:
        validate_payload(_broken(change))
    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{field}: ")


def test_not_an_object() -> None:
    """A JSON array or string is not a payload."""
    with pytest.raises(PayloadError, match="body"):
        validate_payload([1, 2])


def test_defaults_and_extra_fields() -> None:
    """Fields other senders leave out get Alertmanager's defaults; unknown fields are kept."""
    payload = {
        "version": 4,
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "A"},
                "startsAt": "2026-11-26T21:57:39.123456789+08:00",
                "x-extra": True,
            }
        ],
        "orgId": 1,
    }
    result = validate_payload(payload)
    assert result["version"] == "4"
    assert result["orgId"] == 1
    alert = result["alerts"][0]
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["annotations"] == {}
    assert alert["x-extra"] is True
    assert len(alert["fingerprint"]) == 16
    assert result["truncatedAlerts"] == 0


def test_parse_time() -> None:
    """Times with nanoseconds and offsets parse to UTC; the zero time means "not ended"."""
    assert parse_time("2026-11-26T21:57:39.123456789+08:00") == datetime(
        2026, 11, 26, 13, 57, 39, 123456, tzinfo=UTC
    )
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("garbage") is None


def test_dedup_key_recognises_a_retry() -> None:
    """The same notification sent again has the same key; annotations do not matter."""
    first = validate_payload(make_payload(3))
    again = validate_payload(make_payload(3))
    again["alerts"].reverse()
    again["alerts"][0]["annotations"] = {"summary": "reworded"}
    assert dedup_key("t", first) == dedup_key("t", again)


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.update(status="resolved"),
        lambda p: p.update(groupKey="other"),
        lambda p: p["alerts"][0].update(status="resolved"),
        lambda p: p["alerts"][0].update(endsAt="2026-11-26T21:30:00Z"),
        lambda p: p["alerts"][0].update(startsAt="2026-11-26T21:01:00Z"),
        lambda p: p["alerts"][0].update(fingerprint="other"),
        lambda p: p["alerts"].pop(),
    ],
)
def test_dedup_key_tells_notifications_apart(change: Any) -> None:
    """A different status, group, alert set or alert time makes a different notification."""
    first = validate_payload(make_payload(3))
    other = copy.deepcopy(first)
    change(other)
    assert dedup_key("t", first) != dedup_key("t", other)
    assert dedup_key("t", first) != dedup_key("u", first)
