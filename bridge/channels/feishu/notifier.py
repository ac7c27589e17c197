"""Sending to a Feishu (飞书) or Lark custom bot: an interactive card to a webhook holding its id.

``POST https://open.feishu.cn/open-apis/bot/v2/hook/<id>`` (Lark: ``open.larksuite.com``) with
``{"msg_type": "interactive", "card": {…}}``, the request body at most 20 KB (taken here as
20,000 bytes, the stricter reading); a card over it is cut at alert boundaries into numbered
parts, and an alert too big alone has its long texts cut at line boundaries and its elements
shared out over several cards. Mentions (``<at id=…></at>``) go in the first card only, before
its closing note.

With a secret, every request is signed when it is sent (a retry an hour later too): the body gets
``"timestamp": "<s>"`` and ``"sign": base64(HMAC-SHA256(key = "<s>\\n<secret>", msg = ""))``;
Feishu refuses a timestamp more than an hour from its clock (code 19021).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from bridge.channels.base import Message
from bridge.channels.compose import compose_parts, mentions_for, part_renderer
from bridge.channels.feishu import answers
from bridge.channels.feishu.config import USER_ID, FeishuTarget
from bridge.channels.text import split_lines_to_fit
from bridge.channels.webhook import SignedWebhookNotifier, json_bytes
from bridge.classify import Verdict
from bridge.payload import Payload
from bridge.render import Digest, Part, TemplateFailure
from sheepdog.core.secret import Secret

__all__ = ["BODY_LIMIT", "TEMPLATE", "FeishuNotifier", "parse_card", "sign"]

BODY_LIMIT: Final = 20_000
"""Bytes of the whole JSON body, signature included."""
TEMPLATE: Final = "feishu.json.j2"
# What the signature adds to a body: the largest timestamp and a base64 SHA-256.
_SIGNATURE_FIELDS: Final = {"timestamp": "9999999999", "sign": "x" * 44}
# An incomplete character reference at the end of a cut piece of lark_md text.
_BROKEN_REFERENCE: Final = re.compile(r"&#?[0-9A-Za-z]{0,8}$")
_REFERENCE_ROOM: Final = 12


def sign(secret: str, timestamp: int) -> str:
    """The signature of a request made at ``timestamp`` (seconds): the HMAC of an empty message,
    keyed with ``"<timestamp>\\n<secret>"``."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


def parse_card(text: str) -> dict[str, Any]:
    """The message the card template produced, or :class:`TemplateFailure`."""
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise TemplateFailure(f"{TEMPLATE} did not produce valid JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("card"), dict):
        raise TemplateFailure(f'{TEMPLATE} must produce a JSON object with a "card" object')
    if not isinstance(_elements(body), list):
        raise TemplateFailure(f'{TEMPLATE}: the card needs a list of "elements"')
    return body


class FeishuNotifier(SignedWebhookNotifier):
    target: FeishuTarget

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> Verdict:
        return answers.classify(status, body, headers)

    def signing_secret(self) -> Secret | None:
        return self.target.secret

    def signed(
        self, url: str, body: Mapping[str, Any], secret: str, now: float
    ) -> tuple[str, Mapping[str, Any]]:
        timestamp = int(now)
        return url, {"timestamp": str(timestamp), "sign": sign(secret, timestamp), **body}

    def preview(self, message: Message) -> str:
        body = message.body
        if self.target.secret is not None:
            body = {"timestamp": "<when sent>", "sign": "<computed when sent>", **body}
        return json.dumps(body, ensure_ascii=False, indent=2)

    def compose(
        self, payload: Payload, *, now: datetime, digest: Digest | None = None
    ) -> list[Message]:
        mentions = self._mentions(payload)
        render = part_renderer(
            self._renderer,
            self.target,
            TEMPLATE,
            payload,
            parse_card,
            now=now,
            digest=digest,
            mentions={**mentions, "mobiles": []},
        )
        mention = _mention_element(mentions)
        limit = BODY_LIMIT - (self._signature_size() if self.target.secret else 0)

        def size(body: dict[str, Any]) -> int:
            return len(json_bytes(_with_element(body, mention)))

        bodies = compose_parts(
            payload["alerts"],
            render,
            fits=lambda body: size(body) <= limit,
            split=lambda body: _split_card(body, lambda piece: size(piece) <= limit),
            label=_label,
        )
        bodies[0] = _with_element(bodies[0], mention)
        return [Message("interactive", body) for body in bodies]

    def _mentions(self, payload: Payload) -> dict[str, Any]:
        configured = self.target.mentions
        wanted = mentions_for(payload["alerts"], configured.user_ids)
        firing = any(alert["status"] == "firing" for alert in payload["alerts"])
        # A custom bot mentions by open_id or user_id only: a mobile number cannot be one, and
        # anything else from an annotation is dropped rather than let into the <at> tag.
        userids = [user for user in wanted["userids"] if USER_ID.match(user)]
        return {"userids": userids, "all": wanted["all"] or (configured.all and firing)}

    def _signature_size(self) -> int:
        return len(json_bytes(_SIGNATURE_FIELDS)) - 2 + len(", ")


def _elements(body: dict[str, Any]) -> Any:
    """The card's element list: ``card.elements`` (JSON 1.0) or ``card.body.elements`` (2.0)."""
    card = body["card"]
    holder = card.get("body") if isinstance(card.get("body"), dict) else card
    return holder.get("elements")


def _set_elements(body: dict[str, Any], elements: list[Any]) -> None:
    card = body["card"]
    holder = card["body"] if isinstance(card.get("body"), dict) else card
    holder["elements"] = elements


def _mention_element(mentions: Mapping[str, Any]) -> dict[str, Any] | None:
    tags = [f"<at id={user}></at>" for user in mentions["userids"]]
    tags += ["<at id=all></at>"] if mentions["all"] else []
    if not tags:
        return None
    return {"tag": "div", "text": {"tag": "lark_md", "content": " ".join(tags)}}


def _with_element(body: dict[str, Any], element: dict[str, Any] | None) -> dict[str, Any]:
    """``body`` with ``element`` added last, but before the card's closing note if it has one."""
    if element is None:
        return body
    changed = copy.deepcopy(body)
    elements = list(_elements(changed))
    at = len(elements) - 1 if elements and _is_note(elements[-1]) else len(elements)
    _set_elements(changed, [*elements[:at], element, *elements[at:]])
    return changed


def _is_note(element: Any) -> bool:
    return isinstance(element, dict) and element.get("tag") == "note"


def _label(body: dict[str, Any], part: Part) -> dict[str, Any]:
    """Part ``part`` of a card cut inside one alert: numbered in its header."""
    labelled = copy.deepcopy(body)
    title = labelled["card"].get("header", {}).get("title")
    number = f"({part.number}/{part.total})"
    if isinstance(title, dict):
        title["content"] = f"{title.get('content', '')} {number}"
    else:
        _set_elements(labelled, [_text_element(number), *_elements(labelled)])
    return labelled


def _text_element(content: str) -> dict[str, Any]:
    return {"tag": "div", "text": {"tag": "lark_md", "content": content}}


def _split_card(body: dict[str, Any], fits: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """A card too big to send as several that fit: long texts cut at line boundaries into
    several elements, then the elements shared out, in order, over as few cards as fit."""
    shell = copy.deepcopy(body)
    _set_elements(shell, [])
    room = BODY_LIMIT - len(json_bytes(_label(shell, Part(9999, 9999))))
    elements = [piece for element in _elements(body) for piece in _cut(element, room // 2)]
    cards: list[dict[str, Any]] = []
    current: list[Any] = []
    for element in elements:
        candidate = copy.deepcopy(shell)
        _set_elements(candidate, [*current, element])
        if current and not fits(_label(candidate, Part(9999, 9999))):
            finished = copy.deepcopy(shell)
            _set_elements(finished, current)
            cards.append(finished)
            current = []
        current.append(element)
    finished = copy.deepcopy(shell)
    _set_elements(finished, current)
    cards.append(finished)
    return cards


def _cut(element: Any, room: int) -> Iterator[Any]:
    """``element``, or copies of it each holding a piece of its text, if that is over ``room``
    bytes (as JSON writes it)."""
    if not isinstance(element, dict) or len(json_bytes(element)) <= room:
        yield element
        return
    fields = element.get("fields")
    if isinstance(fields, list):  # each field its own text, each cut if need be
        for field in fields:
            text = field.get("text") if isinstance(field, dict) else None
            if isinstance(text, dict):
                yield from _cut({"tag": "div", "text": text}, room)
        return
    text = element.get("text")
    content = text.get("content") if isinstance(text, dict) else None
    if not isinstance(content, str):
        yield element
        return
    for piece in _pieces(content, room):
        copied = copy.deepcopy(element)
        copied["text"]["content"] = piece
        yield copied


def _pieces(content: str, room: int) -> list[str]:
    """``content`` cut at lines (inside a line only if it must), never inside a character
    reference such as ``&#60;``: a piece ending in one gives it to the next."""
    pieces = split_lines_to_fit(content, room - _REFERENCE_ROOM, _json_len)
    for index in range(len(pieces) - 1):
        broken = _BROKEN_REFERENCE.search(pieces[index])
        if broken and ";" in pieces[index + 1][:_REFERENCE_ROOM]:
            pieces[index], pieces[index + 1] = (
                pieces[index][: broken.start()],
                pieces[index][broken.start() :] + pieces[index + 1],
            )
    return [piece for piece in pieces if piece]


def _json_len(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8")) - 2


def card_texts(body: Mapping[str, Any]) -> Sequence[str]:
    """Every text of a card, for describing it."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("content"), str):
                found.append(node["content"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body)
    return found
