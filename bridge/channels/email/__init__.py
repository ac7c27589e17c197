"""Email over SMTP: everything about the ``email`` channel.

- :mod:`.config`: a target's keys (``smtp``, ``from``, ``to``, ``rate_per_minute`` 60).
- :mod:`.answers`: what SMTP replies mean.
- :mod:`.notifier`: the subject, text and HTML parts, and sending with aiosmtplib.
- ``templates/email.*.j2``: the built-in subject and bodies (HTML autoescaped).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import jinja2

from bridge.channels.base import Channel
from bridge.channels.email import answers
from bridge.channels.email.config import EmailTarget

if TYPE_CHECKING:
    import aiohttp

    from bridge.channels.base import Notifier
    from bridge.render import Renderer

__all__ = ["CHANNEL", "Email"]


class Email(Channel):
    name = "email"
    config = EmailTarget
    templates = ("email.subject.j2", "email.txt.j2", "email.html.j2")
    template_dir = Path(__file__).parent / "templates"
    reasons = answers.REASONS

    def jinja_options(self) -> dict[str, Any]:
        return {
            "autoescape": jinja2.select_autoescape(
                enabled_extensions=("html.j2", "html"), default_for_string=False
            )
        }

    def notifier(
        self,
        target: EmailTarget,
        renderer: Renderer,
        session: aiohttp.ClientSession | None,
        timeout: float,
    ) -> Notifier:
        from bridge.channels.email.notifier import EmailNotifier

        return EmailNotifier(target, renderer, timeout)

    def destination_key(self, target: EmailTarget) -> str:
        # The same recipients through the same relay are one destination.
        smtp = target.smtp
        identity = "\n".join((smtp.host, str(smtp.port), target.from_address, *sorted(target.to)))
        return f"{self.name}:{hashlib.sha256(identity.encode('utf-8')).hexdigest()[:32]}"

    def describe_destination(self, target: EmailTarget) -> str:
        return f"{', '.join(target.to)} via {target.smtp.host}:{target.smtp.port}"

    def describe_message(self, message: Any) -> str:
        return "email"


CHANNEL: Final = Email()
