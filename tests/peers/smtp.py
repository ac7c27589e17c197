"""A local SMTP server (aiosmtpd) that keeps what it receives, parsed with ``email``.

Optional AUTH (PLAIN/LOGIN against one username and password; either can be left out) and TLS:
``starttls`` (the upgrade is required before MAIL) or ``tls`` (implicit, as on port 465), with a
certificate for 127.0.0.1 issued by a throwaway CA (``trustme``) whose PEM file is
:attr:`SmtpServer.ca_file`. Replies can be scripted (``451`` try later, ``550`` rejected) to test
how failures are handled.

``stop()`` then ``start()`` again brings the server back on the same port with the same
certificate, as a mail server that was down comes back; ``password`` can be changed at any time.
"""

from __future__ import annotations

import email
import email.policy
import gc
import ssl
import warnings
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.ports import free_port

__all__ = ["ReceivedMail", "SmtpServer"]


@dataclass
class ReceivedMail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    raw: bytes

    def part(self, content_type: str) -> str:
        for part in self.message.walk():
            if part.get_content_type() == content_type:
                return str(part.get_content())
        raise KeyError(content_type)


@dataclass
class SmtpServer:
    workdir: Path
    username: str | None = None
    password: str | None = None
    tls: Literal["starttls", "tls"] | None = None
    # AUTH mechanisms not to offer (aiosmtpd offers LOGIN and PLAIN), e.g. ("LOGIN",)
    exclude_auth: tuple[str, ...] = ()
    received: list[ReceivedMail] = field(default_factory=list)
    auth_attempts: list[tuple[str, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._script: deque[str] = deque()
        self._controller: Controller | None = None
        self._tls_context: ssl.SSLContext | None = None
        self.port = 0
        self.ca_file: Path | None = None

    def smtp_section(self) -> dict[str, Any]:
        """The ``smtp:`` of a sheepdog email target that reaches this server: its address and
        security, and its login and CA certificate where it has them (call after :meth:`start`)."""
        section: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "security": self.tls or "none",
        }
        if self.username is not None:
            section.update(username=self.username, password=self.password)
        if self.ca_file is not None:
            section["ca_file"] = str(self.ca_file)
        return section

    def script(self, *replies: str) -> None:
        """Answer the next messages' DATA with these replies (``"451 4.3.0 Try later"``)."""
        self._script.extend(replies)

    def start(self) -> SmtpServer:
        """Start serving; after a :meth:`stop`, on the same port with the same certificate."""
        # aiosmtpd probes its own port when it starts, so it cannot be given port 0.
        self.port = self.port or free_port()
        kwargs: dict[str, Any] = {}
        if self.tls is not None:
            kwargs_key = "tls_context" if self.tls == "starttls" else "ssl_context"
            kwargs[kwargs_key] = self._server_tls()
            if self.tls == "starttls":
                kwargs["require_starttls"] = True
        if self.username is not None:
            kwargs["authenticator"] = self._authenticate
            # aiosmtpd enforces "AUTH before MAIL" only over STARTTLS without a warning; with
            # implicit TLS or none, AUTH is offered, and checked whenever a client logs in.
            kwargs["auth_required"] = self.tls == "starttls"
            kwargs["auth_require_tls"] = self.tls == "starttls"
            kwargs["auth_exclude_mechanism"] = list(self.exclude_auth)
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, **kwargs
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
            # aiosmtpd's loop may stop with server-side connections still open (its own
            # readiness probe, a STARTTLS session); collect them now, quietly, rather than
            # have their ResourceWarnings surface in whatever test runs next.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()

    def _server_tls(self) -> ssl.SSLContext:
        if self._tls_context is not None:
            return self._tls_context
        import trustme

        ca = trustme.CA()
        certificate = ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        self.ca_file = self.workdir / "smtp-test-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self._tls_context = context
        return context

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.username
            and auth_data.password.decode() == self.password
        )
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?"
        self.auth_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False)

    def next_reply(self) -> str | None:
        return self._script.popleft() if self._script else None


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.server.next_reply()
        if reply is not None:
            return reply
        raw = bytes(envelope.original_content or envelope.content)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.server.received.append(
            ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message, raw)
        )
        return "250 Message accepted for delivery"
