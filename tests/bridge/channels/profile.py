"""What the conformance kit needs to know about a channel beyond its registration: a profile.

Each channel's test module (``tests/bridge/channels/test_<name>.py``) defines ``PROFILE``; the kit
(``test_kit.py``) finds it by the channel's registered name, so a channel added to the registry
without a profile fails the kit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.channels.base import Message
from bridge.classify import Outcome

Action = tuple[str, str]


@dataclass(frozen=True)
class SizeLimit:
    """A limit the channel splits messages at: ``measure`` says how big a message is."""

    limit: int
    measure: Callable[[Message], int]
    part: Callable[[Message], tuple[int, int] | None]
    """The ``(number, total)`` a part is labelled with, None when it is not a part."""
    texts: Callable[[Message], list[str]]
    """Every text the message shows: what must carry the alert's text whole."""
    per_message: bool = True
    """The limit is on a message, so over it means several messages; else it is on a piece of
    one (a Slack section), which is cut into several pieces of the same message."""


@dataclass(frozen=True)
class Profile:
    target: Callable[[str], dict[str, Any]]
    """The config of a target of this channel delivering to ``url`` (webhooks) or the test
    peer (others)."""
    actions: Callable[[Message], list[Action]]
    """What the real service acts on in a message: mentions, links, colours..."""
    visible: Callable[[Message], str]
    """The message's text as a reader sees it."""
    url: Callable[[str, str], str] | None = None
    """Webhooks: the URL, at ``base``, holding ``secret`` where the real one holds its key."""
    success: tuple[int, bytes] = (200, b"")
    """Webhooks: the answer that means "sent"."""
    codes: list[tuple[int, bytes, Outcome, str]] = field(default_factory=list)
    """Webhooks: the documented answers (status, body) and what each must mean."""
    size: SizeLimit | None = None
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Other ways to configure its targets (extra keys: a format, a signing secret), each run
    through the markup and secret tests too. A value starting with ``SENTINEL`` is a secret
    that must never show."""


def profile_of(channel: str) -> Profile:
    module = importlib.import_module(f"tests.bridge.channels.test_{channel}")
    profile: Profile = module.PROFILE
    return profile
