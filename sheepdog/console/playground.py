"""The Playground: what a target would be sent for the built-in sample or a pasted payload.

The rendering is ``sheepdog render``'s (:func:`bridge.cli.render_payload`) with the running
service's templates; a pasted payload is read as ``POST /alerts/{target}`` reads it, so a bad
one shows the answer Alertmanager would get. For markdown channels a preview shows the message
as the client would (:mod:`sheepdog.console.markdown`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from markupsafe import Markup

from bridge.cli import Rendering, render_payload
from bridge.payload import PayloadError, parse_json, validate_payload
from bridge.render import TemplateFailure
from bridge.sample import SAMPLE_PAYLOAD
from sheepdog.console.markdown import to_html
from sheepdog.console.site import field, page, parts

__all__ = ["playground_page", "render_pasted"]

SAMPLE_TEXT: Final = json.dumps(SAMPLE_PAYLOAD, ensure_ascii=False, indent=2)


@dataclass(frozen=True, slots=True)
class Answer:
    """How ``POST /alerts/{target}`` would answer the payload, where it would refuse it."""

    status: int
    body: str


def _answer(status: int, message: str) -> Answer:
    return Answer(status, json.dumps({"error": message}, ensure_ascii=False))


def _previews(rendering: Rendering) -> list[Markup | None]:
    return [
        to_html(message.markdown.text, message.markdown.subset) if message.markdown else None
        for message in rendering.messages
    ]


async def _show(
    request: web.Request, target_name: str | None, source: str, pasted: str
) -> web.Response:
    service = parts(request)
    config = service.bridge.config
    targets = sorted(config.targets)
    target_name = target_name if target_name is not None else (targets[0] if targets else None)
    answer: Answer | None = None
    failure: str | None = None
    rendering: Rendering | None = None
    target = config.targets.get(target_name or "")
    if target is None:
        known = ", ".join(targets)
        answer = _answer(404, f"unknown target {target_name!r} (configured: {known})")
    elif source == "pasted" and len(pasted.encode("utf-8")) > config.max_body_bytes:
        limit = config.max_body_bytes
        answer = _answer(413, f"body over the {limit}-byte limit (bridge.max_body_bytes)")
    else:
        try:
            document = parse_json(pasted) if source == "pasted" else json.loads(SAMPLE_TEXT)
            payload = validate_payload(document)
        except PayloadError as exc:
            answer = _answer(400, str(exc))
        else:
            try:
                rendering = render_payload(config, service.bridge.renderer, target, payload)
            except TemplateFailure as exc:
                failure = str(exc)
    return page(
        request,
        "playground.html.j2",
        active="playground",
        targets=targets,
        selected=target_name,
        source=source,
        pasted=pasted if source == "pasted" else SAMPLE_TEXT,
        answer=answer,
        failure=failure,
        rendering=rendering,
        previews=_previews(rendering) if rendering is not None else [],
    )


async def playground_page(request: web.Request) -> web.Response:
    """The built-in sample, rendered for ``?target=`` (default: the first target)."""
    return await _show(request, request.query.get("target"), "sample", "")


async def render_pasted(request: web.Request) -> web.Response:
    source = "pasted" if field(request, "source") == "pasted" else "sample"
    return await _show(request, field(request, "target"), source, field(request, "payload") or "")
