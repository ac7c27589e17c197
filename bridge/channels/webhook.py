"""What webhook channels share: one JSON POST per message to a URL that holds the key.

The URL is a secret: it is revealed only to make the request, shown as its host only, and
scrubbed (whole, and each piece that may be the key) from whatever detail comes back. A channel
that signs its requests (a timestamp and an HMAC in the URL or the body) is a
:class:`SignedWebhookNotifier`: the signature is made in :meth:`WebhookNotifier.request`, which
runs at every attempt, a retry an hour later included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final
from urllib.parse import parse_qsl, urlsplit

import aiohttp

from bridge.channels.base import Message, WebhookTargetConfig
from bridge.classify import Verdict, classify_exception
from bridge.render import Renderer
from sheepdog.core.secret import Secret

__all__ = [
    "Classifier",
    "SignedWebhookNotifier",
    "WebhookNotifier",
    "json_bytes",
    "post_json",
    "redact_url",
    "scrub",
    "url_host",
    "url_secrets",
]

REDACTED: Final = "<redacted>"

Classifier = Callable[[int, bytes, Mapping[str, str]], Verdict]
"""Decides on an HTTP answer: status, body, headers."""


def url_host(url: str) -> str:
    """The host (and port) of ``url``: all of it that is safe to show."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port is not None else host


def redact_url(url: str) -> str:
    """``https://host/<redacted>``: the scheme and host only, as the path or query hold the key."""
    return f"{urlsplit(url).scheme}://{url_host(url)}/{REDACTED}"


def url_secrets(url: str) -> list[str]:
    """The pieces of ``url`` that may be a key: the URL itself, path segments, query values."""
    parts = urlsplit(url)
    pieces = [url, parts.path, parts.query]
    pieces += [segment for segment in parts.path.split("/") if len(segment) >= 6]
    pieces += [value for _, value in parse_qsl(parts.query) if value]
    if parts.password:
        pieces.append(parts.password)
    # Longest first, so that a URL is replaced whole before its parts are.
    return sorted({piece for piece in pieces if piece}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of every secret replaced by ``<redacted>``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def json_bytes(body: Mapping[str, Any]) -> bytes:
    """``body`` as it goes on the wire: what a channel's size limit is measured on."""
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    body: Mapping[str, Any],
    classify: Classifier,
    *,
    timeout: float,  # noqa: ASYNC109 - a per-request timeout, handed to aiohttp
    secrets: Iterable[str] = (),
) -> Verdict:
    """POST ``body`` as JSON and ``classify`` what comes back (or what went wrong on the way).

    Never raises for a delivery problem, and the verdict's detail holds neither the URL nor
    any of ``secrets``.
    """
    data = json_bytes(body)
    try:
        async with session.post(
            url,
            data=data,
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            answer = await response.read()
            verdict = classify(response.status, answer, response.headers)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        verdict = classify_exception(exc)
    return scrubbed(verdict, [*url_secrets(url), *secrets])


def scrubbed(verdict: Verdict, secrets: list[str]) -> Verdict:
    """``verdict`` with no secret left in its detail."""
    detail = scrub(verdict.detail, secrets)
    if detail == verdict.detail:
        return verdict
    return Verdict(verdict.outcome, verdict.reason, detail, verdict.retry_after)


class WebhookNotifier:
    """A webhook channel's notifier, but for ``compose`` and ``classify``: sends each message as
    one JSON POST, previews it as JSON and names its destination by host."""

    target: WebhookTargetConfig

    def __init__(
        self,
        target: WebhookTargetConfig,
        renderer: Renderer,
        session: aiohttp.ClientSession | None,
        timeout: float,
    ) -> None:
        self.target = target
        self._renderer = renderer
        self._session = session
        self._timeout = timeout

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> Verdict:
        """What the channel's answer means."""
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """Everything that must be scrubbed from what comes back: the URL's pieces, and a
        channel's signing secret."""
        return url_secrets(self.target.url.reveal())

    def request(self, message: Message) -> tuple[str, Mapping[str, Any]]:
        """The URL and body of one attempt at sending ``message``; computed at every attempt,
        so a signature made here is always fresh."""
        return self.target.url.reveal(), message.body

    async def send(self, message: Message) -> Verdict:
        if self._session is None:
            raise RuntimeError("this notifier was made for previews only: it has no session")
        url, body = self.request(message)
        return await post_json(
            self._session,
            url,
            body,
            self.classify,
            timeout=self._timeout,
            secrets=self.secrets(),
        )

    def preview(self, message: Message) -> str:
        return json.dumps(message.body, ensure_ascii=False, indent=2)

    def destination(self) -> str:
        return redact_url(self.target.url.reveal())


class SignedWebhookNotifier(WebhookNotifier):
    """A webhook that signs each request with the target's optional secret and the time it is
    sent (DingTalk's 加签, Feishu's 签名校验): the services refuse a timestamp more than an hour
    off their clock, so the signature is made at every attempt, never when the message is
    queued."""

    wall_clock: Callable[[], float] = staticmethod(time.time)
    """Seconds since the epoch, for the signature: the service checks it against its own clock."""
    signed_note: ClassVar[str] = ", signed when sent"
    """What :meth:`destination` adds when the target has a secret."""

    def signing_secret(self) -> Secret | None:
        """The target's secret, None for a target that does not sign."""
        raise NotImplementedError

    def signed(
        self, url: str, body: Mapping[str, Any], secret: str, now: float
    ) -> tuple[str, Mapping[str, Any]]:
        """The URL and body of a request signed with ``secret`` at ``now``."""
        raise NotImplementedError

    def secrets(self) -> list[str]:
        secret = self.signing_secret()
        return [*super().secrets(), *([secret.reveal()] if secret is not None else [])]

    def request(self, message: Message) -> tuple[str, Mapping[str, Any]]:
        url = self.target.url.reveal()
        secret = self.signing_secret()
        if secret is None:
            return url, message.body
        return self.signed(url, message.body, secret.reveal(), self.wall_clock())

    def destination(self) -> str:
        signed = self.signed_note if self.signing_secret() is not None else ""
        return redact_url(self.target.url.reveal()) + signed
