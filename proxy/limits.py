"""Per-client rate limits: requests and tokens per minute, over sliding 60-second windows.

A limited client has two windows: one counts its requests as they are admitted, the other its
tokens (input + output) as their usage arrives, so a stream counts when it ends. A window is a
ring of one-second slots, the current one and the 60 before it, with a running total: checking
or counting costs a dict lookup and a few additions, whatever the rate. A request is refused while
either total is at its limit (a refused request is not counted), and told when the oldest slots
that keep it there will have left the window.

Because a slot stops counting only once it is wholly more than 60 s old, the window spans between
60 and 61 s: a client never gets more than ``requests_per_minute`` requests admitted in any 60
seconds, and may wait up to a second longer than a window of exact timestamps would make it.
Tokens are only known once a request ends, so requests admitted while under ``tokens_per_minute``
can carry it over by what they use (docs/proxy.md, "Rate limits").

Slots are whole seconds of wall-clock time, so that processes can share their counts: with
:meth:`RateLimiter.share`, each window also keeps what this process counted since the last
exchange (:meth:`RateLimiter.take_unsent`) and the other processes' counts per slot as last read
(:meth:`RateLimiter.adopt_others`); :func:`exchange_counts` does one round with a
:class:`RateStore` (one per database backend: :mod:`proxy.limits_sqlite`,
:mod:`proxy.limits_postgres`), and :class:`SharedCounts` runs it about once a second, as the
spend ledger syncs, wherever other processes may share the database. Requests never wait for
it: a process admits against its own counts and the others' as last read, and against its
grant, what it may count until its next exchange (:meth:`Round.grants`: its share of what
neither the counts nor the others' grants hold; exchanges take turns, so together the
processes never pass a limit: docs/proxy.md, "Overshoot with several processes"). While the
database cannot be reached, a process keeps to its last grant until it runs out, then limits
with its own counts and the others' as last read (they age out of the window), and sends what
it counted once it can again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from proxy.clients import Caller
from sheepdog.core.clock import Clock
from sheepdog.core.db import Database, DatabaseUnavailable

__all__ = [
    "EXCHANGE_INTERVAL_SECONDS",
    "GRANT_SECONDS",
    "WINDOW_SECONDS",
    "Alive",
    "Exchanged",
    "LimitKey",
    "LimitKind",
    "LimitState",
    "RateKey",
    "RateLimiter",
    "RateRefusal",
    "RateStore",
    "Round",
    "SharedCounts",
    "exchange_counts",
    "limit_key",
    "rate_key",
    "store_for",
]

log = logging.getLogger("sheepdog.proxy.limits")

WINDOW_SECONDS: Final = 60
_SLOTS: Final = WINDOW_SECONDS + 1
"""The current slot and the 60 before it."""

LimitKind = Literal["requests", "tokens"]
LIMIT_KINDS: Final[tuple[LimitKind, ...]] = ("requests", "tokens")

RateKey = tuple[str, LimitKind, int]
"""client, kind, slot (whole seconds since the epoch)"""
LimitKey = tuple[str, LimitKind]
"""client, kind"""

EXCHANGE_INTERVAL_SECONDS: Final = 1.0
GRANT_SECONDS: Final = 5
"""How long the others count a process's grants after it wrote them (it stops using them a
second sooner): a process that died, or lost the database, holds no share for longer."""
_KINDS: Final[dict[str, LimitKind]] = {kind: kind for kind in LIMIT_KINDS}


def rate_key(client: str, kind: str, slot: int) -> RateKey | None:
    """The key of a row a store read, or None for a kind this sheepdog does not know."""
    known = _KINDS.get(kind)
    return None if known is None else (client, known, int(slot))


def limit_key(client: str, kind: str) -> LimitKey | None:
    """The limit a grant row is for, or None for a kind this sheepdog does not know."""
    known = _KINDS.get(kind)
    return None if known is None else (client, known)


class _Window:
    """One client's count of one kind over the current slot and the 60 before it."""

    __slots__ = (
        "_counts",
        "_epoch_used",
        "_grant",
        "_grant_until",
        "_newest",
        "_others",
        "_total",
        "_unsent",
    )

    def __init__(self) -> None:
        self._counts = [0] * _SLOTS
        self._newest = 0  # the newest slot seen; counts older than 60 slots before it are gone
        self._total = 0  # this process's counts in the window, and the others' as last read
        self._others: list[int] | None = None
        self._unsent: dict[int, int] | None = None
        # Shared: what this process may count before it next hears from the others (None: no
        # grant, or it expired: the process limits alone), and what it counted since.
        self._grant: int | None = None
        self._grant_until = 0.0
        self._epoch_used = 0

    def _advance(self, slot: int) -> None:
        newest = self._newest
        if slot <= newest:
            return  # same second (or the wall clock stepped back: counted in the newest)
        counts, others = self._counts, self._others
        if slot - newest >= _SLOTS:
            counts[:] = [0] * _SLOTS
            if others is not None:
                others[:] = [0] * _SLOTS
            self._total = 0
        else:
            for gone in range(newest + 1, slot + 1):
                index = gone % _SLOTS
                self._total -= counts[index]
                counts[index] = 0
                if others is not None:
                    self._total -= others[index]
                    others[index] = 0
        self._newest = slot

    def used(self, slot: int) -> int:
        self._advance(slot)
        return self._total

    def add(self, slot: int, amount: int) -> None:
        self._advance(slot)
        newest = self._newest
        self._counts[newest % _SLOTS] += amount
        self._total += amount
        if self._unsent is not None:
            self._unsent[newest] = self._unsent.get(newest, 0) + amount
            self._epoch_used += amount

    def within_grant(self, now: float) -> bool:
        """Whether this process may still count here (always, without a valid grant)."""
        grant = self._grant
        return grant is None or self._epoch_used < grant or now >= self._grant_until

    def _at(self, slot: int) -> int:
        index = slot % _SLOTS
        others = self._others
        return self._counts[index] + (others[index] if others is not None else 0)

    def seconds_until_below(self, limit: int, now: float) -> float:
        """Seconds from ``now`` until the count is below ``limit``: until enough of the oldest
        slots have left. Slot ``s`` counts until the moment ``s + 61``."""
        excess = self._total - limit + 1
        if excess <= 0:
            return 0.0
        dropped = 0
        for slot in range(self._newest - WINDOW_SECONDS, self._newest + 1):
            dropped += self._at(slot)
            if dropped >= excess:
                return max(0.0, slot + _SLOTS - now)
        return max(0.0, self._newest + _SLOTS - now)

    def seconds_until_empty(self, now: float) -> float:
        """Seconds from ``now`` until nothing is counted any more (the limit fully restored)."""
        for slot in range(self._newest, self._newest - _SLOTS, -1):
            if self._at(slot):
                return max(0.0, slot + _SLOTS - now)
        return 0.0

    # The seam for counts shared between processes.

    def share(self) -> None:
        if self._others is None:
            self._others = [0] * _SLOTS
            self._unsent = {}

    def take_unsent(self) -> dict[int, int]:
        unsent, self._unsent = self._unsent or {}, {}
        return unsent

    def restore_unsent(self, unsent: Mapping[int, int]) -> None:
        """Put back counts whose exchange failed, to go with the next one."""
        assert self._unsent is not None
        for slot, amount in unsent.items():
            self._unsent[slot] = self._unsent.get(slot, 0) + amount

    def begin_epoch(self, now: float) -> int:
        """Count afresh, at the start of an exchange: until the new grant arrives, what is
        left of the current one goes on covering (returned: the exchange reserves it too);
        the new one covers what is counted from here on."""
        grant = self._grant
        if grant is None or now >= self._grant_until:
            self._grant, left = None, 0
        else:
            self._grant = left = max(0, grant - self._epoch_used)
        self._epoch_used = 0
        return left

    def own(self, slot: int) -> int:
        """This process's own count in the window."""
        self._advance(slot)
        return sum(self._counts)

    def set_grant(self, grant: int, until: float) -> None:
        self._grant, self._grant_until = grant, until

    def adopt_others(self, slot: int, counts: Mapping[int, int]) -> None:
        """The other processes' counts per slot, replacing those last read."""
        self._advance(slot)
        others = self._others
        assert others is not None
        newest = self._newest
        self._total -= sum(others)
        others[:] = [0] * _SLOTS
        for counted, amount in counts.items():
            if newest - WINDOW_SECONDS <= counted <= newest:
                others[counted % _SLOTS] += amount
        self._total += sum(others)


@dataclass(frozen=True, slots=True)
class LimitState:
    """Where one limit stood when a request was refused."""

    limit: int
    used: int
    reset_seconds: float
    """Until nothing is counted against it any more (the limit wholly available again)."""

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True, slots=True)
class RateRefusal:
    """Why a request was refused, and when to come back."""

    client: str
    limit: LimitKind
    """The limit that keeps the client waiting longest."""
    retry_after: float
    """Seconds until the request would be admitted."""
    at: float
    """When it was refused (seconds since the epoch)."""
    requests: LimitState | None
    tokens: LimitState | None
    share_spent: bool = False
    """Refused for this process's share of what the limit has left (shared counts), not for
    the window: it asks again once it has heard from the other processes."""


class _ClientWindows:
    __slots__ = ("requests", "tokens")

    def __init__(self, shared: bool) -> None:
        self.requests = _Window()
        self.tokens = _Window()
        if shared:
            self.requests.share()
            self.tokens.share()

    def window(self, kind: LimitKind) -> _Window:
        return self.requests if kind == "requests" else self.tokens


class RateLimiter:
    """Every limited client's windows; kept across reloads, limits read from each request's
    :class:`~proxy.clients.Caller`."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._clients: dict[str, _ClientWindows] = {}
        self._limits: dict[LimitKey, int] = {}
        self._shared = False

    def admit(self, caller: Caller) -> RateRefusal | None:
        """Count a request of ``caller`` (a client with a limit), or say why it must wait."""
        now = self._clock.time()
        slot = int(now)
        windows = self._clients.get(caller.name)
        if windows is None:
            windows = self._clients[caller.name] = _ClientWindows(self._shared)
        rpm, tpm = caller.requests_per_minute, caller.tokens_per_minute
        requests_used = windows.requests.used(slot)
        tokens_used = windows.tokens.used(slot)
        if (rpm is None or requests_used < rpm) and (tpm is None or tokens_used < tpm):
            if not self._shared:
                windows.requests.add(slot, 1)
                return None
            spent: LimitKind | None = None
            if rpm is not None and not windows.requests.within_grant(now):
                spent = "requests"
            elif tpm is not None and not windows.tokens.within_grant(now):
                spent = "tokens"
            if spent is None:
                windows.requests.add(slot, 1)
                return None
            return self._refusal(caller.name, windows, rpm, tpm, now, spent)
        return self._refusal(caller.name, windows, rpm, tpm, now)

    def count_tokens(self, client: str, tokens: int) -> None:
        """Count ``tokens`` (input + output) a request of ``client`` used, now it is known."""
        windows = self._clients.get(client)
        if windows is None or tokens <= 0:
            return  # not a limited client
        windows.tokens.add(int(self._clock.time()), tokens)

    def keep(self, callers: Iterable[Caller]) -> None:
        """The clients and their limits (at start-up and after a reload): the windows of
        clients without a limit are forgotten; the limits are what exchanges share out."""
        limits: dict[LimitKey, int] = {}
        for caller in callers:
            if caller.requests_per_minute is not None:
                limits[(caller.name, "requests")] = caller.requests_per_minute
            if caller.tokens_per_minute is not None:
                limits[(caller.name, "tokens")] = caller.tokens_per_minute
        self._limits = limits
        kept = {client for client, _ in limits}
        for name in [name for name in self._clients if name not in kept]:
            del self._clients[name]

    @property
    def has_limits(self) -> bool:
        """Whether any client has a limit (else there is nothing to exchange)."""
        return bool(self._limits)

    @staticmethod
    def _refusal(
        client: str,
        windows: _ClientWindows,
        rpm: int | None,
        tpm: int | None,
        now: float,
        spent: LimitKind | None = None,
    ) -> RateRefusal:
        states: dict[LimitKind, LimitState] = {}
        waits: dict[LimitKind, float] = {}
        limits: tuple[tuple[LimitKind, int | None], ...] = (("requests", rpm), ("tokens", tpm))
        for kind, limit in limits:
            if limit is None:
                continue
            window = windows.window(kind)
            used = window.used(int(now))
            states[kind] = LimitState(limit, used, window.seconds_until_empty(now))
            if used >= limit:
                waits[kind] = window.seconds_until_below(limit, now)
        if spent is not None:
            # The next exchange brings a new share (or the window's own wait, if longer).
            waits = {spent: max(waits.get(spent, 0.0), EXCHANGE_INTERVAL_SECONDS)}
        kind = max(waits, key=lambda name: waits[name])
        return RateRefusal(
            client,
            kind,
            waits[kind],
            now,
            states.get("requests"),
            states.get("tokens"),
            share_spent=spent is not None,
        )

    # The seam for counts shared between processes (see the module).

    def share(self) -> None:
        """Keep what is counted here for :meth:`take_unsent`, and room for the others' counts."""
        self._shared = True
        for windows in self._clients.values():
            windows.requests.share()
            windows.tokens.share()

    def take_unsent(self) -> dict[RateKey, int]:
        """What this process counted since the last call, per client, kind and slot."""
        unsent: dict[RateKey, int] = {}
        for client, windows in self._clients.items():
            for kind in LIMIT_KINDS:
                for slot, amount in windows.window(kind).take_unsent().items():
                    unsent[(client, kind, slot)] = amount
        return unsent

    def restore_unsent(self, unsent: Mapping[RateKey, int]) -> None:
        """Counts taken whose exchange failed: they go with the next one."""
        by_window: dict[tuple[str, LimitKind], dict[int, int]] = {}
        for (client, kind, slot), amount in unsent.items():
            by_window.setdefault((client, kind), {})[slot] = amount
        for (client, kind), counts in by_window.items():
            windows = self._clients.get(client)
            if windows is not None:
                windows.window(kind).restore_unsent(counts)

    def adopt_others(self, counts: Mapping[RateKey, int]) -> None:
        """Every other process's counts per client, kind and slot within the window."""
        slot = int(self._clock.time())
        by_window: dict[tuple[str, LimitKind], dict[int, int]] = {}
        for (client, kind, counted), amount in counts.items():
            by_window.setdefault((client, kind), {})[counted] = amount
        for client, windows in self._clients.items():
            for kind in LIMIT_KINDS:
                windows.window(kind).adopt_others(slot, by_window.get((client, kind), {}))

    def begin_round(self, process: str, *, leaving: bool = False) -> Round:
        """Start an exchange: this process's new counts, and what it needs to work out its
        grants in the store's transaction (a snapshot: requests go on meanwhile)."""
        now = self._clock.time()
        slot = int(now)
        since = self.oldest_slot()
        unsent = {key: amount for key, amount in self.take_unsent().items() if key[2] >= since}
        own: dict[LimitKey, int] = {}
        carried: dict[LimitKey, int] = {}
        for (client, kind), _limit in self._limits.items():
            windows = self._clients.get(client)
            if windows is None:
                # Not seen here yet: its first request must count the others' too.
                windows = self._clients[client] = _ClientWindows(self._shared)
            window = windows.window(kind)
            carried[(client, kind)] = window.begin_epoch(now)
            own[(client, kind)] = window.own(slot)
        limits = dict(self._limits)
        return Round(process, now, since, unsent, own, limits, carried, leaving)

    def end_round(self, round_: Round, exchanged: Exchanged) -> None:
        """The others' counts and this process's new grants, from the store."""
        self.adopt_others(exchanged.others)
        until = round_.now + GRANT_SECONDS - 1  # before the others stop counting it
        for (client, kind), grant in exchanged.grants.items():
            windows = self._clients.get(client)
            if windows is not None:
                windows.window(kind).set_grant(grant, until)

    def oldest_slot(self) -> int:
        """The oldest slot still in the window."""
        return int(self._clock.time()) - WINDOW_SECONDS


@dataclass(frozen=True, slots=True)
class Round:
    """One exchange: what a process sends, and how it works out its grants from what the
    others have counted and been granted, inside the store's transaction."""

    process: str
    now: float
    since_slot: int
    unsent: Mapping[RateKey, int]
    own: Mapping[LimitKey, int]
    """This process's counts in the window, per limit."""
    limits: Mapping[LimitKey, int]
    carried: Mapping[LimitKey, int]
    """What was left of this process's grants as the round began: it may still count that
    until the new grants arrive."""
    leaving: bool = False
    """The last round of a process that stops: its grants are withdrawn."""

    @property
    def slot(self) -> int:
        return int(self.now)

    def grants(self, others: Mapping[RateKey, int], alive: Alive) -> dict[LimitKey, int]:
        """This process's grant per limit: its share of what the window has left, at most
        what the others' grants do not hold. The share is its part of what the processes
        alive counted in the window, plus one each (so a process not used yet still gets
        some): a client served through one process gets nearly all of it there, one spread
        evenly gets even parts. A share of at least an even part is rounded up, a smaller one
        down, so that the last few are granted to the process that uses them, not held by
        idle ones. As long as exchanges take turns, the counts and the grants never sum above
        a limit."""
        if self.leaving:
            return {}
        counted: dict[LimitKey, int] = {}
        for (client, kind, slot), amount in others.items():
            if slot >= self.since_slot:
                counted[(client, kind)] = counted.get((client, kind), 0) + amount
        processes = alive.processes + 1
        grants: dict[LimitKey, int] = {}
        for key, limit in self.limits.items():
            own = self.own.get(key, 0)
            left = limit - own - counted.get(key, 0)  # what the window has left
            free = left - alive.granted.get(key, 0)  # of which nobody holds a grant
            if free <= 0:
                grants[key] = 0
                continue
            part, whole = left * (own + 1), own + alive.counted.get(key, 0) + processes
            at_least_even = (own + 1) * processes >= whole
            share = -(-part // whole) if at_least_even else part // whole
            grants[key] = min(share, free)
        return grants

    def grant_rows(self, grants: Mapping[LimitKey, int]) -> list[tuple[str, str, str, int, int]]:
        """The rows the store records for this process's ``grants`` (client, kind, process,
        amount, slot): each new grant, or what was left of the old one if that is more (it
        may have been counted while the round ran; the next round releases it)."""
        return [
            (client, kind, self.process, max(grant, self.carried.get((client, kind), 0)), self.slot)
            for (client, kind), grant in grants.items()
        ]


@dataclass(frozen=True, slots=True)
class Alive:
    """The other processes still exchanging (that wrote grants in the last GRANT_SECONDS)."""

    processes: int
    granted: Mapping[LimitKey, int]
    """Their grants, summed per limit."""
    counted: Mapping[LimitKey, int]
    """Their counts in the window, summed per limit."""


@dataclass(frozen=True, slots=True)
class Exchanged:
    others: dict[RateKey, int]
    """Every other process's counts per client, kind and slot within the window."""
    grants: dict[LimitKey, int]
    """What this process may count per limit until it next hears from the others."""


class RateStore(Protocol):
    """Where processes sharing a database exchange their counts (one per backend)."""

    async def exchange(self, round_: Round) -> Exchanged:
        """In one transaction, and one process at a time: add ``round_.unsent`` to this
        process's counts, delete the counts and grants of slots before ``round_.since_slot``
        (they left the window), read every other process's counts from that slot on and the
        grants of the others still alive (written in the last :data:`GRANT_SECONDS`), write
        this process's grants from :meth:`Round.grants` (delete them when it is leaving); raise
        :class:`~sheepdog.core.db.DatabaseUnavailable` when the database cannot be reached."""
        ...


def store_for(db: Database) -> RateStore:
    """The rate limits' store for ``db``'s backend; registers their migrations on it."""
    if db.kind == "postgresql":
        from proxy.limits_postgres import PostgresRateStore

        return PostgresRateStore(db)
    from proxy.limits_sqlite import SqliteRateStore

    return SqliteRateStore(db)


async def exchange_counts(
    limiter: RateLimiter, store: RateStore, process: str, *, leaving: bool = False
) -> None:
    """One round: this process's new counts to the store, the others' and its grants back. On
    failure the counts wait for the next round, the others' stay as last read (they age out of
    the window by themselves) and the grants run out. Counts of slots that have left the window
    are dropped: they matter to no one, and a long outage must not pile them up."""
    round_ = limiter.begin_round(process, leaving=leaving)
    try:
        exchanged = await store.exchange(round_)
    except BaseException:
        limiter.restore_unsent(round_.unsent)
        raise
    limiter.end_round(round_, exchanged)


class SharedCounts:
    """Runs :func:`exchange_counts` every interval, in the background, until :meth:`stop`
    (then once more, leaving: what was counted last reaches the others, and its grants are
    theirs again). A round is skipped while no client has a limit."""

    def __init__(
        self,
        limiter: RateLimiter,
        store: RateStore,
        process: str,
        interval: float = EXCHANGE_INTERVAL_SECONDS,
    ) -> None:
        limiter.share()
        self._limiter = limiter
        self._store = store
        self._process = process
        self._interval = interval
        self._stopping = asyncio.Event()
        self._failing = False

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self.exchange()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stopping.wait()
        await self.exchange(leaving=True)

    def stop(self) -> None:
        self._stopping.set()

    async def exchange(self, *, leaving: bool = False) -> None:
        """One round; a failure is logged (once, until a round succeeds again), never raised."""
        if not self._limiter.has_limits:
            return
        try:
            await exchange_counts(self._limiter, self._store, self._process, leaving=leaving)
        except DatabaseUnavailable as exc:
            self._set_failing(str(exc))
        except Exception as exc:  # a bug here must not end the sharing for the process's life
            if not self._failing:
                log.exception("rate limit counts could not be exchanged")
            self._set_failing(f"{type(exc).__name__}: {exc}")
        else:
            self._set_failing(None)

    def _set_failing(self, problem: str | None) -> None:
        if problem is not None and not self._failing:
            log.error(
                "rate limits count this process's requests only, until the database answers",
                extra={"reason": problem},
            )
        elif problem is not None:
            log.debug("rate limit counts kept for the next exchange", extra={"reason": problem})
        elif self._failing:
            log.info("rate limits count every process's requests again")
        self._failing = problem is not None
