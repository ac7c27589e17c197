"""``sheepdog render`` and ``sheepdog outbox``: the bridge's command-line tools.

``render`` prints exactly what a target would be sent for a payload (every part, the mention
follow-up, the email's headers and parts), with the URL shown as its host only. ``outbox``
lists what waits or died in the outbox and puts dead letters back in the queue, where a running
``sheepdog serve`` picks them up within seconds; it reads whichever database the config names.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from bridge.channels.registry import channel_of
from bridge.config import BridgeConfig
from bridge.outbox import Outbox, Row
from bridge.payload import parse_json, validate_payload
from bridge.render import humanize_seconds
from bridge.sample import SAMPLE_PAYLOAD
from bridge.service import build_renderer
from sheepdog.core.db import Database, DatabaseUnavailable

__all__ = ["outbox_command", "render_command"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


def render_command(
    config: BridgeConfig,
    target_name: str,
    payload_source: str | None,
    *,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print what ``target_name`` would be sent for the payload (``-``: stdin; default: a
    built-in sample)."""
    out = out or sys.stdout
    err = err or sys.stderr
    target = config.targets.get(target_name)
    if target is None:
        known = ", ".join(sorted(config.targets))
        print(f"sheepdog render: unknown target {target_name!r} (configured: {known})", file=err)
        return EXIT_USAGE
    renderer = build_renderer(config)
    try:
        document = _read_payload(payload_source, stdin or sys.stdin)
        payload = validate_payload(document)
    except (OSError, ValueError) as exc:
        where = payload_source if payload_source not in (None, "-") else "stdin"
        print(f"sheepdog render: {where}: {exc}", file=err)
        return EXIT_FAILED
    channel = channel_of(target.type)
    notifier = channel.notifier(target, renderer, None, config.retry.timeout_seconds)
    messages = notifier.compose(payload, now=datetime.now(UTC))
    print(
        f"# target {target.name} ({target.type}) → {notifier.destination()}: "
        f"{len(messages)} message(s)",
        file=out,
    )
    for number, message in enumerate(messages, 1):
        print(
            f"--- message {number}/{len(messages)}: {channel.describe_message(message)} ---",
            file=out,
        )
        print(notifier.preview(message), file=out)
    return EXIT_OK


def _read_payload(source: str | None, stdin: TextIO) -> Any:
    if source is None:
        return json.loads(json.dumps(SAMPLE_PAYLOAD))
    text = stdin.read() if source == "-" else Path(source).read_bytes()
    return parse_json(text)


def outbox_command(
    db: Database,
    action: str,
    ids: Sequence[int],
    *,
    all_dead: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``list`` (waiting and dead), ``dead``, or ``retry`` dead letters by id or all."""
    out = out or sys.stdout
    err = err or sys.stderr
    if action != "retry" and (ids or all_dead):
        print(f"sheepdog outbox {action}: takes no ids (did you mean retry?)", file=err)
        return EXIT_USAGE
    if action == "retry" and bool(ids) == all_dead:
        print("sheepdog outbox retry: give dead letter ids, or --all-dead", file=err)
        return EXIT_USAGE
    return asyncio.run(_outbox(db, action, None if all_dead else list(ids), out, err))


async def _outbox(
    db: Database, action: str, ids: list[int] | None, out: TextIO, err: TextIO
) -> int:
    try:
        if db.kind == "sqlite" and not Path(db.where).exists():  # noqa: ASYNC240 - one stat
            print(f"no outbox yet at {db.where}: nothing was ever received", file=out)
            return EXIT_OK if action != "retry" else EXIT_FAILED
        outbox = Outbox(db)
        if action == "retry":
            return await _retry(outbox, ids, out, err)
        statuses = ("dead",) if action == "dead" else ("pending", "in_flight", "dead")
        _print_rows(await outbox.list_rows(statuses), out)
        return EXIT_OK
    except DatabaseUnavailable as exc:
        print(f"sheepdog outbox: {exc}", file=err)
        return EXIT_FAILED
    finally:
        await db.close()


async def _retry(outbox: Outbox, ids: list[int] | None, out: TextIO, err: TextIO) -> int:
    now = datetime.now(UTC).timestamp()
    queued, refused = await outbox.retry_dead(ids, now)
    if queued:
        print(
            f"queued again: {', '.join(map(str, queued))} (a running sheepdog sends them "
            "within seconds)",
            file=out,
        )
    elif not refused:
        print("no dead letters", file=out)
    for row_id, why in refused.items():
        print(f"not queued: {row_id} {why}", file=err)
    return EXIT_FAILED if refused else EXIT_OK


def _print_rows(rows: Sequence[Row], out: TextIO) -> None:
    if not rows:
        print("nothing waiting, no dead letters", file=out)
        return
    now = datetime.now(UTC).timestamp()
    table = [("ID", "TARGET", "STATUS", "ATTEMPTS", "AGE", "ALERTS", "LAST ERROR")]
    for row in rows:
        names = ", ".join(row.alert_names)
        if row.alert_count > 1:
            names += f" ({row.alert_count} alerts)"
        table.append(
            (
                str(row.id),
                row.target,
                row.status,
                str(row.attempts),
                humanize_seconds(now - row.created_at),
                names,
                (row.last_error or "").replace("\n", " "),
            )
        )
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]) - 1)]
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*cells, line[-1]]).rstrip(), file=out)
    waiting = sum(1 for row in rows if row.status != "dead")
    dead = [row.id for row in rows if row.status == "dead"]
    summary = f"{waiting} waiting, {len(dead)} dead"
    if dead:
        summary += (
            f"; send dead letters again with: sheepdog outbox retry {dead[0]} (or --all-dead)"
        )
    print(summary, file=out)
