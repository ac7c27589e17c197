"""What a WeChat Work robot's answer means.

The robot answers HTTP 200 even on failure; the ``errcode`` in the JSON body says what
happened: 0 ok, 45009 rate limited and -1 system busy (worth another try), 93000 invalid key and
40058 content too long (final), any other code final too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from bridge.classify import Outcome, Verdict, read_errcode_answer

__all__ = ["FAIL_ERRCODES", "REASONS", "RETRY_ERRCODES", "classify"]

RETRY_ERRCODES: Final = {-1: "system_busy", 45009: "rate_limited"}
FAIL_ERRCODES: Final = {93000: "invalid_key", 40058: "too_long"}
REASONS: Final = ("errcode",)
"""Its own reason: an errcode it does not know (every one of them is final)."""


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> Verdict:
    answer = read_errcode_answer(status, body, headers)
    if isinstance(answer, Verdict):
        return answer
    if answer.errcode in RETRY_ERRCODES:
        return Verdict(Outcome.RETRY, RETRY_ERRCODES[answer.errcode], answer.detail)
    return Verdict(Outcome.FAILED, FAIL_ERRCODES.get(answer.errcode, "errcode"), answer.detail)
