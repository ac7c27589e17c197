"""What every notifier is and shares: the protocol, the message, splitting into parts."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Final, Protocol, TypeVar

import aiohttp

from bridge.classify import Verdict
from bridge.notifiers.util import post_json, redact_url
from bridge.payload import Payload
from bridge.render import Digest, Part, Renderer, TemplateFailure, sort_alerts
from sheepdog.config import TargetConfig

__all__ = [
    "PLACEHOLDER_PART",
    "Message",
    "Notifier",
    "WebhookNotifier",
    "compose_parts",
    "mentions_for",
    "render_parsed",
    "render_template",
]

log = logging.getLogger("sheepdog.bridge.render")

M = TypeVar("M")
T = TypeVar("T")
Alert = Mapping[str, Any]

PLACEHOLDER_PART: Final = Part(9999, 9999)
"""Rendered while deciding where to split, so that the real part numbers always fit."""

_MENTION_SPLIT: Final = re.compile(r"[,;\s]+")
_MOBILE: Final = re.compile(r"^\+?\d{5,20}$")
_EVERYONE: Final = frozenset({"@all", "all", "@here", "@channel", "here", "channel"})


@dataclass(frozen=True, slots=True)
class Message:
    """One request to the channel: a JSON body for WeChat and Slack, the rendered parts of
    an email, the text of a log line."""

    kind: str
    body: dict[str, Any] = field(default_factory=dict)


class Notifier(Protocol):
    """One integration. ``compose`` renders (and splits); ``send`` delivers one message and
    never raises for a delivery problem: what happened is in the verdict."""

    target: TargetConfig

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


class WebhookNotifier:
    """What the WeChat and Slack notifiers share: one JSON POST per message to a URL that holds
    the key, previewed as JSON and shown with the key redacted."""

    channel: ClassVar[str]

    def __init__(
        self,
        target: TargetConfig,
        renderer: Renderer,
        session: aiohttp.ClientSession | None,
        timeout: float,
    ) -> None:
        assert target.url is not None
        self.target = target
        self._renderer = renderer
        self._session = session
        self._timeout = timeout

    async def send(self, message: Message) -> Verdict:
        assert self._session is not None and self.target.url is not None
        return await post_json(
            self._session,
            self.channel,
            self.target.url.reveal(),
            message.body,
            timeout=self._timeout,
        )

    def preview(self, message: Message) -> str:
        return json.dumps(message.body, ensure_ascii=False, indent=2)

    def destination(self) -> str:
        assert self.target.url is not None
        return redact_url(self.target.url.reveal())


def render_template(
    renderer: Renderer, target: TargetConfig, name: str, context: Mapping[str, Any]
) -> str:
    """Render ``name`` for ``target``; see :func:`render_parsed`."""
    return render_parsed(renderer, target, name, context, _as_text)


def render_parsed(
    renderer: Renderer,
    target: TargetConfig,
    name: str,
    context: Mapping[str, Any],
    parse: Callable[[str], T],
) -> T:
    """Render and ``parse``, falling back to the built-in template if an override fails on
    this payload (in rendering or parsing): a broken template must not cost an alert."""
    try:
        return parse(renderer.render(target, name, context))
    except TemplateFailure as exc:
        override = renderer.template(target, name).filename
        if override == renderer.template(target, name, builtin=True).filename:
            raise
        log.error(
            "template failed, the built-in one is used instead",
            extra={"target": target.name, "template": override, "reason": str(exc)},
        )
        return parse(renderer.render(target, name, context, builtin=True))


def _as_text(text: str) -> str:
    return text


def compose_parts(
    alerts: Sequence[Alert],
    render: Callable[[Sequence[Alert], Part | None], M],
    fits: Callable[[M], bool],
    split: Callable[[M], list[M]],
    label: Callable[[M, Part], M],
) -> list[M]:
    """Messages for ``alerts``: one if it fits, else parts numbered ``(n/total)``.

    Parts are cut at alert boundaries (the template renders each part's alerts, with ``part``
    set); an alert too big on its own is rendered alone and ``split`` at line boundaries, each
    piece then ``label``-led. Every part fits.
    """
    ordered = sort_alerts(alerts)
    whole = render(ordered, None)
    if fits(whole):
        return [whole]
    plan: list[tuple[Sequence[Alert], list[M] | None]] = []
    start = 0
    while start < len(ordered):
        end = _largest_fitting_end(
            ordered, start, lambda chunk: fits(render(chunk, PLACEHOLDER_PART))
        )
        if end > start:
            plan.append((ordered[start:end], None))
            start = end
        else:  # one alert alone is too big: cut its text
            alone = ordered[start : start + 1]
            plan.append((alone, split(render(alone, None))))
            start += 1
    total = sum(1 if pieces is None else len(pieces) for _, pieces in plan)
    messages: list[M] = []
    for chunk, pieces in plan:
        if pieces is None:
            messages.append(render(chunk, Part(len(messages) + 1, total)))
        else:
            messages.extend(label(piece, Part(len(messages) + 1, total)) for piece in pieces)
    return messages


def _largest_fitting_end(
    alerts: Sequence[Alert], start: int, fits: Callable[[Sequence[Alert]], bool]
) -> int:
    """The largest ``end`` such that ``alerts[start:end]`` fits (``start`` if none does).

    Gallops (1, 2, 4, … alerts) then bisects, so a long list costs O(n log n) rendering.
    """
    count = len(alerts)
    if not fits(alerts[start : start + 1]):
        return start
    good, bad = start + 1, None  # alerts[start:good] fits; alerts[start:bad] does not
    size = 2
    while bad is None and start + size <= count:
        if fits(alerts[start : start + size]):
            good, size = start + size, size * 2
        else:
            bad = start + size
    if bad is None:
        if good == count or fits(alerts[start:count]):
            return count
        bad = count
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(alerts[start:middle]):
            good = middle
        else:
            bad = middle
    return good


def mentions_for(target: TargetConfig, alerts: Sequence[Alert]) -> dict[str, Any]:
    """Who to mention: the target's configured people plus each firing alert's ``mention``
    annotation or label (user ids, mobile numbers, ``@all``). Nobody when nothing fires:
    a resolution is good news, not a page."""
    firing = [alert for alert in alerts if alert["status"] == "firing"]
    if not firing:
        return {"userids": [], "mobiles": [], "all": False}
    userids = dict.fromkeys(target.mention_userids)
    mobiles = dict.fromkeys(target.mention_mobiles)
    everyone = False
    for alert in firing:
        text = alert.get("annotations", {}).get("mention") or alert["labels"].get("mention", "")
        for token in _MENTION_SPLIT.split(str(text)):
            if not token:
                continue
            if token.lower() in _EVERYONE:
                everyone = True
            elif _MOBILE.match(token):
                mobiles[token] = None
            else:
                userids[token.lstrip("@")] = None
    return {"userids": list(userids), "mobiles": list(mobiles), "all": everyone}
