"""What a Slack incoming webhook's answer means: success is HTTP 200 with the body ``ok``; an
error is named in a plain-text body (``invalid_payload``, ``channel_not_found``, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from bridge.classify import Outcome, Verdict, classify_http_status, http_detail

__all__ = ["BODY_REASONS", "REASONS", "classify"]

BODY_REASONS: Final = {
    "invalid_payload": "invalid_payload",
    "invalid_blocks": "invalid_payload",
    "no_text": "invalid_payload",
    "too_many_attachments": "invalid_payload",
    "action_prohibited": "forbidden",
    "invalid_token": "forbidden",
    "no_service": "forbidden",
    "channel_not_found": "channel_not_found",
    "channel_is_archived": "channel_archived",
}
_STATUS_REASONS: Final = {
    400: "invalid_payload",
    403: "forbidden",
    404: "channel_not_found",
    410: "channel_archived",
}
REASONS: Final = ("invalid_payload", "forbidden", "channel_not_found", "channel_archived")


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> Verdict:
    text = body.decode("utf-8", "replace")
    shared = classify_http_status(status, text, headers)
    if shared is not None:
        return shared
    word = text.strip()
    if 200 <= status < 300:
        if word == "ok":
            return Verdict(Outcome.SENT, "ok")
        return Verdict(Outcome.RETRY, "bad_response", http_detail(status, text))
    reason = BODY_REASONS.get(word) or _STATUS_REASONS.get(status, "client_error")
    return Verdict(Outcome.FAILED, reason, http_detail(status, text))
