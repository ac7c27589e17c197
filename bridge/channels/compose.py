"""Composing messages: rendering a target's templates and cutting what is too big into parts.

Shared by every channel's notifier: a template override that fails falls back to the built-in
one (a broken template must not cost an alert), and a message over the channel's limit is cut
at alert boundaries, then at line boundaries, into numbered parts that each fit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

from bridge.channels.base import TargetConfig
from bridge.payload import Payload
from bridge.render import Digest, Part, Renderer, TemplateFailure, sort_alerts

__all__ = [
    "PLACEHOLDER_PART",
    "compose_parts",
    "mentions_for",
    "part_renderer",
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


def render_template(
    renderer: Renderer, target: TargetConfig, name: str, context: Mapping[str, Any]
) -> str:
    """Render ``name`` for ``target``; see :func:`render_parsed`."""
    return render_parsed(renderer, target, name, context, _unchanged)


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


def as_text(text: str) -> str:
    """The rendered text, stripped: for templates whose output is the message itself."""
    return text.strip()


def _unchanged(text: str) -> str:
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
    if total == 1 and plan[0][1] is not None:
        return plan[0][1]  # cut within one message (Slack's sections): no part to number
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


def mentions_for(
    alerts: Sequence[Alert], userids: Iterable[str] = (), mobiles: Iterable[str] = ()
) -> dict[str, Any]:
    """Who to mention: the configured ``userids`` and ``mobiles`` plus each firing alert's
    ``mention`` annotation or label (user ids, mobile numbers, ``@all``). Nobody when nothing
    fires: a resolution is good news, not a page."""
    firing = [alert for alert in alerts if alert["status"] == "firing"]
    if not firing:
        return {"userids": [], "mobiles": [], "all": False}
    wanted_ids = dict.fromkeys(userids)
    wanted_mobiles = dict.fromkeys(mobiles)
    everyone = False
    for alert in firing:
        text = alert.get("annotations", {}).get("mention") or alert["labels"].get("mention", "")
        for token in _MENTION_SPLIT.split(str(text)):
            if not token:
                continue
            if token.lower() in _EVERYONE:
                everyone = True
            elif _MOBILE.match(token):
                wanted_mobiles[token] = None
            else:
                wanted_ids[token.lstrip("@")] = None
    return {"userids": list(wanted_ids), "mobiles": list(wanted_mobiles), "all": everyone}


def part_renderer(
    renderer: Renderer,
    target: TargetConfig,
    template: str,
    payload: Payload,
    parse: Callable[[str], T],
    *,
    now: datetime,
    digest: Digest | None,
    mentions: Mapping[str, Any],
) -> Callable[[Sequence[Alert], Part | None], T]:
    """What :func:`compose_parts` calls to render one part: ``template`` for ``alerts`` (the
    part's), parsed into the channel's message body by ``parse``."""

    def render(alerts: Sequence[Alert], part: Part | None) -> T:
        context = renderer.context(
            target, payload, alerts, now=now, part=part, digest=digest, mentions=mentions
        )
        return render_parsed(renderer, target, template, context, parse)

    return render
