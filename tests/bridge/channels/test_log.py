"""The log channel: its profile for the conformance kit (stdout acts on nothing)."""

from __future__ import annotations

from tests.bridge.channels.profile import Profile

PROFILE = Profile(
    target=lambda url: {"type": "log"},
    actions=lambda message: [],
    visible=lambda message: str(message.body["text"]),
)
