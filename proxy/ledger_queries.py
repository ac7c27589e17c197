"""The ledger's statements, written once for both backends; only the placeholders differ
(``?`` for SQLite, ``$1``, ``$2`` … for PostgreSQL).

Every writer adds its own deltas (``usd = ledger_usage.usd + excluded.usd``), so concurrent
writers never overwrite each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxy.ledger import COUNTERS, UNPRICED_COUNTERS

__all__ = ["LedgerQueries", "ledger_queries"]


@dataclass(frozen=True, slots=True)
class LedgerQueries:
    add: str
    """Add one (month, client, model) row's deltas."""
    add_name: str
    """Add one (month, name) row's deltas to the names metered as ``other``."""
    read: str
    """A month's rows, by client and model."""
    read_unpriced: str
    """A month's unpriced names, most requested first."""
    spend: str
    """A month's spend per client."""
    known_names: str
    """A month's unpriced names already recorded."""


def ledger_queries(placeholder: Callable[[int], str]) -> LedgerQueries:
    """The statements with ``placeholder(n)`` for the n-th parameter (from 1)."""

    def upsert(table: str, keys: tuple[str, ...], counters: tuple[str, ...]) -> str:
        columns = (*keys, *counters)
        values = ", ".join(placeholder(n) for n in range(1, len(columns) + 1))
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) "  # noqa: S608
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in counters)
        )

    month = placeholder(1)
    return LedgerQueries(
        add=upsert("ledger_usage", ("month", "client", "model"), COUNTERS),
        add_name=upsert("ledger_unpriced", ("month", "name"), UNPRICED_COUNTERS),
        read=(
            f"SELECT month, client, model, {', '.join(COUNTERS)} FROM ledger_usage "  # noqa: S608
            f"WHERE month = {month} ORDER BY client, model"
        ),
        read_unpriced=(
            f"SELECT month, name, {', '.join(UNPRICED_COUNTERS)} "  # noqa: S608
            f"FROM ledger_unpriced WHERE month = {month} ORDER BY requests DESC, name"
        ),
        spend=(
            "SELECT client, SUM(usd) AS usd FROM ledger_usage "  # noqa: S608
            f"WHERE month = {month} GROUP BY client"
        ),
        known_names=f"SELECT name FROM ledger_unpriced WHERE month = {month}",  # noqa: S608
    )
