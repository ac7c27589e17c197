"""The watchdog's table, for SQLite and PostgreSQL side by side: one row, its state."""

from __future__ import annotations

from typing import Final

from sheepdog.core.db import Migration

__all__ = ["COLUMNS", "MIGRATIONS"]

COLUMNS: Final = (
    "last_heartbeat_at",
    "unheard_seconds",
    "listened_at",
    "silence_started_at",
    "silence_ended_at",
    "announced",
)

MIGRATIONS: Final = (
    Migration(
        1,
        sqlite=(
            """
            CREATE TABLE IF NOT EXISTS watchdog_state (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                last_heartbeat_at REAL,
                unheard_seconds REAL NOT NULL DEFAULT 0,
                listened_at REAL,
                silence_started_at REAL,
                silence_ended_at REAL,
                announced TEXT CHECK (announced IN ('silent', 'recovered'))
            )
            """,
            "INSERT OR IGNORE INTO watchdog_state (id) VALUES (1)",
        ),
        postgresql=(
            """
            CREATE TABLE watchdog_state (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                last_heartbeat_at DOUBLE PRECISION,
                unheard_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
                listened_at DOUBLE PRECISION,
                silence_started_at DOUBLE PRECISION,
                silence_ended_at DOUBLE PRECISION,
                announced TEXT CHECK (announced IN ('silent', 'recovered'))
            )
            """,
            "INSERT INTO watchdog_state (id) VALUES (1) ON CONFLICT DO NOTHING",
        ),
    ),
)
