"""The watchdog's one row, on both backends, shared by several processes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from bridge.service import watchdog_store_for
from bridge.watchdog import WatchState, heard
from sheepdog.core.backends import database_for
from tests.conftest import MakeConfig


async def test_the_watchdog_state_is_one_row_that_processes_change_atomically(
    backend: dict[str, Any], make_config: MakeConfig
) -> None:
    """Two processes (two databases here) changing the row at once lose no change; what one
    writes the other reads."""
    config = make_config({**backend, "workers": 2})
    databases = [database_for(config), database_for(config)]
    stores = [watchdog_store_for(db) for db in databases]
    try:
        assert await stores[0].read() == WatchState()

        def listened_a_second(state: WatchState) -> WatchState:
            return replace(state, unheard_seconds=state.unheard_seconds + 1)

        await asyncio.gather(*(stores[i % 2].update(listened_a_second) for i in range(20)))
        assert (await stores[1].read()).unheard_seconds == 20
        before, after = await stores[1].update(lambda state: heard(state, 1000.0))
        assert before.unheard_seconds == 20
        assert (after.last_heartbeat_at, after.unheard_seconds) == (1000.0, 0.0)
        assert await stores[0].read() == after
    finally:
        for db in databases:
            await db.close()
