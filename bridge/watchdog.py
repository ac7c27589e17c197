"""The watchdog: Alertmanager's ``Watchdog`` heartbeat in, "monitoring is silent" out.

Prometheus fires ``Watchdog`` all the time and Alertmanager posts it to ``/alerts/watchdog``
once per repeat interval of its route. Each such post is a heartbeat (:meth:`Watchdog.heartbeat`).
When sheepdog has listened for ``bridge.watchdog.silence_seconds`` without hearing one, it puts a
"monitoring is silent" notification in the outbox for ``bridge.watchdog.target`` (an
Alertmanager-shaped payload, alert ``MonitoringSilent``, severity critical), and when heartbeats
come back, its resolution: ordinary notifications, durable, rate-limited and retried like any.

**What counts as silence.** Silence is time sheepdog spent *listening* without hearing a
heartbeat, not time since the last one: while no sheepdog process runs, nobody can hear one, and
that proves nothing about Prometheus. Every process adds the time since the last check (any
process's) at each check, and a gap longer than a few checks — every process was stopped —
counts as :func:`max_gap` at most. So a restart during a Prometheus outage goes on counting where
it was (the clock is not reset), and a sheepdog that was down for an hour does not report
silence the moment it starts (the hour is not counted). Never having heard one counts from the
first check.

**Shared state.** The state (:class:`WatchState`: the last heartbeat, the listening clock, the
latest silence and which of its messages is in the outbox) is one row in the database, changed
only by the pure functions below inside one transaction (:class:`WatchdogStore`), so that with
several processes on one database a heartbeat that reached one counts for all, and exactly one
of them declares the silence. The process whose check or heartbeat made a message due puts it
in the outbox at once; another does only if it is still due at its next check (the first
stopped in between). Each message is built from the stored state alone, so should two ever
queue it, they make the same notification, and the outbox's duplicate check keeps one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final, Literal, Protocol

from prometheus_client import CollectorRegistry, Gauge

from bridge.config import BridgeConfig, WatchdogConfig
from bridge.language import WATCHDOG_MESSAGES, Language, gettext_for, humanize_seconds
from bridge.payload import ZERO_TIME, Payload
from sheepdog.core.clock import Clock
from sheepdog.core.db import DatabaseUnavailable

__all__ = [
    "ALERT_NAME",
    "MAX_CHECK_SECONDS",
    "RUNBOOK_URL",
    "Message",
    "WatchState",
    "Watchdog",
    "WatchdogStore",
    "announced",
    "check_seconds",
    "due",
    "heard",
    "listened",
    "max_gap",
    "silence_payload",
]

log = logging.getLogger("sheepdog.bridge.watchdog")

ALERT_NAME: Final = "MonitoringSilent"
RUNBOOK_URL: Final = (
    "https://github.com/sheepdog-dev/sheepdog/blob/main/docs/runbooks/MonitoringSilent.md"
)
MAX_CHECK_SECONDS: Final = 15.0
"""The longest pause between two checks (a tenth of ``silence_seconds`` when that is shorter)."""
_GAP_CHECKS: Final = 3
"""A pause of more than this many checks means nobody was listening."""
_GROUP_KEY: Final = f'{{}}:{{alertname="{ALERT_NAME}"}}'

Message = Literal["silent", "recovered"]
_Due = tuple[Message, float]
"""A message, and the start of the silence it is about."""
Sleep = Callable[[float], Awaitable[None]]
Accept = Callable[[str, Payload], Awaitable[tuple[int, bool]]]


def check_seconds(silence_seconds: float) -> float:
    """How often the listening clock is advanced and the silence checked."""
    return min(MAX_CHECK_SECONDS, silence_seconds / 10)


def max_gap(silence_seconds: float) -> float:
    """The most one check adds to the listening clock: a longer pause since the last check
    (sheepdog stopped, or the database out of reach) counts as this much."""
    return _GAP_CHECKS * check_seconds(silence_seconds)


# The state, and every change to it -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchState:
    """The watchdog's shared state. Times are Unix seconds (the wall clock: processes on
    several hosts share it, where a monotonic clock would not be)."""

    last_heartbeat_at: float | None = None
    """When the last heartbeat arrived (at any process); None before the first."""
    unheard_seconds: float = 0.0
    """How long sheepdog has listened since then without hearing one."""
    listened_at: float | None = None
    """When the listening clock was last advanced (a check, or a heartbeat)."""
    silence_started_at: float | None = None
    """The latest silence: the last heartbeat before it (or when listening began)."""
    silence_ended_at: float | None = None
    """When the heartbeat that ended it arrived; None while it lasts."""
    announced: Message | None = None
    """Which message of the latest silence is in the outbox."""

    @property
    def silent(self) -> bool:
        return self.silence_started_at is not None and self.silence_ended_at is None


def _later(stored: float | None, now: float) -> float:
    # A process whose check or heartbeat comes in late (or whose clock is behind) must not
    # move a time back, or the next check would count the same seconds twice.
    return now if stored is None else max(stored, now)


def heard(state: WatchState, now: float) -> WatchState:
    """A heartbeat arrived at ``now``: the listening clock starts again, a silence ends."""
    new = replace(
        state,
        last_heartbeat_at=_later(state.last_heartbeat_at, now),
        unheard_seconds=0.0,
        listened_at=_later(state.listened_at, now),
    )
    return replace(new, silence_ended_at=now) if state.silent else new


def listened(state: WatchState, now: float, silence_seconds: float) -> WatchState:
    """A check at ``now``: the time since the last one (any process's) is added to the
    listening clock — at most :func:`max_gap`, nothing if ``now`` is not later — and a silence
    begins if it reached ``silence_seconds``, unless the previous silence's recovery is still
    to be announced."""
    since = 0.0 if state.listened_at is None else now - state.listened_at
    unheard = state.unheard_seconds + min(max(since, 0.0), max_gap(silence_seconds))
    new = replace(state, unheard_seconds=unheard, listened_at=_later(state.listened_at, now))
    if state.silent or unheard < silence_seconds or due(state) is not None:
        return new
    started = state.last_heartbeat_at if state.last_heartbeat_at is not None else now - unheard
    return replace(new, silence_started_at=started, silence_ended_at=None, announced=None)


def due(state: WatchState) -> Message | None:
    """The message of the latest silence still to be put in the outbox, if any: the silent
    one while it lasts, the recovery once it ended (only if the silent one went out)."""
    if state.silent and state.announced is None:
        return "silent"
    if state.silence_ended_at is not None and state.announced == "silent":
        return "recovered"
    return None


def announced(state: WatchState, message: Message, silence_started_at: float) -> WatchState:
    """``message`` of the silence that began at ``silence_started_at`` is in the outbox (a
    no-op if the state has moved on meanwhile)."""
    if state.silence_started_at != silence_started_at or due(state) != message:
        return state
    return replace(state, announced=message)


class WatchdogStore(Protocol):
    """The watchdog's row in the database, one implementation per backend
    (:mod:`bridge.watchdog_sqlite`, :mod:`bridge.watchdog_postgres`). Each call is one
    transaction; a database that cannot be reached raises :class:`DatabaseUnavailable`."""

    async def read(self) -> WatchState: ...

    async def update(
        self, change: Callable[[WatchState], WatchState]
    ) -> tuple[WatchState, WatchState]:
        """Apply ``change`` to the stored state atomically (no other process changes it in
        between); returns the state before and after."""
        ...


# The messages -------------------------------------------------------------------------------


def _rfc3339(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def silence_payload(
    message: Message, state: WatchState, config: WatchdogConfig, language: Language
) -> Payload:
    """The Alertmanager v4 payload of ``message`` for the latest silence of ``state``,
    worded in ``language``. Made from the stored state and the config only, so that every
    process makes the same one (the same dedup key)."""
    assert state.silence_started_at is not None
    words = gettext_for(language)
    duration = humanize_seconds(config.silence_seconds, language)
    silent_summary, silent_description, back_summary, back_description = WATCHDOG_MESSAGES
    resolved = message == "recovered"
    status = "resolved" if resolved else "firing"
    labels = {"alertname": ALERT_NAME, "severity": "critical"}
    summary = words(back_summary if resolved else silent_summary) % {"duration": duration}
    annotations = {
        "summary": summary,
        "description": words(back_description if resolved else silent_description)
        % {"duration": duration},
        "runbook_url": RUNBOOK_URL,
    }
    started = _rfc3339(state.silence_started_at)
    ended = ZERO_TIME
    if resolved:
        assert state.silence_ended_at is not None
        ended = _rfc3339(state.silence_ended_at)
    fingerprint = hashlib.sha256(f"{ALERT_NAME}:{started}".encode()).hexdigest()[:16]
    return {
        "receiver": "sheepdog-watchdog",
        "status": status,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": started,
                "endsAt": ended,
                "generatorURL": "",
                "fingerprint": fingerprint,
            }
        ],
        "groupLabels": {"alertname": ALERT_NAME},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "version": "4",
        "groupKey": _GROUP_KEY,
        "truncatedAlerts": 0,
    }


# The service --------------------------------------------------------------------------------


class Watchdog:
    """Records heartbeats, and checks for silence in the background while the bridge runs.

    It reads ``bridge.watchdog`` from ``settings()`` at every check, so a reload takes effect
    at the next one (:meth:`wake` makes that now). Without ``bridge.watchdog`` it still records
    heartbeats and shows the last one (read at start-up, then the ones this process receives),
    checks nothing and sends nothing.
    """

    def __init__(
        self,
        *,
        store: WatchdogStore,
        clock: Clock,
        sleep: Sleep,
        registry: CollectorRegistry,
        settings: Callable[[], BridgeConfig],
        accept: Accept,
    ) -> None:
        self.store = store
        self._clock = clock
        self._sleep = sleep
        self._settings = settings
        self._accept = accept
        self.last_heartbeat = Gauge(
            "sheepdog_watchdog_last_heartbeat_timestamp_seconds",
            "When the last Watchdog heartbeat from Alertmanager arrived (Unix time; 0 before "
            "the first), at this or any process sharing the state.",
            registry=registry,
        )
        self._shown = 0.0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._trouble: str | None = None
        self._started_at = float("inf")
        self._made_due: _Due | None = None
        """The message this process made due (its heartbeat or check), to announce at once."""
        self._seen_due: _Due | None = None
        """The message due at the previous check: still due, it is this process's to announce
        (whoever made it due stopped before it could)."""

    # Life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._started_at = self._now()
        self._task = asyncio.create_task(self._run(), name="sheepdog-bridge-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Check now: a heartbeat came, or the config changed."""
        self._wakeup.set()

    # Heartbeats ------------------------------------------------------------------------------

    async def heartbeat(self) -> WatchState:
        """Record a heartbeat that arrived now, durably; raises :class:`DatabaseUnavailable`
        if it cannot be stored (the gauge shows it all the same: it did arrive)."""
        now = self._now()
        self._show(now)
        before, after = await self.store.update(lambda state: heard(state, now))
        self._warn_if_far_apart(before, now)
        if self._made(before, after):
            self.wake()
        return after

    def _made(self, before: WatchState, after: WatchState) -> bool:
        """Whether the change from ``before`` to ``after`` made a message due (then this
        process announces it, and the others need not)."""
        message = due(after)
        if message is None or message == due(before) or after.silence_started_at is None:
            return False
        self._made_due = (message, after.silence_started_at)
        return True

    def _warn_if_far_apart(self, before: WatchState, now: float) -> None:
        """Say so when a heartbeat comes more than half of ``silence_seconds`` after the one
        before it, which came while this process was listening: either the pipeline was away
        for a while, or heartbeats are too far apart for ``silence_seconds`` to tell a late one
        from silence."""
        config = self._settings().watchdog
        previous = before.last_heartbeat_at
        if config is None or previous is None or previous < self._started_at or before.silent:
            return
        if now - previous > config.silence_seconds / 2:
            log.warning(
                "a Watchdog heartbeat came more than half of bridge.watchdog.silence_seconds "
                "after the one before: Prometheus or Alertmanager was away for a while, or the "
                "repeat_interval of Alertmanager's watchdog route is too long for it",
                extra={
                    "since_previous": round(now - previous, 3),
                    "silence_seconds": config.silence_seconds,
                },
            )

    # Checking --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._check()
                if self._trouble is not None:
                    log.info("the watchdog can use the database again")
                    self._trouble = None
            except asyncio.CancelledError:
                raise
            except DatabaseUnavailable as exc:
                if self._trouble is None:
                    log.warning(
                        "the watchdog cannot use the database; it goes on trying",
                        extra={"reason": str(exc)},
                    )
                self._trouble = str(exc)
            except Exception:
                log.exception("the watchdog hit an unexpected error; it carries on")
            await self._pause(self._interval())

    def _interval(self) -> float | None:
        """Until the next check; None (only when woken) without ``bridge.watchdog``."""
        config = self._settings().watchdog
        return None if config is None else check_seconds(config.silence_seconds)

    async def _check(self) -> None:
        settings = self._settings()
        config = settings.watchdog
        if config is None:
            state = await self.store.read()
            if state.last_heartbeat_at is not None:
                self._show(state.last_heartbeat_at)
            return
        now = self._now()
        before, state = await self.store.update(
            lambda current: listened(current, now, config.silence_seconds)
        )
        if state.last_heartbeat_at is not None:
            self._show(state.last_heartbeat_at)
        if state.silent and not before.silent:
            log.error(
                "monitoring is silent: no Watchdog heartbeat for "
                "bridge.watchdog.silence_seconds; telling bridge.watchdog.target",
                extra={
                    "target": config.target,
                    "silence_seconds": config.silence_seconds,
                    "last_heartbeat": _when(state.last_heartbeat_at),
                },
            )
        self._made(before, state)
        message = due(state)
        if message is None or state.silence_started_at is None:
            self._seen_due = None
            return
        current: _Due = (message, state.silence_started_at)
        if current in (self._made_due, self._seen_due):
            await self._announce(message, state, config, settings.language)
            self._made_due = None
        self._seen_due = current

    async def _announce(
        self, message: Message, state: WatchState, config: WatchdogConfig, language: Language
    ) -> None:
        """Put ``message`` in the outbox, then record that it is there. Should this process
        stop in between, another (or this one, restarted) puts it there again a check later,
        and the outbox recognises the repeat (the same payload) for 15 minutes."""
        assert state.silence_started_at is not None
        payload = silence_payload(message, state, config, language)
        row_id, _ = await self._accept(config.target, payload)
        started = state.silence_started_at
        await self.store.update(lambda current: announced(current, message, started))
        log.log(
            logging.WARNING if message == "silent" else logging.INFO,
            "monitoring is silent: message queued"
            if message == "silent"
            else "Watchdog heartbeats are back: recovery message queued",
            extra={"target": config.target, "id": row_id, "since": _when(started)},
        )

    async def _pause(self, seconds: float | None) -> None:
        """Sleep ``seconds`` (None: for ever), or until :meth:`wake`."""
        if self._wakeup.is_set():
            self._wakeup.clear()
            return
        waiting: set[asyncio.Future[object]] = {asyncio.ensure_future(self._wakeup.wait())}
        if seconds is not None:
            waiting.add(asyncio.ensure_future(self._sleep(seconds)))
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
        self._wakeup.clear()

    def _show(self, heartbeat_at: float) -> None:
        """The gauge shows the latest heartbeat known here; it never goes back."""
        if heartbeat_at > self._shown:
            self._shown = heartbeat_at
            self.last_heartbeat.set(heartbeat_at)

    def _now(self) -> float:
        return self._clock.now().timestamp()


def _when(seconds: float | None) -> str | None:
    return None if seconds is None else _rfc3339(seconds)
