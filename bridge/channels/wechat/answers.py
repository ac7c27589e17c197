"""What a WeChat Work robot's answer means.

The robot answers HTTP 200 even on failure; the ``errcode`` in the JSON body says what
happened: 0 ok, 45009 rate limited and -1 system busy (worth another try), 93000 invalid key and
40058 content too long (final), any other code final too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from bridge.classify import Outcome, Verdict, classify_http_status, clip, http_detail

__all__ = ["FAIL_ERRCODES", "REASONS", "RETRY_ERRCODES", "classify"]

RETRY_ERRCODES: Final = {-1: "system_busy", 45009: "rate_limited"}
FAIL_ERRCODES: Final = {93000: "invalid_key", 40058: "too_long"}
REASONS: Final = ("errcode",)
"""Its own reason: an errcode it does not know (every one of them is final)."""


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> Verdict:
    text = body.decode("utf-8", "replace")
    shared = classify_http_status(status, text, headers)
    if shared is not None:
        return shared
    if not 200 <= status < 300:
        return Verdict(Outcome.FAILED, "client_error", http_detail(status, text))
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        answer = None
    errcode = answer.get("errcode") if isinstance(answer, dict) else None
    if not isinstance(errcode, int) or isinstance(errcode, bool):
        # Something between us and WeChat (a proxy, a portal) answered: we cannot know whether
        # the group got the message, and losing it is worse than sending it twice.
        return Verdict(Outcome.RETRY, "bad_response", http_detail(status, text))
    errmsg = str(answer.get("errmsg", "")) if isinstance(answer, dict) else ""
    detail = clip(f"errcode {errcode}: {errmsg}")
    if errcode == 0:
        return Verdict(Outcome.SENT, "ok")
    if errcode in RETRY_ERRCODES:
        return Verdict(Outcome.RETRY, RETRY_ERRCODES[errcode], detail)
    return Verdict(Outcome.FAILED, FAIL_ERRCODES.get(errcode, "errcode"), detail)
