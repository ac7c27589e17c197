"""The rate limits' table, for SQLite and PostgreSQL side by side (see :mod:`proxy.limits`).

``rate_limit_counts``: one row per process, client, kind (``requests`` or ``tokens``) and slot
(a whole second of wall-clock time): what that process counted then. Each process adds only to
its own rows; the slot leads the key, so that reading the window and deleting what has left it
are ranges of the key.

``rate_limit_grants``: one row per process, client and kind: what that process may count
before its next exchange, written at ``slot``; the others count it while it is recent.
"""

from __future__ import annotations

from typing import Final

from sheepdog.core.db import Migration

__all__ = ["MIGRATIONS"]

MIGRATIONS: Final = (
    Migration(
        1,
        sqlite=(
            """
            CREATE TABLE IF NOT EXISTS rate_limit_counts (
                slot    INTEGER NOT NULL,  -- whole seconds since the epoch
                client  TEXT    NOT NULL,
                kind    TEXT    NOT NULL,  -- 'requests' or 'tokens'
                process TEXT    NOT NULL,  -- the process that counted them
                amount  INTEGER NOT NULL,
                PRIMARY KEY (slot, client, kind, process)
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE IF NOT EXISTS rate_limit_grants (
                client  TEXT    NOT NULL,
                kind    TEXT    NOT NULL,
                process TEXT    NOT NULL,
                amount  INTEGER NOT NULL,
                slot    INTEGER NOT NULL,  -- when it was granted
                PRIMARY KEY (client, kind, process)
            ) WITHOUT ROWID
            """,
        ),
        postgresql=(
            """
            CREATE TABLE IF NOT EXISTS rate_limit_counts (
                slot    BIGINT NOT NULL,
                client  TEXT   NOT NULL,
                kind    TEXT   NOT NULL,
                process TEXT   NOT NULL,
                amount  BIGINT NOT NULL,
                PRIMARY KEY (slot, client, kind, process)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS rate_limit_grants (
                client  TEXT   NOT NULL,
                kind    TEXT   NOT NULL,
                process TEXT   NOT NULL,
                amount  BIGINT NOT NULL,
                slot    BIGINT NOT NULL,
                PRIMARY KEY (client, kind, process)
            )
            """,
        ),
    ),
)
