"""What a channel is: the shape every package in ``bridge/channels/`` fills in.

A channel (``wechat``, ``dingtalk``, ``feishu``, ``slack``, ``email``, ``log``) holds everything
about one kind of destination: its config model (and so its defaults), its built-in templates and
their escaping, how its answers are classified, its notifier, how ``sheepdog render`` and
``check-config`` describe it, its rate and size limits, and the key of the destination a target
posts to. The
rest of the bridge knows channels only through :class:`Channel` and the registry
(:mod:`bridge.channels.registry`).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from bridge.classify import Verdict
from sheepdog.core.config import ConfigModel, NonNegativeNumber, SecretUrl, Text

if TYPE_CHECKING:
    import aiohttp

    from bridge.payload import Payload
    from bridge.render import Digest, Renderer

__all__ = [
    "Channel",
    "Limit",
    "Markdown",
    "MarkdownSubset",
    "Message",
    "Notifier",
    "TargetConfig",
    "WebhookTargetConfig",
    "hashed_key",
]


class TargetConfig(ConfigModel):
    """What every target has, whatever its channel. ``name`` is its key in ``bridge.targets``.

    A channel's model narrows ``type`` to its own name and gives ``rate_per_minute`` its
    default (0: no limit).
    """

    name: str
    type: str
    rate_per_minute: NonNegativeNumber
    template: Text | None = None
    """A prefix: ``<template><file name>`` in ``templates_dir`` overrides the built-in file."""


class WebhookTargetConfig(TargetConfig):
    """A target that posts to a URL holding its key or token (so the URL is a secret)."""

    url: SecretUrl


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` messages in any ``seconds``."""

    count: float
    seconds: float


@dataclass(frozen=True, slots=True)
class Message:
    """One request to the channel: a JSON body for webhooks, the rendered parts of an email,
    the text of a log line. ``kind`` is the channel's own word for it."""

    kind: str
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MarkdownSubset:
    """Which markdown a channel's client shows as formatting; the rest it shows as written.

    What a preview (the console's playground) may render of a message, and no more.
    """

    headings: bool = True
    bold: bool = True
    italic: bool = False
    links: bool = True
    images: bool = False
    inline_code: bool = True
    code_blocks: bool = False
    quotes: bool = True
    lists: bool = False
    tables: bool = False
    mentions: bool = False
    """``<@userid>``."""
    font_colors: Mapping[str, str] | None = None
    """``<font color="name">``: each name the client knows, with the colour it shows (#RRGGBB);
    None when the client has no coloured text."""
    hex_colors: bool = False
    """``<font color=#RRGGBB>`` with any colour."""


@dataclass(frozen=True, slots=True)
class Markdown:
    """The markdown one message holds, and the subset its client renders."""

    text: str
    subset: MarkdownSubset
    title: str | None = None
    """What the chat list shows of the message, where the channel has a separate title."""


class Notifier(Protocol):
    """One target's sender. ``compose`` renders (and splits); ``send`` delivers one message and
    never raises for a delivery problem: what happened is in the verdict."""

    @property
    def target(self) -> TargetConfig: ...

    def compose(
        self, payload: Payload, *, now: datetime, digest: Digest | None = None
    ) -> list[Message]: ...

    async def send(self, message: Message) -> Verdict: ...

    def preview(self, message: Message) -> str:
        """The message as ``sheepdog render`` prints it: what would be sent, minus secrets."""
        ...

    def destination(self) -> str:
        """Where messages go, fit for a log: never the key."""
        ...


class Channel(ABC):
    """One kind of destination. A package in ``bridge/channels/`` defines a subclass and one
    instance of it, which the registry lists."""

    name: ClassVar[str]
    """The ``type`` of its targets."""
    config: ClassVar[type[TargetConfig]]
    """Its targets' config model (with ``type: Literal[name]``)."""
    templates: ClassVar[tuple[str, ...]]
    """The template files it renders, in ``template_dir`` (overridable in ``templates_dir``)."""
    template_dir: ClassVar[Path]
    reasons: ClassVar[tuple[str, ...]] = ()
    """Failure reasons of its own, beyond :data:`bridge.classify.REASONS`: metric labels."""

    # Rendering -------------------------------------------------------------------------------

    def jinja_options(self) -> dict[str, Any]:
        """Options of its Jinja environment: escaping above all (``autoescape``, ``finalize``)."""
        return {"autoescape": False}

    def filters(self) -> Mapping[str, Callable[..., Any]]:
        """Filters of its own (or shared ones it replaces, such as ``severity_color``)."""
        return {}

    def check_rendered(self, template: str, text: str) -> None:
        """Raise ``ValueError`` if ``text``, what ``template`` made of the sample payload, is not
        something this channel can send (a JSON template that is not JSON)."""
        return None

    @abstractmethod
    def notifier(
        self,
        target: Any,
        renderer: Renderer,
        session: aiohttp.ClientSession | None,
        timeout: float,
    ) -> Notifier:
        """The sender for ``target``; ``session`` is None where nothing is sent (render)."""

    # Delivery --------------------------------------------------------------------------------

    def destination_key(self, target: Any) -> str:
        """What the rate limit and FIFO order belong to: targets with the same key share them.

        By default each target is its own destination; webhook channels key by the URL (its
        digest: the key is kept, compared and stored, never the URL itself).
        """
        return f"{self.name}:target:{target.name}"

    def limits(self, target: Any) -> tuple[Limit, ...]:
        """How fast its destination takes messages; ``rate_per_minute`` 0 means no limit."""
        rate = float(target.rate_per_minute)
        return (Limit(rate, 60.0),) if rate > 0 else ()

    # Describing ------------------------------------------------------------------------------

    def describe_destination(self, target: Any) -> str:
        """For ``check-config``: where its messages go, never the key."""
        return self.name

    def describe_message(self, message: Message) -> str:
        """For ``sheepdog render``: what kind of message this is, and how near its limits."""
        return message.kind

    def markdown(self, message: Message) -> Markdown | None:
        """The markdown ``message`` holds, for a preview of how the client shows it; None for a
        message that is no markdown (JSON cards and blocks, email, text)."""
        return None


def hashed_key(channel: str, secret: str) -> str:
    """A destination key for a secret (a robot URL): equal for equal secrets, and safe to log,
    store or compare, since it does not give the secret away."""
    digest = hashlib.sha256(secret.encode("utf-8")).hexdigest()[:32]
    return f"{channel}:{digest}"
