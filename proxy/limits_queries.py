"""The rate limits' statements, written once for both backends; only the placeholders differ
(``?`` for SQLite, ``$1``, ``$2`` … for PostgreSQL). And what both make of the rows they read.

Each process adds only to its own counts (``amount = rate_limit_counts.amount + excluded.amount``)
and replaces only its own grants.
"""

# Only placeholders are formatted into these statements, never a value.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from proxy.limits import (
    GRANT_SECONDS,
    Alive,
    Exchanged,
    LimitKey,
    RateKey,
    Round,
    limit_key,
    rate_key,
)

__all__ = ["RateQueries", "exchanged", "rate_queries"]


@dataclass(frozen=True, slots=True)
class RateQueries:
    add: str
    """Add to one of this process's counts: slot, client, kind, process, amount."""
    forget: str
    """Delete the counts of slots that left the window: the oldest slot kept."""
    others: str
    """Every other process's counts per client, kind and slot: oldest slot, process."""
    granted: str
    """The grants of the other processes alive: oldest grant slot still alive, process."""
    alive_counted: str
    """What the other processes alive counted in the window, per client and kind: oldest slot,
    oldest grant slot still alive, process."""
    forget_grants: str
    """Delete the grants of slots that left the window, and this process's: oldest slot,
    process."""
    grant: str
    """One of this process's grants: client, kind, process, amount, slot."""


def rate_queries(placeholder: Callable[[int], str]) -> RateQueries:
    """The statements with ``placeholder(n)`` for the n-th parameter (from 1)."""
    one, two, three = placeholder(1), placeholder(2), placeholder(3)
    five = ", ".join(placeholder(n) for n in range(1, 6))
    return RateQueries(
        add=(
            f"INSERT INTO rate_limit_counts (slot, client, kind, process, amount) VALUES ({five}) "
            "ON CONFLICT (slot, client, kind, process) "
            "DO UPDATE SET amount = rate_limit_counts.amount + excluded.amount"
        ),
        forget=f"DELETE FROM rate_limit_counts WHERE slot < {one}",
        others=(
            "SELECT client, kind, slot, SUM(amount) AS amount FROM rate_limit_counts "
            f"WHERE slot >= {one} AND process <> {two} GROUP BY slot, client, kind"
        ),
        granted=(
            "SELECT client, kind, process, amount FROM rate_limit_grants "
            f"WHERE slot >= {one} AND process <> {two}"
        ),
        alive_counted=(
            "SELECT client, kind, SUM(amount) AS amount FROM rate_limit_counts "
            f"WHERE slot >= {one} AND process IN (SELECT process FROM rate_limit_grants "
            f"WHERE slot >= {two} AND process <> {three}) GROUP BY client, kind"
        ),
        forget_grants=f"DELETE FROM rate_limit_grants WHERE slot < {one} OR process = {two}",
        grant=(
            f"INSERT INTO rate_limit_grants (client, kind, process, amount, slot) VALUES ({five})"
        ),
    )


def alive_since(round_: Round) -> int:
    """The oldest slot of a grant still alive."""
    return round_.slot - GRANT_SECONDS


def exchanged(
    round_: Round,
    others: Iterable[tuple[Any, Any, Any, Any]],
    granted: Iterable[tuple[Any, Any, Any, Any]],
    alive_counted: Iterable[tuple[Any, Any, Any]],
) -> Exchanged:
    """What the rows of :attr:`RateQueries.others`, :attr:`~RateQueries.granted` and
    :attr:`~RateQueries.alive_counted` mean, and this process's new grants from them (rows of
    a kind this sheepdog does not know are left out)."""
    counts: dict[RateKey, int] = {}
    for client, kind, slot, amount in others:
        key = rate_key(client, kind, slot)
        if key is not None:
            counts[key] = int(amount)
    held: dict[LimitKey, int] = {}
    processes: set[str] = set()
    for client, kind, process, amount in granted:
        processes.add(process)
        limit = limit_key(client, kind)
        if limit is not None:
            held[limit] = held.get(limit, 0) + int(amount)
    counted: dict[LimitKey, int] = {}
    for client, kind, amount in alive_counted:
        limit = limit_key(client, kind)
        if limit is not None:
            counted[limit] = int(amount)
    return Exchanged(counts, round_.grants(counts, Alive(len(processes), held, counted)))
