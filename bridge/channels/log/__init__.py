"""Standard output: the ``log`` channel, what a fresh install does with alerts before any
channel is configured, and a way to see what the templates make of real alerts.

- :mod:`.config`: a target's keys (none of its own; no rate limit).
- :mod:`.notifier`: one block of text per notification.
- ``templates/log.txt.j2``: the built-in text.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bridge.channels.base import Channel, Message
from bridge.channels.log.config import LogTarget

if TYPE_CHECKING:
    import aiohttp

    from bridge.channels.base import Notifier
    from bridge.render import Renderer

__all__ = ["CHANNEL", "Log"]


class Log(Channel):
    name = "log"
    config = LogTarget
    templates = ("log.txt.j2",)
    template_dir = Path(__file__).parent / "templates"

    def notifier(
        self,
        target: LogTarget,
        renderer: Renderer,
        session: aiohttp.ClientSession | None,
        timeout: float,
    ) -> Notifier:
        from bridge.channels.log.notifier import LogNotifier

        return LogNotifier(target, renderer)

    def destination_key(self, target: Any) -> str:
        return f"{self.name}:stdout"

    def describe_destination(self, target: Any) -> str:
        return "stdout"

    def describe_message(self, message: Message) -> str:
        return "log line"


CHANNEL: Final = Log()
