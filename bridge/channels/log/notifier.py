"""Printing rendered messages to standard output, one block each.

What a fresh install does with alerts before any channel is configured, and a way to see what
the templates make of real alerts.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TextIO

from bridge.channels.base import Message
from bridge.channels.compose import render_template
from bridge.channels.log.config import LogTarget
from bridge.classify import Outcome, Verdict
from bridge.payload import Payload
from bridge.render import Digest, Renderer

__all__ = ["LogNotifier"]


class LogNotifier:
    def __init__(self, target: LogTarget, renderer: Renderer, stream: TextIO | None = None) -> None:
        self.target = target
        self._renderer = renderer
        self._stream = stream

    def compose(
        self, payload: Payload, *, now: datetime, digest: Digest | None = None
    ) -> list[Message]:
        context = self._renderer.context(
            self.target, payload, payload["alerts"], now=now, digest=digest
        )
        text = render_template(self._renderer, self.target, "log.txt.j2", context)
        return [Message("log", {"text": text.strip()})]

    async def send(self, message: Message) -> Verdict:
        stream = self._stream or sys.stdout
        try:
            stream.write(message.body["text"] + "\n")
            stream.flush()
        except OSError as exc:
            return Verdict(Outcome.RETRY, "connection_error", f"stdout: {exc.strerror}")
        return Verdict(Outcome.SENT, "ok")

    def preview(self, message: Message) -> str:
        return str(message.body["text"])

    def destination(self) -> str:
        return "stdout"
