"""The watchdog: heartbeats at /alerts/watchdog keep it quiet; silence sends one "monitoring is
silent" message through the outbox to bridge.watchdog.target, heartbeats back the recovery;
restarts neither reset the clock nor cry wolf; state shared by two processes on one database.

Time is a fake clock moved by hand, one watchdog check at a time, waiting after each step until
the check is in the database (:class:`Listening`), so that every count is exact."""

from __future__ import annotations

import copy
import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bridge import BRIDGE
from bridge.channels.registry import CHANNELS, channel_of
from bridge.language import LANGUAGES
from bridge.payload import dedup_key, validate_payload
from bridge.render import Renderer
from bridge.watchdog import (
    ALERT_NAME,
    RUNBOOK_URL,
    WatchState,
    announced,
    check_seconds,
    due,
    heard,
    listened,
    max_gap,
    silence_payload,
)
from sheepdog.config import Config, parse_config
from tests.bridge.conftest import (
    ALERT_TOKEN,
    AUTH,
    ROBOT_KEY,
    StartBridge,
    fixture_payload,
    make_payload,
    targets_config,
)
from tests.bridge.fakeclock import FakeClock
from tests.bridge.test_language import TARGETS as CHANNEL_TARGETS
from tests.peers.wechat import WeChatRobot
from tests.support.polling import wait_until_async

SILENCE = 600.0
STEP = check_seconds(SILENCE)
GAUGE = "sheepdog_watchdog_last_heartbeat_timestamp_seconds"


def _config(
    tmp_path: Path,
    robot: WeChatRobot,
    *,
    watchdog: bool = True,
    language: str = "en",
    **bridge: Any,
) -> Config:
    extra: dict[str, Any] = {"language": language, **bridge}
    if watchdog:
        extra["watchdog"] = {"target": "ops", "silence_seconds": SILENCE}
    targets = {"ops": {"type": "wechat", "url": robot.url()}}
    return parse_config(targets_config(tmp_path, targets, extra=extra), env={})


def _stored(tmp_path: Path) -> WatchState:
    with closing(sqlite3.connect(tmp_path / "state" / "sheepdog.db")) as conn:
        row = conn.execute(
            "SELECT last_heartbeat_at, unheard_seconds, listened_at, silence_started_at, "
            "silence_ended_at, announced FROM watchdog_state"
        ).fetchone()
    return WatchState(*row)


def _outbox(tmp_path: Path) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(tmp_path / "state" / "sheepdog.db")) as conn:
        return [
            {**json.loads(payload), "id": row_id, "target": target, "row_status": status}
            for row_id, target, status, payload in conn.execute(
                "SELECT id, target, status, payload FROM outbox_notifications ORDER BY id"
            )
        ]


def _watchdog_messages(robot: WeChatRobot) -> list[str]:
    return [m.content for m in list(robot.messages) if ALERT_NAME in m.content]


class Listening:
    """Moves the fake clock one watchdog check at a time, waiting after each until the check is
    in the database and the watchdog asleep until the next, so that no check is skipped however
    slow the disk."""

    def __init__(self, clock: FakeClock, tmp_path: Path, *, watchdogs: int = 1) -> None:
        self.clock = clock
        self.tmp_path = tmp_path
        self.watchdogs = watchdogs
        self._begun = 0

    async def settled(self) -> None:
        """Until the check due now (at start-up, or after a step) is stored, and the watchdog
        sleeps until the next. (Only the watchdog sleeps exactly one check here.)"""
        now = self.clock.now().timestamp()
        begun = self._begun
        await wait_until_async(
            lambda: (
                (_stored(self.tmp_path).listened_at or 0.0) >= now - 1e-6
                and self.clock.asleep_until(self.clock.elapsed + STEP, begun_after=begun)
                >= self.watchdogs
            ),
            what="the watchdog's check",
        )
        self._begun = self.clock.sleeps_begun

    async def listen(self, seconds: float) -> None:
        """``seconds`` of listening, in whole checks."""
        steps = round(seconds / STEP)
        assert steps * STEP == pytest.approx(seconds), "listen in whole checks"
        for _ in range(steps):
            await self.clock.advance(STEP)
            await self.settled()


async def _heartbeat(client: TestClient, payload: dict[str, Any] | None = None) -> Any:
    response = await client.post(
        "/alerts/watchdog", json=payload or _watchdog_payload(), headers=AUTH
    )
    assert response.status == 200, await response.text()
    return await response.json()


def _watchdog_payload(status: str = "firing") -> dict[str, Any]:
    """What Alertmanager posts for the Watchdog rule of prometheus/rules/watchdog.yml."""
    payload = make_payload(1, name="Watchdog", status=status)
    payload["receiver"] = "watchdog"
    payload["alerts"][0]["labels"]["severity"] = "none"
    return payload


@pytest.fixture
def clock() -> FakeClock:
    """Time that moves only by hand."""
    return FakeClock()


@pytest.fixture
async def wechat(clock: FakeClock) -> Any:
    peer = await WeChatRobot(keys=[ROBOT_KEY], clock=clock.monotonic).start()
    yield peer
    await peer.close()


# ------------------------------------------------------------------------------------------------
# Heartbeats and silence


async def test_heartbeats_keep_it_quiet(
    start_bridge: StartBridge,
    clock: FakeClock,
    wechat: WeChatRobot,
    tmp_path: Path,
    registry: CollectorRegistry,
) -> None:
    """A heartbeat every minute for half an hour: nothing is sent, nothing stored in the outbox, and
    the gauge shows the latest heartbeat."""
    client = await start_bridge(_config(tmp_path, wechat), clock=clock)
    time = Listening(clock, tmp_path)
    await time.settled()
    assert registry.get_sample_value(GAUGE) == 0
    for _ in range(30):
        answer = await _heartbeat(client)
        assert answer["status"] == "heartbeat"
        assert registry.get_sample_value(GAUGE) == clock.now().timestamp()
        await time.listen(60)
    assert _outbox(tmp_path) == []
    assert wechat.messages == []
    assert _stored(tmp_path).unheard_seconds == 60


async def test_silence_sends_one_message_to_the_target_then_the_recovery(
    start_bridge: StartBridge,
    clock: FakeClock,
    wechat: WeChatRobot,
    tmp_path: Path,
    registry: CollectorRegistry,
) -> None:
    """No heartbeat for silence_seconds: exactly one "monitoring is silent" message, through
    the outbox, to the target's robot, however long the silence lasts; when heartbeats come
    back, one recovery message, and quiet again."""
    client = await start_bridge(_config(tmp_path, wechat), clock=clock)
    time = Listening(clock, tmp_path)
    await time.settled()
    await _heartbeat(client)
    last_heartbeat = clock.now()

    await time.listen(SILENCE - STEP)
    assert _outbox(tmp_path) == [] and wechat.messages == []
    await time.listen(STEP)
    await wait_until_async(lambda: len(wechat.messages) == 1, what="the silent message")
    (silent,) = _watchdog_messages(wechat)
    assert "FIRING" in silent and "Monitoring is silent" in silent
    assert "no Watchdog heartbeat for 10m" in silent
    assert "critical" in silent
    assert f"({RUNBOOK_URL})" in silent
    # The alert started with the last heartbeat (shown in bridge.timezone, Asia/Shanghai).
    assert last_heartbeat.astimezone(_shanghai()).strftime("%Y-%m-%d %H:%M") in silent
    await wait_until_async(lambda: _outbox(tmp_path)[0]["row_status"] == "sent", what="marked sent")
    (row,) = _outbox(tmp_path)
    assert row["target"] == "ops"
    assert row["alerts"][0]["labels"] == {"alertname": ALERT_NAME, "severity": "critical"}
    received = {"target": "ops", "status": "firing"}
    assert registry.get_sample_value("sheepdog_alerts_received_total", received) == 1

    await time.listen(2 * SILENCE)  # 20 more minutes of silence: no second message
    assert len(wechat.messages) == 1 and len(_outbox(tmp_path)) == 1

    await _heartbeat(client)
    await wait_until_async(lambda: len(wechat.messages) == 2, what="the recovery message")
    recovery = wechat.messages[1].content
    assert "RESOLVED" in recovery and ALERT_NAME in recovery
    assert "Monitoring is back" in recovery
    assert "30m" in recovery  # the silence lasted from the last heartbeat to this one
    await wait_until_async(
        lambda: [row["row_status"] for row in _outbox(tmp_path)] == ["sent", "sent"],
        what="both marked sent",
    )

    for _ in range(30):  # heartbeats again: quiet again
        await time.listen(60)
        await _heartbeat(client)
    assert len(wechat.messages) == 2


async def test_a_second_silence_gets_its_own_messages(
    start_bridge: StartBridge, clock: FakeClock, wechat: WeChatRobot, tmp_path: Path
) -> None:
    """Each silence is announced once and recovered once: two silences, four messages, in
    order, none taken for a retry of another."""
    client = await start_bridge(_config(tmp_path, wechat), clock=clock)
    time = Listening(clock, tmp_path)
    await time.settled()
    for count in (1, 3):
        await _heartbeat(client)
        await time.listen(SILENCE)
        await wait_until_async(lambda c=count: len(wechat.messages) == c, what="a silent message")
        await _heartbeat(client)
        await wait_until_async(lambda c=count: len(wechat.messages) == c + 1, what="a recovery")
    statuses = ["FIRING" if "FIRING" in m else "RESOLVED" for m in _watchdog_messages(wechat)]
    assert statuses == ["FIRING", "RESOLVED", "FIRING", "RESOLVED"]


async def test_never_a_heartbeat_is_silence_too(
    start_bridge: StartBridge, clock: FakeClock, wechat: WeChatRobot, tmp_path: Path
) -> None:
    """A watchdog that never heard a heartbeat (Alertmanager not routing Watchdog) says so
    after silence_seconds of listening; the alert starts when listening began."""
    await start_bridge(_config(tmp_path, wechat), clock=clock)
    time = Listening(clock, tmp_path)
    await time.settled()
    started = clock.now().timestamp()
    await time.listen(SILENCE)
    await wait_until_async(lambda: len(wechat.messages) == 1, what="the silent message")
    (row,) = _outbox(tmp_path)
    starts_at = datetime.fromisoformat(row["alerts"][0]["startsAt"].replace("Z", "+00:00"))
    assert starts_at.timestamp() == started


async def test_messages_in_the_configured_language(
    start_bridge: StartBridge, clock: FakeClock, wechat: WeChatRobot, tmp_path: Path
) -> None:
    """bridge.language zh: the silent and the recovery message read in Chinese."""
    client = await start_bridge(_config(tmp_path, wechat, language="zh"), clock=clock)
    time = Listening(clock, tmp_path)
    await time.settled()
    await _heartbeat(client)
    await time.listen(SILENCE)
    await wait_until_async(lambda: len(wechat.messages) == 1, what="the silent message")
    assert "告警触发" in wechat.messages[0].content
    assert "监控静默：已 10 分 未收到 Watchdog 心跳" in wechat.messages[0].content
    await _heartbeat(client)
    await wait_until_async(lambda: len(wechat.messages) == 2, what="the recovery message")
    assert "已恢复" in wechat.messages[1].content
    assert "监控已恢复" in wechat.messages[1].content


async def test_without_bridge_watchdog_heartbeats_are_recorded_and_nothing_is_sent(
    start_bridge: StartBridge,
    clock: FakeClock,
    wechat: WeChatRobot,
    tmp_path: Path,
    registry: CollectorRegistry,
) -> None:
    """No bridge.watchdog: /alerts/watchdog still answers and sets the gauge; a day without a
    heartbeat sends nothing."""
    client = await start_bridge(_config(tmp_path, wechat, watchdog=False), clock=clock)
    await _heartbeat(client)
    assert registry.get_sample_value(GAUGE) == clock.now().timestamp()
    assert _stored(tmp_path).last_heartbeat_at == clock.now().timestamp()
    await clock.advance(24 * 3600)
    assert _outbox(tmp_path) == [] and wechat.messages == []


async def test_a_reload_adding_the_watchdog_starts_watching(
    start_bridge: StartBridge, clock: FakeClock, wechat: WeChatRobot, tmp_path: Path
) -> None:
    """bridge.watchdog added by a reload: silence is counted from then, and reported."""
    client = await start_bridge(_config(tmp_path, wechat, watchdog=False), clock=clock)
    await _heartbeat(client)
    await clock.advance(3600)  # an hour unwatched counts for nothing
    bridge = client.app[BRIDGE]
    bridge.prepare(_config(tmp_path, wechat).bridge).commit()
    time = Listening(clock, tmp_path)
    await time.settled()
    # The hour before counted as one gap at most.
    assert _stored(tmp_path).unheard_seconds == max_gap(SILENCE)
    await time.listen(SILENCE - max_gap(SILENCE) - STEP)
    assert wechat.messages == []
    await time.listen(STEP)
    await wait_until_async(lambda: len(wechat.messages) == 1, what="the silent message")


async def test_a_resolved_watchdog_is_no_heartbeat(
    start_bridge: StartBridge, clock: FakeClock, wechat: WeChatRobot, tmp_path: Path
) -> None:
    """A resolved Watchdog (Prometheus stopped renewing it; send_resolved left on) is answered
    200 but does not reset the clock."""
    client = await start_bridge(_config(tmp_path, wechat), clock=clock)
    time = Listening(clock, tmp_path)
    await time.settled()
    await _heartbeat(client)
    await time.listen(SILENCE - STEP)
    answer = await _heartbeat(client, _watchdog_payload("resolved"))
    assert answer["status"] == "ignored"
    await time.listen(STEP)
    await wait_until_async(lambda: len(wechat.messages) == 1, what="the silent message")


async def test_heartbeats_far_apart_for_the_silence_are_logged(
    start_bridge: StartBridge,
    clock: FakeClock,
    wechat: WeChatRobot,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A heartbeat more than half of silence_seconds after the one before is a warning naming
    both figures (heartbeats too sparse for silence_seconds); a minute apart is not."""
    client = await start_bridge(_config(tmp_path, wechat), clock=clock)
    time = Listening(clock, tmp_path)
    await time.settled()
    await _heartbeat(client)
    await time.listen(60)
    await _heartbeat(client)
    assert not [r for r in caplog.records if "half of" in r.getMessage()]
    await time.listen(SILENCE / 2 + STEP)
    await _heartbeat(client)
    (warning,) = [r for r in caplog.records if "half of" in r.getMessage()]
    assert warning.levelname == "WARNING"
    assert warning.since_previous == SILENCE / 2 + STEP  # type: ignore[attr-defined]
    assert warning.silence_seconds == SILENCE  # type: ignore[attr-defined]
    assert wechat.messages == []


# ------------------------------------------------------------------------------------------------
# Restarts


async def test_a_restart_during_an_outage_does_not_reset_the_clock(
    start_bridge: StartBridge, clock: FakeClock, wechat: WeChatRobot, tmp_path: Path
) -> None:
    """sheepdog restarted 7 minutes into a silence (down for 10 s): the message comes after 10
    minutes of listening in all, not 10 minutes after the restart; the gauge shows the
    heartbeat from before the restart."""
    config = _config(tmp_path, wechat)
    first = await start_bridge(config, clock=clock)
    time = Listening(clock, tmp_path)
    await time.settled()
    await _heartbeat(first)
    heartbeat_at = clock.now().timestamp()
    await time.listen(7 * 60)
    await first.close()
    await clock.advance(10)

    second = await start_bridge(config, clock=clock, fresh_registry=True)
    registry = second.app[BRIDGE].runtime.registry
    await time.settled()
    assert registry.get_sample_value(GAUGE) == heartbeat_at
    assert _stored(tmp_path).unheard_seconds == 7 * 60 + 10
    await time.listen(165)  # 595 s listened
    assert wechat.messages == []
    await time.listen(STEP)
    await wait_until_async(lambda: len(wechat.messages) == 1, what="the silent message")


async def test_a_restart_after_a_long_downtime_does_not_report_silence_at_once(
    start_bridge: StartBridge, clock: FakeClock, wechat: WeChatRobot, tmp_path: Path
) -> None:
    """sheepdog down for two hours (nobody could hear a heartbeat): after the restart it
    listens again, and reports silence only once it has listened long enough in all."""
    config = _config(tmp_path, wechat)
    first = await start_bridge(config, clock=clock)
    time = Listening(clock, tmp_path)
    await time.settled()
    await _heartbeat(first)
    await time.listen(5 * 60)
    await first.close()
    await clock.advance(2 * 3600)

    await start_bridge(config, clock=clock, fresh_registry=True)
    await time.settled()
    counted = 5 * 60 + max_gap(SILENCE)  # the two hours count as one gap at most
    assert _stored(tmp_path).unheard_seconds == counted
    await time.listen(SILENCE - counted - STEP)
    assert wechat.messages == []
    await time.listen(STEP)
    await wait_until_async(lambda: len(wechat.messages) == 1, what="the silent message")


async def test_a_silence_announced_before_a_restart_is_not_announced_again(
    start_bridge: StartBridge, clock: FakeClock, wechat: WeChatRobot, tmp_path: Path
) -> None:
    """Restarted during a silence already reported: no second silent message; the next
    heartbeat sends the recovery."""
    config = _config(tmp_path, wechat)
    first = await start_bridge(config, clock=clock)
    time = Listening(clock, tmp_path)
    await time.settled()
    await time.listen(SILENCE)
    await wait_until_async(lambda: len(wechat.messages) == 1, what="the silent message")
    await wait_until_async(lambda: _outbox(tmp_path)[0]["row_status"] == "sent", what="sent")
    await first.close()
    await clock.advance(30)

    second = await start_bridge(config, clock=clock, fresh_registry=True)
    await time.settled()
    await time.listen(SILENCE)
    assert len(wechat.messages) == 1
    await _heartbeat(second)
    await wait_until_async(lambda: len(wechat.messages) == 2, what="the recovery message")
    assert "RESOLVED" in wechat.messages[1].content


async def test_a_silence_declared_but_not_yet_queued_before_a_crash_goes_out_after_it(
    start_bridge: StartBridge, clock: FakeClock, wechat: WeChatRobot, tmp_path: Path
) -> None:
    """Killed between declaring a silence and queueing its message: after the restart the
    message goes out (one check later), once."""
    config = _config(tmp_path, wechat)
    first = await start_bridge(config, clock=clock)
    time = Listening(clock, tmp_path)
    await time.settled()
    await first.close()
    declared = clock.now().timestamp() - SILENCE
    with closing(sqlite3.connect(tmp_path / "state" / "sheepdog.db")) as conn, conn:
        conn.execute(
            "UPDATE watchdog_state SET unheard_seconds = ?, silence_started_at = ?",
            (SILENCE, declared),
        )

    await start_bridge(config, clock=clock, fresh_registry=True)
    await time.settled()
    await time.listen(STEP)
    await wait_until_async(lambda: len(wechat.messages) == 1, what="the silent message")
    await time.listen(4 * STEP)
    (row,) = _outbox(tmp_path)
    assert row["alerts"][0]["startsAt"].startswith(
        datetime.fromtimestamp(declared, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    )
    assert len(wechat.messages) == 1


# ------------------------------------------------------------------------------------------------
# Two processes on one database


async def test_two_processes_share_the_heartbeat_and_announce_once(
    start_bridge: StartBridge, clock: FakeClock, wechat: WeChatRobot, tmp_path: Path
) -> None:
    """Two services on one state: heartbeats reaching only the first keep the second quiet;
    silence is announced once (one outbox row) though both watch; the recovery too, from a
    heartbeat that reached the second."""
    config = _config(tmp_path, wechat)
    first = await start_bridge(config, clock=clock)
    second = await start_bridge(config, clock=clock, fresh_registry=True)
    # One process delivers (a shared outbox's destination lease is not this test's subject).
    second.app[BRIDGE].worker_of("ops")._task.cancel()  # type: ignore[union-attr]
    time = Listening(clock, tmp_path, watchdogs=2)
    await time.settled()
    for _ in range(30):
        await _heartbeat(first)
        await time.listen(60)
    assert _outbox(tmp_path) == []
    second_registry = second.app[BRIDGE].runtime.registry
    assert second_registry.get_sample_value(GAUGE) == clock.now().timestamp() - 60

    # Whichever queues a message, the first delivers it at its next look at the outbox.
    await time.listen(SILENCE + STEP)
    await wait_until_async(lambda: len(wechat.messages) == 1, what="the silent message")
    await time.listen(2 * STEP)
    await wait_until_async(
        lambda: [row["row_status"] for row in _outbox(tmp_path)] == ["sent"], what="one, sent"
    )
    await _heartbeat(second)
    await wait_until_async(lambda: len(_outbox(tmp_path)) == 2, what="the recovery queued")
    await time.listen(STEP)
    await wait_until_async(lambda: len(wechat.messages) == 2, what="the recovery message")
    await time.listen(2 * STEP)
    assert len(_outbox(tmp_path)) == 2 and len(wechat.messages) == 2


# ------------------------------------------------------------------------------------------------
# The endpoint: credentials, validation, answers


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {ALERT_TOKEN}"}],
)
async def test_heartbeats_need_the_same_credentials(
    start_bridge: StartBridge,
    wechat: WeChatRobot,
    tmp_path: Path,
    registry: CollectorRegistry,
    headers: dict[str, str],
) -> None:
    """/alerts/watchdog is behind the same auth as every /alerts target: no heartbeat without
    the token."""
    client = await start_bridge(_config(tmp_path, wechat))
    response = await client.post("/alerts/watchdog", json=_watchdog_payload(), headers=headers)
    assert response.status == 401
    assert registry.get_sample_value(GAUGE) == 0


async def test_a_heartbeat_is_validated_as_any_alertmanager_payload(
    start_bridge: StartBridge, wechat: WeChatRobot, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """Not an Alertmanager v4 payload: 400 naming the field; over the size limit: 413; a real
    Alertmanager 0.25 payload: 200. Only the valid one is a heartbeat."""
    client = await start_bridge(_config(tmp_path, wechat, max_body_bytes=2048))
    broken = _watchdog_payload()
    del broken["alerts"][0]["startsAt"]
    response = await client.post("/alerts/watchdog", json=broken, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"] == "alerts[0].startsAt: required"
    response = await client.post("/alerts/watchdog", data=b"{not json", headers=AUTH)
    assert response.status == 400
    too_big = json.dumps(make_payload(40, name="Watchdog")).encode()
    assert len(too_big) > 2048
    response = await client.post("/alerts/watchdog", data=too_big, headers=AUTH)
    assert response.status == 413
    assert registry.get_sample_value(GAUGE) == 0
    answer = await _heartbeat(client, fixture_payload("firing-one.json"))
    assert answer["status"] == "heartbeat"
    assert registry.get_sample_value(GAUGE) == answer["at"] > 0
    assert _outbox(tmp_path) == []


async def test_a_heartbeat_that_cannot_be_stored_is_503(
    start_bridge: StartBridge, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """The state cannot be written: 503, so Alertmanager retries (never a 4xx)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where state_dir should be")
    document = targets_config(tmp_path, {"ops": {"type": "log"}})
    document["state_dir"] = str(blocker / "state")
    client = await start_bridge(parse_config(document, env={}))
    response = await client.post("/alerts/watchdog", json=_watchdog_payload(), headers=AUTH)
    assert response.status == 503
    assert "retry" in (await response.json())["error"]


async def test_unknown_targets_are_still_404(
    start_bridge: StartBridge, wechat: WeChatRobot, tmp_path: Path
) -> None:
    """Only the reserved name is special: another unconfigured target is 404 naming the ones
    configured (the reserved one is not among them)."""
    client = await start_bridge(_config(tmp_path, wechat))
    response = await client.post("/alerts/watchdogs", json=_watchdog_payload(), headers=AUTH)
    assert response.status == 404
    assert (await response.json())["error"] == "unknown target 'watchdogs' (configured: ops)"


# ------------------------------------------------------------------------------------------------
# The messages on every channel


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("target", sorted(CHANNEL_TARGETS))
def test_every_channel_renders_both_messages(target: str, language: str) -> None:
    """The silent and the recovery payloads are valid Alertmanager payloads that every
    channel's built-in templates render, in both languages, with the summary and the
    runbook."""
    config = parse_config(
        {
            "bridge": {
                "language": language,
                "targets": {"t": CHANNEL_TARGETS[target]},
                "watchdog": {"target": "t"},
            }
        },
        env={},
    )
    settings = config.bridge.targets["t"]
    assert config.bridge.watchdog is not None
    notifier = channel_of(settings.type).notifier(
        settings, Renderer(config.bridge, CHANNELS), None, 10
    )
    state = WatchState(last_heartbeat_at=1_790_000_000.0, silence_started_at=1_790_000_000.0)
    for message, status in (("silent", "告警触发"), ("recovered", "已恢复")):
        if message == "recovered":
            state = WatchState(
                silence_started_at=1_790_000_000.0,
                silence_ended_at=1_790_002_400.0,
                announced="silent",
            )
        payload = silence_payload(due(state) or "silent", state, config.bridge.watchdog, language)
        assert validate_payload(copy.deepcopy(payload)) == payload
        shown = "\n".join(
            json.dumps(m.body, ensure_ascii=False)
            for m in notifier.compose(payload, now=datetime(2026, 9, 22, tzinfo=UTC))
        )
        assert ALERT_NAME in shown
        summary = payload["alerts"][0]["annotations"]["summary"]
        assert json.dumps(summary, ensure_ascii=False)[1:-1].split("：")[0][:8] in shown
        if language == "zh":
            assert status in shown
        if target != "log" and message == "silent":
            assert RUNBOOK_URL in shown.replace("\\/", "/")


def test_every_process_builds_the_same_message() -> None:
    """The payload is made from the stored state and the config alone: two processes that
    both queue it make the same dedup key, and the outbox keeps one."""
    config = parse_config({"bridge": {"watchdog": {"target": "default"}}}, env={}).bridge
    assert config.watchdog is not None
    state = WatchState(last_heartbeat_at=1.5e9, silence_started_at=1.5e9)
    one = silence_payload("silent", state, config.watchdog, "en")
    two = silence_payload("silent", copy.deepcopy(state), config.watchdog, "en")
    assert dedup_key("t", one) == dedup_key("t", two)
    later = WatchState(last_heartbeat_at=1.6e9, silence_started_at=1.6e9)
    assert dedup_key("t", one) != dedup_key(
        "t", silence_payload("silent", later, config.watchdog, "en")
    )


# ------------------------------------------------------------------------------------------------
# The state machine, for any order of heartbeats and checks

EVENTS = st.lists(
    st.tuples(st.sampled_from(["heartbeat", "check", "announce"]), st.floats(0, 400)),
    max_size=200,
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(EVENTS)
def test_messages_alternate_and_follow_the_listening_clock(
    events: list[tuple[str, float]],
) -> None:
    """Whatever the order: silent and recovered alternate, starting with silent; a silence is
    declared only after silence_seconds of counted listening; a recovery only after a
    heartbeat; the listening clock never counts more than the time that passed."""
    silence = 600.0
    state = WatchState()
    now = 1_000_000.0
    sent: list[str] = []
    counted_since_heartbeat = 0.0
    for kind, wait in events:
        previous = state
        now += wait
        if kind == "heartbeat":
            state = heard(state, now)
            counted_since_heartbeat = 0.0
            assert state.unheard_seconds == 0
        elif kind == "check":
            since = now - (previous.listened_at if previous.listened_at is not None else now)
            state = listened(state, now, silence)
            counted_since_heartbeat += min(since, max_gap(silence))
            assert state.unheard_seconds == pytest.approx(counted_since_heartbeat)
            if state.silent and not previous.silent:
                assert state.unheard_seconds >= silence
        else:
            message = due(state)
            if message is not None:
                assert state.silence_started_at is not None
                state = announced(state, message, state.silence_started_at)
                sent.append(message)
        assert state.unheard_seconds <= max(0.0, now - 1_000_000.0) + 1e-6
    assert sent == ["silent", "recovered"] * (len(sent) // 2) + ["silent"] * (len(sent) % 2)


def _shanghai() -> Any:
    import zoneinfo

    return zoneinfo.ZoneInfo("Asia/Shanghai")
