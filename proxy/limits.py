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
:class:`RateStore`, to be run about once a second as the spend ledger is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from proxy.clients import Caller
from sheepdog.core.clock import Clock
from sheepdog.core.db import DatabaseUnavailable

__all__ = [
    "WINDOW_SECONDS",
    "LimitKind",
    "LimitState",
    "RateKey",
    "RateLimiter",
    "RateRefusal",
    "RateStore",
    "exchange_counts",
]

WINDOW_SECONDS: Final = 60
_SLOTS: Final = WINDOW_SECONDS + 1
"""The current slot and the 60 before it."""

LimitKind = Literal["requests", "tokens"]
LIMIT_KINDS: Final[tuple[LimitKind, ...]] = ("requests", "tokens")

RateKey = tuple[str, LimitKind, int]
"""client, kind, slot (whole seconds since the epoch)"""


class _Window:
    """One client's count of one kind over the current slot and the 60 before it."""

    __slots__ = ("_counts", "_newest", "_others", "_total", "_unsent")

    def __init__(self) -> None:
        self._counts = [0] * _SLOTS
        self._newest = 0  # the newest slot seen; counts older than 60 slots before it are gone
        self._total = 0  # this process's counts in the window, and the others' as last read
        self._others: list[int] | None = None
        self._unsent: dict[int, int] | None = None

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
        self._shared = False

    def admit(self, caller: Caller) -> RateRefusal | None:
        """Count a request of ``caller`` (a client with a limit), or say why it must wait."""
        now = self._clock.now().timestamp()
        slot = int(now)
        windows = self._clients.get(caller.name)
        if windows is None:
            windows = self._clients[caller.name] = _ClientWindows(self._shared)
        rpm, tpm = caller.requests_per_minute, caller.tokens_per_minute
        requests_used = windows.requests.used(slot)
        tokens_used = windows.tokens.used(slot)
        if (rpm is None or requests_used < rpm) and (tpm is None or tokens_used < tpm):
            windows.requests.add(slot, 1)
            return None
        return self._refusal(caller.name, windows, rpm, tpm, now)

    def count_tokens(self, client: str, tokens: int) -> None:
        """Count ``tokens`` (input + output) a request of ``client`` used, now it is known."""
        windows = self._clients.get(client)
        if windows is None or tokens <= 0:
            return  # not a limited client
        windows.tokens.add(int(self._clock.now().timestamp()), tokens)

    def keep(self, clients: Iterable[str]) -> None:
        """Forget the windows of clients that no longer have a limit (after a reload)."""
        kept = set(clients)
        for name in [name for name in self._clients if name not in kept]:
            del self._clients[name]

    @staticmethod
    def _refusal(
        client: str, windows: _ClientWindows, rpm: int | None, tpm: int | None, now: float
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
        kind = max(waits, key=lambda name: waits[name])
        return RateRefusal(
            client,
            kind,
            waits[kind],
            now,
            states.get("requests"),
            states.get("tokens"),
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
        slot = int(self._clock.now().timestamp())
        by_window: dict[tuple[str, LimitKind], dict[int, int]] = {}
        for (client, kind, counted), amount in counts.items():
            by_window.setdefault((client, kind), {})[counted] = amount
        for client, windows in self._clients.items():
            for kind in LIMIT_KINDS:
                windows.window(kind).adopt_others(slot, by_window.get((client, kind), {}))

    def oldest_slot(self) -> int:
        """The oldest slot still in the window now: older counts matter to no one."""
        return int(self._clock.now().timestamp()) - WINDOW_SECONDS


class RateStore(Protocol):
    """Where processes share their counts (one implementation per database backend)."""

    async def exchange(
        self, process: str, unsent: Mapping[RateKey, int], since_slot: int
    ) -> dict[RateKey, int]:
        """Add this process's ``unsent`` counts and return the sum of every other process's
        counts per client, kind and slot from ``since_slot`` on, in one transaction; raise
        :class:`~sheepdog.core.db.DatabaseUnavailable` when the database cannot be reached."""
        ...


async def exchange_counts(limiter: RateLimiter, store: RateStore, process: str) -> None:
    """One round: this process's new counts to the store, the others' back. On failure the
    counts wait for the next round and the others' stay as last read (they age out of the
    window by themselves)."""
    unsent = limiter.take_unsent()
    try:
        others = await store.exchange(process, unsent, limiter.oldest_slot())
    except DatabaseUnavailable:
        limiter.restore_unsent(unsent)
        raise
    limiter.adopt_others(others)
