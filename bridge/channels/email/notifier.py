"""Sending email over SMTP (aiosmtplib): a subject, a plain-text part and an HTML part.

``security``: ``starttls`` (port 587; the upgrade is required, never skipped), ``tls`` (implicit
TLS, port 465) or ``none``. SMTP replies decide: 4xx is tried again, 5xx is final (535: the
login was refused); a refused or dropped connection is tried again.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Final

import aiosmtplib

from bridge.channels.base import Message
from bridge.channels.compose import render_template
from bridge.channels.email.answers import classify_smtp_reply
from bridge.channels.email.config import EmailTarget, SmtpConfig
from bridge.channels.webhook import scrub
from bridge.classify import Outcome, Verdict, classify_exception
from bridge.payload import Payload
from bridge.render import Digest, Renderer

__all__ = ["EmailNotifier", "build_email", "tls_context"]

SUBJECT_LIMIT: Final = 250


class EmailNotifier:
    def __init__(self, target: EmailTarget, renderer: Renderer, timeout: float) -> None:
        self.target = target
        self._renderer = renderer
        self._timeout = timeout
        self._smtp: SmtpConfig = target.smtp
        self._tls = tls_context(target.smtp)

    def compose(
        self, payload: Payload, *, now: datetime, digest: Digest | None = None
    ) -> list[Message]:
        context = self._renderer.context(
            self.target, payload, payload["alerts"], now=now, digest=digest
        )
        subject = render_template(self._renderer, self.target, "email.subject.j2", context)
        subject = " ".join(subject.split())
        if len(subject) > SUBJECT_LIMIT:
            subject = subject[: SUBJECT_LIMIT - 1] + "…"
        body = {
            "subject": subject,
            "text": render_template(self._renderer, self.target, "email.txt.j2", context),
            "html": render_template(self._renderer, self.target, "email.html.j2", context),
            "date": format_datetime(now),
        }
        return [Message("email", body)]

    async def send(self, message: Message) -> Verdict:
        smtp = self._smtp
        email = build_email(self.target, message.body)
        password = smtp.password.reveal() if smtp.password is not None else None
        try:
            await aiosmtplib.send(
                email,
                hostname=smtp.host,
                port=smtp.port,
                username=smtp.username,
                password=password,
                use_tls=smtp.security == "tls",
                start_tls=smtp.security == "starttls",
                tls_context=self._tls,
                timeout=min(self._timeout, smtp.timeout_seconds),
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            verdict = _refused(exc.recipients)
        except aiosmtplib.SMTPResponseException as exc:
            verdict = classify_smtp_reply(exc.code, exc.message)
        except aiosmtplib.SMTPNotSupported:
            verdict = Verdict(
                Outcome.FAILED, "tls_error", f"{smtp.host} does not support {smtp.security}"
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            verdict = classify_exception(exc)
        else:
            return Verdict(Outcome.SENT, "ok")
        secrets = [password] if password else []
        return Verdict(
            verdict.outcome, verdict.reason, scrub(verdict.detail, secrets), verdict.retry_after
        )

    def preview(self, message: Message) -> str:
        email = build_email(self.target, message.body)
        lines = [f"{name}: {value}" for name, value in email.items()]
        for part in email.iter_parts():
            lines += ["", f"--- {part.get_content_type()} ---", str(part.get_content()).rstrip()]
        return "\n".join(lines)

    def destination(self) -> str:
        return f"{', '.join(self.target.to)} via {self._smtp.host}:{self._smtp.port}"


def build_email(target: EmailTarget, body: dict[str, Any]) -> EmailMessage:
    """The MIME message: text and HTML alternatives, UTF-8, with the rendered subject."""
    email = EmailMessage()
    email["Subject"] = body["subject"]
    email["From"] = target.from_address
    email["To"] = ", ".join(target.to)
    email["Date"] = body["date"]
    domain = target.from_address.rpartition("@")[2] or "sheepdog"
    email["Message-ID"] = make_msgid("sheepdog", domain=domain)
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(body["text"], charset="utf-8")
    email.add_alternative(body["html"], subtype="html", charset="utf-8")
    return email


def tls_context(smtp: SmtpConfig) -> ssl.SSLContext | None:
    """The TLS settings for ``smtp``: certificates checked against the system's CAs, or against
    ``ca_file``'s when given."""
    if smtp.security == "none":
        return None
    return ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)


def _refused(recipients: Sequence[Any]) -> Verdict:
    # Every recipient was refused; if any refusal is temporary, the whole message is retried.
    verdicts = [classify_smtp_reply(r.code, r.message) for r in recipients] or [
        classify_smtp_reply(550, "all recipients refused")
    ]
    for verdict in verdicts:
        if verdict.retryable:
            return verdict
    return verdicts[0]
