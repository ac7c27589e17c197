"""This process's name in the shared state (the outbox's leases and claims, the rate limits'
counts): unique among every process that shares the database, now or in the past."""

from __future__ import annotations

import os
import secrets
import socket

__all__ = ["process_name"]

_names: dict[int, str] = {}


def process_name() -> str:
    """Host, pid and a random part (a restarted container may get the same pid), made in the
    process itself: a worker forked after the first call does not inherit its parent's."""
    pid = os.getpid()
    name = _names.get(pid)
    if name is None:
        name = _names[pid] = f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}"
    return name
