"""``sheepdog render`` and ``sheepdog outbox``: the bridge's command-line tools.

``render`` prints exactly what a target would be sent for a payload (every part, the mention
follow-up, the email's headers and parts), with the URL shown as its host only; the console's
playground shows the same :func:`render_payload`. ``outbox``
lists what waits or died in the outbox and puts dead letters back in the queue, where a running
``sheepdog serve`` picks them up within seconds; it reads whichever database the config names.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from bridge.channels.base import Markdown, TargetConfig
from bridge.channels.registry import channel_of
from bridge.config import BridgeConfig
from bridge.outbox import Outbox, Row
from bridge.payload import Payload, parse_json, validate_payload
from bridge.render import Renderer, TemplateFailure, humanize_seconds
from bridge.sample import SAMPLE_PAYLOAD
from bridge.service import build_renderer
from sheepdog.core.db import Database, DatabaseUnavailable

__all__ = ["RenderedMessage", "Rendering", "outbox_command", "render_command", "render_payload"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One request a target would be sent: what it is, and its text as ``render`` prints it."""

    number: int
    description: str
    text: str
    markdown: Markdown | None
    """The markdown it holds and the subset its client shows, for a markdown channel."""


@dataclass(frozen=True, slots=True)
class Rendering:
    """Exactly what a target would be sent for one payload."""

    target: TargetConfig
    destination: str
    """Where it goes, never the key (``https://host/<redacted>``)."""
    messages: tuple[RenderedMessage, ...]

    @property
    def heading(self) -> str:
        count = len(self.messages)
        return (
            f"target {self.target.name} ({self.target.type}) → {self.destination}: "
            f"{count} message(s)"
        )


def render_payload(
    config: BridgeConfig, renderer: Renderer, target: TargetConfig, payload: Payload
) -> Rendering:
    """What ``target`` would be sent for a validated ``payload``, as ``sheepdog render`` and the
    console show it. Raises :class:`~bridge.render.TemplateFailure` if a template fails on it."""
    channel = channel_of(target.type)
    notifier = channel.notifier(target, renderer, None, config.retry.timeout_seconds)
    messages = notifier.compose(payload, now=datetime.now(UTC))
    return Rendering(
        target=target,
        destination=notifier.destination(),
        messages=tuple(
            RenderedMessage(
                number=number,
                description=channel.describe_message(message),
                text=notifier.preview(message),
                markdown=channel.markdown(message),
            )
            for number, message in enumerate(messages, 1)
        ),
    )


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
    where = payload_source if payload_source not in (None, "-") else "stdin"
    try:
        document = _read_payload(payload_source, stdin or sys.stdin)
        payload = validate_payload(document)
        rendering = render_payload(config, renderer, target, payload)
    except (OSError, ValueError) as exc:
        print(f"sheepdog render: {where}: {exc}", file=err)
        return EXIT_FAILED
    except TemplateFailure as exc:
        print(f"sheepdog render: {where}: a template failed on this payload: {exc}", file=err)
        return EXIT_FAILED
    print(f"# {rendering.heading}", file=out)
    total = len(rendering.messages)
    for message in rendering.messages:
        print(f"--- message {message.number}/{total}: {message.description} ---", file=out)
        print(message.text, file=out)
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
