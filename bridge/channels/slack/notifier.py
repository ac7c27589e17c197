"""Sending to a Slack incoming webhook: Block Kit inside a coloured attachment.

Limits (Slack's docs): ``text`` up to 40,000 characters, at most 50 blocks, a section's text up
to 3,000 characters. A message over them is cut at alert boundaries into numbered parts; an
alert too long on its own has its sections split at line boundaries. Success is HTTP 200 with
the body ``ok``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from bridge.channels.base import Message
from bridge.channels.compose import compose_parts, mentions_for, part_renderer
from bridge.channels.slack import answers
from bridge.channels.slack.config import SlackTarget
from bridge.channels.text import split_lines_to_fit, truncate_chars
from bridge.channels.webhook import WebhookNotifier
from bridge.classify import Verdict
from bridge.payload import Payload
from bridge.render import Digest, Part, TemplateFailure

__all__ = [
    "MAX_BLOCKS",
    "SECTION_LIMIT",
    "TEMPLATE",
    "TEXT_LIMIT",
    "SlackNotifier",
    "fits_slack",
    "parse_slack_body",
]

TEXT_LIMIT: Final = 40_000
MAX_BLOCKS: Final = 50
SECTION_LIMIT: Final = 3_000
TEMPLATE: Final = "slack.json.j2"


class SlackNotifier(WebhookNotifier):
    target: SlackTarget

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> Verdict:
        return answers.classify(status, body, headers)

    def compose(
        self, payload: Payload, *, now: datetime, digest: Digest | None = None
    ) -> list[Message]:
        render = part_renderer(
            self._renderer,
            self.target,
            TEMPLATE,
            payload,
            parse_slack_body,
            now=now,
            digest=digest,
            mentions=mentions_for(payload["alerts"]),
        )
        bodies = compose_parts(
            payload["alerts"], render, fits=fits_slack, split=_split_body, label=_label
        )
        return [Message("slack", body) for body in bodies]


def parse_slack_body(text: str) -> dict[str, Any]:
    """The JSON object the Slack template produced, or :class:`TemplateFailure`."""
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise TemplateFailure(f"{TEMPLATE} did not produce valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise TemplateFailure(f"{TEMPLATE} must produce a JSON object")
    return body


def fits_slack(body: Mapping[str, Any]) -> bool:
    """Within Slack's limits: text, block count, and every section's text."""
    if _chars(str(body.get("text", ""))) > TEXT_LIMIT:
        return False
    blocks = _blocks(body)
    if len(blocks) > MAX_BLOCKS:
        return False
    return all(_chars(_section_text(block)) <= SECTION_LIMIT for block in blocks)


def _blocks(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    blocks = list(body.get("blocks") or [])
    for attachment in body.get("attachments") or []:
        if isinstance(attachment, dict):
            blocks.extend(attachment.get("blocks") or [])
    return [block for block in blocks if isinstance(block, dict)]


def _section_text(block: Mapping[str, Any]) -> str:
    text = block.get("text")
    if block.get("type") == "section" and isinstance(text, dict):
        return str(text.get("text", ""))
    return ""


def _split_body(body: dict[str, Any]) -> list[dict[str, Any]]:
    """An over-limit message as several that fit: long sections split into several sections
    at line boundaries, then the blocks shared out, at most 50 to a message."""
    blocks: list[dict[str, Any]] = []
    for block in _blocks(body):
        text = _section_text(block)
        if _chars(text) <= SECTION_LIMIT:
            blocks.append(block)
            continue
        for chunk in split_lines_to_fit(text, SECTION_LIMIT, _chars):
            chunk_block = copy.deepcopy(block)
            chunk_block["text"]["text"] = chunk
            blocks.append(chunk_block)
    template = copy.deepcopy(body)
    template["text"] = truncate_chars(str(body.get("text", "")), TEXT_LIMIT - 20)
    pieces: list[dict[str, Any]] = []
    for start in range(0, max(1, len(blocks)), MAX_BLOCKS):
        piece = copy.deepcopy(template)
        _set_blocks(piece, blocks[start : start + MAX_BLOCKS])
        pieces.append(piece)
    return pieces


def _set_blocks(body: dict[str, Any], blocks: list[dict[str, Any]]) -> None:
    attachments = [a for a in body.get("attachments") or [] if isinstance(a, dict)]
    if attachments and any("blocks" in a for a in attachments):
        body.pop("blocks", None)
        first = next(a for a in attachments if "blocks" in a)
        for attachment in attachments:
            attachment.pop("blocks", None)
        first["blocks"] = blocks
        body["attachments"] = [first]
    else:
        body["blocks"] = blocks


def _label(body: dict[str, Any], part: Part) -> dict[str, Any]:
    labelled = dict(body)
    labelled["text"] = f"({part.number}/{part.total}) {body.get('text', '')}"
    return labelled


def _chars(text: str) -> int:
    # Slack counts UTF-16 code units, as JavaScript does: an emoji may count twice.
    return len(text.encode("utf-16-le")) // 2
