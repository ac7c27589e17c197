"""The ledger's tables, version by version, for SQLite and PostgreSQL side by side.

Both backends apply these through the same migration runner (:mod:`sheepdog.core.db`). A new
counted column is a new version here (for both) and a field of
:class:`proxy.ledger.LedgerDelta`.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from sheepdog.core.db import Migration

__all__ = ["MIGRATIONS"]

# Version 2's columns: tokens by kind and what cache reads saved.
_TOKEN_KINDS: Final = (
    ("cache_read_tokens", "INTEGER NOT NULL DEFAULT 0", "BIGINT NOT NULL DEFAULT 0"),
    ("cache_write_tokens", "INTEGER NOT NULL DEFAULT 0", "BIGINT NOT NULL DEFAULT 0"),
    ("reasoning_tokens", "INTEGER NOT NULL DEFAULT 0", "BIGINT NOT NULL DEFAULT 0"),
    ("cache_savings_usd", "REAL NOT NULL DEFAULT 0", "DOUBLE PRECISION NOT NULL DEFAULT 0"),
)


def _add_token_kinds(conn: sqlite3.Connection) -> None:
    # A ledger made by a development build of 0.2 may have some of them already.
    present = {row[1] for row in conn.execute("PRAGMA table_info(ledger_usage)")}
    for column, definition, _ in _TOKEN_KINDS:
        if column not in present:
            conn.execute(f"ALTER TABLE ledger_usage ADD COLUMN {column} {definition}")


MIGRATIONS: Final = (
    # Version 1 is the table of sheepdog 0.1, which created it "if not exists" at every start.
    Migration(
        1,
        sqlite=(
            """
            CREATE TABLE IF NOT EXISTS ledger_usage (
                month         TEXT    NOT NULL,  -- 'YYYY-MM', calendar month in UTC
                client        TEXT    NOT NULL,  -- configured client name, or 'anonymous'
                model         TEXT    NOT NULL,  -- the model label: a priced model, or 'other'
                requests      INTEGER NOT NULL DEFAULT 0,
                input_tokens  INTEGER NOT NULL DEFAULT 0,  -- all input, cache included
                output_tokens INTEGER NOT NULL DEFAULT 0,  -- all output, reasoning included
                usd           REAL    NOT NULL DEFAULT 0,  -- at list price
                PRIMARY KEY (month, client, model)
            ) WITHOUT ROWID
            """,
        ),
        postgresql=(
            """
            CREATE TABLE ledger_usage (
                month         TEXT    NOT NULL,
                client        TEXT    NOT NULL,
                model         TEXT    NOT NULL,
                requests      BIGINT  NOT NULL DEFAULT 0,
                input_tokens  BIGINT  NOT NULL DEFAULT 0,
                output_tokens BIGINT  NOT NULL DEFAULT 0,
                usd           DOUBLE PRECISION NOT NULL DEFAULT 0,
                PRIMARY KEY (month, client, model)
            )
            """,
        ),
    ),
    # Version 2: tokens by kind (of input_tokens: cache reads and writes; of output_tokens:
    # reasoning), what cache reads saved, and the names clients sent that had no price
    # ('' for those past the month's limit).
    Migration(
        2,
        sqlite=(
            _add_token_kinds,
            """
            CREATE TABLE IF NOT EXISTS ledger_unpriced (
                month         TEXT    NOT NULL,
                name          TEXT    NOT NULL,
                requests      INTEGER NOT NULL DEFAULT 0,
                input_tokens  INTEGER NOT NULL DEFAULT 0,
                output_tokens INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (month, name)
            ) WITHOUT ROWID
            """,
        ),
        postgresql=(
            *(
                f"ALTER TABLE ledger_usage ADD COLUMN IF NOT EXISTS {column} {definition}"
                for column, _, definition in _TOKEN_KINDS
            ),
            """
            CREATE TABLE IF NOT EXISTS ledger_unpriced (
                month         TEXT   NOT NULL,
                name          TEXT   NOT NULL,
                requests      BIGINT NOT NULL DEFAULT 0,
                input_tokens  BIGINT NOT NULL DEFAULT 0,
                output_tokens BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (month, name)
            )
            """,
        ),
    ),
)
