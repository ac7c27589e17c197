"""The channel conformance kit: what every registered channel must do, run on each of them.

A channel gets all of it by registering (``bridge/channels/registry.py``) and giving a profile
(``tests/bridge/channels/test_<name>.py``): every HTTP status through its classification, its
documented answers, its size limits at the byte and character boundaries, no URL key or secret
in an error, a log line or a metric, and alert text that cannot act as the channel's markup.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.channels.base import Channel, Message, Notifier
from bridge.channels.registry import CHANNELS
from bridge.classify import REASONS, Outcome
from bridge.payload import validate_payload
from bridge.render import Renderer
from sheepdog.cli import describe
from sheepdog.config import Config, parse_config
from tests.bridge.channels.profile import Profile, profile_of
from tests.bridge.conftest import AUTH, StartBridge, make_payload, targets_config
from tests.support.polling import wait_until_async

NOW = datetime(2026, 11, 26, 23, 2, 39, tzinfo=UTC)
SECRET = "SENTINELkitSecret5e1f"
NAMES = sorted(CHANNELS)
WEBHOOKS = [name for name in NAMES if profile_of(name).url is not None]
SIZED = [name for name in NAMES if profile_of(name).size is not None]
# Each channel as it comes, and each of its variants (another format, a signing secret).
VARIANTS = [
    pytest.param(name, variant, id=f"{name}-{variant}" if variant else name)
    for name in NAMES
    for variant in ["", *profile_of(name).variants]
]
WEBHOOK_VARIANTS = [param for param in VARIANTS if param.values[0] in WEBHOOKS]
INJECTIONS = [
    "<@userid>",
    "<!channel>",
    "@all",
    "<at id=all></at>",
    '<font color="warning">red</font>',
    "[x](http://evil.example/)",
    "![x](http://evil.example/x.png)",
    "<a href='http://evil.example/'>x</a>",
    "@13800000000",
    "```[x](http://evil.example/)```",
]


def _target(name: str, url: str, variant: str = "") -> dict[str, Any]:
    profile = profile_of(name)
    return {**profile.target(url), **(profile.variants[variant] if variant else {})}


def _sentinels(name: str, variant: str) -> list[str]:
    """The secrets of a variant (values starting with SENTINEL), besides the URL's key."""
    values = profile_of(name).variants[variant].values() if variant else ()
    return [value for value in values if isinstance(value, str) and value.startswith("SENTINEL")]


def _config(name: str, url: str = "https://peer.example/hook", variant: str = "") -> Config:
    return parse_config({"bridge": {"targets": {"t": _target(name, url, variant)}}}, env={})


def _notifier(name: str, url: str = "https://peer.example/hook", variant: str = "") -> Notifier:
    config = _config(name, url, variant)
    target = config.bridge.targets["t"]
    renderer = Renderer(config.bridge, CHANNELS)
    return CHANNELS[name].notifier(target, renderer, None, 10)


def _compose(name: str, payload: dict[str, Any], variant: str = "") -> list[Message]:
    notifier = _notifier(name, variant=variant)
    return notifier.compose(validate_payload(copy.deepcopy(payload)), now=NOW)


def _reasons(channel: Channel) -> set[str]:
    return {*REASONS, *channel.reasons, "ok"}


@pytest.mark.parametrize("name", NAMES)
def test_every_channel_has_a_profile(name: str) -> None:
    """A registered channel without a test profile would skip the kit: it must not exist."""
    assert isinstance(profile_of(name), Profile)
    channel = CHANNELS[name]
    assert channel.name == name
    for template in channel.templates:
        assert (channel.template_dir / template).is_file(), template


@pytest.mark.parametrize("name", NAMES)
def test_a_channel_imports_no_other_channel(name: str) -> None:
    """Everything about a channel is in its package: it needs no other channel's."""
    package = Path(CHANNELS[name].template_dir).parent
    others = "|".join(re.escape(other) for other in NAMES if other != name)
    pattern = re.compile(rf"^\s*(from|import)\s+bridge\.channels\.({others})\b", re.MULTILINE)
    for source in package.rglob("*.py"):
        assert not pattern.search(source.read_text(encoding="utf-8")), source


# Answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WEBHOOKS)
def test_every_http_status_has_a_decision(name: str) -> None:
    """Statuses 100-599, with the channel's success body, an empty one and a portal page:
    429 and 5xx are retried (honouring Retry-After), other 4xx are final, nothing but the
    channel's own success is "sent", and every reason is in the bounded set."""
    profile = profile_of(name)
    notifier = _notifier(name)
    classify: Callable[[int, bytes, dict[str, str]], Any] = notifier.classify  # type: ignore[attr-defined]
    success_status, success_body = profile.success
    assert classify(success_status, success_body, {}).outcome is Outcome.SENT
    for status in range(100, 600):
        for body in (success_body, b"", b"<html>portal</html>"):
            verdict = classify(status, body, {"Retry-After": "7"})
            where = f"{name} {status} {body[:20]!r}"
            assert verdict.reason in _reasons(CHANNELS[name]), where
            if status >= 500 or status == 429:
                assert verdict.outcome is Outcome.RETRY, where
                assert verdict.retry_after == 7.0, where
            elif 400 <= status < 500 and status not in (408, 425):
                assert verdict.outcome is Outcome.FAILED, where
            if verdict.outcome is Outcome.SENT:
                assert 200 <= status < 300 and body == success_body, where


@pytest.mark.parametrize("name", WEBHOOKS)
def test_documented_answers(name: str) -> None:
    """Each answer the provider documents means what the channel says it means."""
    notifier = _notifier(name)
    classify = notifier.classify  # type: ignore[attr-defined]
    profile = profile_of(name)
    assert profile.codes, "a webhook channel documents its answers"
    for status, body, outcome, reason in profile.codes:
        verdict = classify(status, body, {})
        assert (verdict.outcome, verdict.reason) == (outcome, reason), (status, body[:60])
        assert verdict.reason in _reasons(CHANNELS[name])


# Size limits ---------------------------------------------------------------------------------


def _payload_with(description: str) -> dict[str, Any]:
    payload = make_payload()
    payload["alerts"][0]["annotations"]["description"] = description
    return payload


def _size(name: str, description: str) -> tuple[int, list[Message]]:
    size = profile_of(name).size
    assert size is not None
    messages = [m for m in _compose(name, _payload_with(description)) if size.measure(m)]
    return size.measure(messages[0]), messages


def _exactly_at_the_limit(name: str, unit: str) -> str:
    """A description that makes the message exactly as big as the limit."""
    size = profile_of(name).size
    assert size is not None
    first, _ = _size(name, unit)
    second, _ = _size(name, unit * 2)
    step = second - first
    count = 1 + (size.limit - first) // step
    description = unit * count
    measured, _ = _size(name, description)
    pad = size.limit - measured
    assert 0 <= pad < step, (name, unit, measured)
    return description + "x" * pad


@pytest.mark.parametrize("name", SIZED)
@pytest.mark.parametrize("unit", ["x", "告", "🔥"])
def test_a_message_exactly_at_the_limit_is_one_message(name: str, unit: str) -> None:
    """At the limit to the byte (or character): one message, not labelled as a part."""
    size = profile_of(name).size
    assert size is not None
    description = _exactly_at_the_limit(name, unit)
    measured, messages = _size(name, description)
    assert measured == size.limit
    assert len(messages) == 1
    assert size.part(messages[0]) is None


@pytest.mark.parametrize("name", SIZED)
@pytest.mark.parametrize("unit", ["x", "告", "🔥"])
def test_one_over_the_limit_is_split_into_numbered_parts_that_fit(name: str, unit: str) -> None:
    """One unit over: numbered parts (pieces of one message where the limit is on a piece),
    each within the limit, no character cut, nothing lost."""
    size = profile_of(name).size
    assert size is not None
    description = _exactly_at_the_limit(name, unit) + unit
    _, messages = _size(name, description)
    numbers = [size.part(m) for m in messages]
    if size.per_message:
        assert len(messages) > 1
        assert numbers == [(n, len(messages)) for n in range(1, len(messages) + 1)]
    else:
        assert numbers == [None]
    for message in messages:
        assert size.measure(message) <= size.limit
    shown = "".join(text for m in messages for text in size.texts(m))
    assert "\ufffd" not in shown
    assert shown.count(unit) >= description.count(unit)


# Secrets -------------------------------------------------------------------------------------


class EchoPeer:
    """A peer that fails every request with an answer quoting the URL and headers it got."""

    def __init__(self) -> None:
        self.status = 400
        self.requests = 0
        self._server: TestServer | None = None

    async def start(self) -> EchoPeer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self

    @property
    def base(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    async def _answer(self, request: web.Request) -> web.Response:
        self.requests += 1
        # The URL written out by hand: request.url fails on aiohttp before 3.10.11 with the yarl
        # releases of today, and sheepdog itself runs on 3.9.1.
        url = f"{request.scheme}://{request.host}{request.path_qs}"
        echo = f"bad request to {url} {request.path_qs} {dict(request.headers)}"
        return web.Response(status=self.status, text=echo)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()


@pytest.fixture
async def echo_peer() -> AsyncIterator[EchoPeer]:
    peer = await EchoPeer().start()
    yield peer
    await peer.close()


@pytest.mark.parametrize(("name", "variant"), WEBHOOK_VARIANTS)
@pytest.mark.parametrize("status", [200, 400, 404, 429, 500])
async def test_no_error_detail_holds_the_url_key(
    name: str, variant: str, status: int, echo_peer: EchoPeer
) -> None:
    """A peer echoing the request URL back: the verdict's detail never holds the key (nor a
    signing secret)."""
    profile = profile_of(name)
    assert profile.url is not None
    echo_peer.status = status
    config = _config(name, profile.url(echo_peer.base, SECRET), variant)
    target = config.bridge.targets["t"]
    async with aiohttp.ClientSession() as session:
        notifier = CHANNELS[name].notifier(target, Renderer(config.bridge, CHANNELS), session, 5)
        messages = notifier.compose(validate_payload(make_payload()), now=NOW)
        verdict = await notifier.send(messages[0])
    assert echo_peer.requests == 1
    assert verdict.outcome is not Outcome.SENT
    for secret in [SECRET, *_sentinels(name, variant)]:
        assert secret not in verdict.detail
        assert secret not in notifier.destination()
        assert secret not in notifier.preview(messages[0])


@pytest.mark.parametrize(("name", "variant"), WEBHOOK_VARIANTS)
async def test_no_log_line_or_metric_holds_the_url_key(
    name: str,
    variant: str,
    echo_peer: EchoPeer,
    start_bridge: StartBridge,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Delivered through the whole bridge to a peer that echoes the URL, refused and
    dead-lettered: no log line, metric or ``check-config`` line holds the key (nor a signing
    secret)."""
    profile = profile_of(name)
    assert profile.url is not None
    caplog.set_level(logging.DEBUG)
    target = _target(name, profile.url(echo_peer.base, SECRET), variant)
    config = parse_config(targets_config(tmp_path, {"t": target}), env={})
    client = await start_bridge(config, fresh_registry=True)
    await client.post("/alerts/t", json=make_payload(), headers=AUTH)
    await wait_until_async(lambda: "dead-lettered" in caplog.text, what="the dead letter")
    metrics = await (await client.get("/metrics")).text()
    assert echo_peer.requests >= 1
    ours = "\n".join(
        record.getMessage() + " " + str(vars(record))
        for record in caplog.records
        if record.name.startswith("sheepdog")  # the peer's own access log is the peer's
    )
    assert "dead-lettered" in ours
    for secret in [SECRET, *_sentinels(name, variant)]:
        assert secret not in ours
        assert secret not in metrics
        assert secret not in describe(config)


# Markup injection ----------------------------------------------------------------------------


def _with_text(text: str, alerts: int = 1) -> dict[str, Any]:
    payload = make_payload(alerts, extra_labels={"note": text})
    payload["commonLabels"]["team"] = text
    for alert in payload["alerts"]:
        alert["annotations"]["summary"] = f"summary {text}"
        alert["annotations"]["description"] = f"description {text}"
    return payload


def _acted_on(profile: Profile, messages: list[Message]) -> list[list[tuple[str, str]]]:
    # A silence link carries the labels' values (escaped), whatever they are: compare its kind.
    return [
        [
            ("link", "silence") if "/#/silences/new" in value else (kind, value)
            for kind, value in profile.actions(message)
        ]
        for message in messages
    ]


@pytest.mark.parametrize(("name", "variant"), VARIANTS)
@pytest.mark.parametrize("text", INJECTIONS)
@pytest.mark.parametrize("alerts", [1, 5], ids=["one-alert", "five-alerts"])
def test_alert_text_cannot_act_as_markup(name: str, variant: str, text: str, alerts: int) -> None:
    """A label or annotation holding a mention, a colour or a link is shown as text, whether
    the message shows one alert in full or several in a list or table: the message acts on
    exactly what it acts on with plain text there, and the text reads as sent."""
    profile = profile_of(name)
    plain = _compose(name, _with_text("plain-words", alerts), variant)
    injected = _compose(name, _with_text(text, alerts), variant)
    assert _acted_on(profile, injected) == _acted_on(profile, plain)
    assert text in "\n".join(profile.visible(m) for m in injected)
