"""What a Feishu / Lark custom bot's answer means.

Success is ``{"code": 0, "msg": "success", "data": {}}`` (with the older ``"StatusCode": 0``
beside it, or alone from older deployments). Failures are a non-zero ``code``
(open.feishu.cn, "自定义机器人使用指南"), with HTTP 200 or 400:

- 11232: rate limited (the bot's 100 a minute and 5 a second, or load at the top of the hour);
  9499 with ``too many request``: the same, as the service answers a burst. Worth another try.
- 9499 ``Bad Request``: the body is not a valid message (or is over 20 KB). Final.
- 19021: the signature does not match, or its timestamp is more than an hour from Feishu's
  clock; 19022: the caller's IP is not allowed; 19024: the keyword is missing; 19001: no such
  webhook; 19007: the bot is disabled; 19036: the message is too large. Final, as is any other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from bridge.classify import Outcome, Verdict, classify_http_status, clip, http_detail

__all__ = ["FAIL_CODES", "REASONS", "RETRY_CODES", "classify"]

RETRY_CODES: Final = {11232: "rate_limited"}
BAD_REQUEST: Final = 9499
FAIL_CODES: Final = {
    19001: "invalid_key",
    19007: "robot_disabled",
    19021: "bad_signature",
    19022: "ip_not_allowed",
    19024: "keyword_missing",
    19036: "too_long",
}
REASONS: Final = (
    "bad_signature",
    "ip_not_allowed",
    "keyword_missing",
    "robot_disabled",
    "bad_request",
    "errcode",
)
"""Its own reasons (metric labels); ``errcode`` is a code it does not know (final)."""


def _code(answer: Any) -> int | None:
    if not isinstance(answer, dict):
        return None
    for key in ("code", "StatusCode"):  # StatusCode alone: what older deployments answer
        value = answer.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> Verdict:
    text = body.decode("utf-8", "replace")
    shared = classify_http_status(status, text, headers)
    if shared is not None:
        return shared
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        answer = None
    code = _code(answer)
    message = str(answer.get("msg") or answer.get("StatusMessage") or "") if code else ""
    detail = clip(f"code {code}: {message}")
    if code is not None and code != 0:
        # A rate limit can come with HTTP 400: it is decided on the code, whatever the status.
        if code in RETRY_CODES:
            return Verdict(Outcome.RETRY, RETRY_CODES[code], detail)
        if code == BAD_REQUEST and "too many" in message.lower():
            return Verdict(Outcome.RETRY, "rate_limited", detail)
        if code == BAD_REQUEST:
            return Verdict(Outcome.FAILED, "bad_request", detail)
        return Verdict(Outcome.FAILED, FAIL_CODES.get(code, "errcode"), detail)
    if not 200 <= status < 300:
        return Verdict(Outcome.FAILED, "client_error", http_detail(status, text))
    if code == 0:
        return Verdict(Outcome.SENT, "ok")
    # Not the bot's answer (a proxy, a portal): the group may or may not have the card, and
    # losing it is worse than sending it twice.
    return Verdict(Outcome.RETRY, "bad_response", http_detail(status, text))
