"""What a DingTalk custom robot's answer means.

The robot answers HTTP 200 with ``{"errcode": …, "errmsg": …}`` whatever happened
(open.dingtalk.com, "自定义机器人发送群聊消息", 错误码 and 安全设置错误码):

- 0 sent; -1 system busy, and 410100 / 130101 too fast (past 20 a minute the robot refuses
  everything for 10 minutes, so the retry waits that long): worth another try.
- 310000 the security check failed: ``sign not match`` and ``invalid timestamp`` (加签),
  ``keywords not in content`` (自定义关键词), ``ip … not in whitelist`` (IP 地址段). Final.
- 400013 the group was dissolved, 400106 the robot is gone, 400102 it is disabled, 400101 (and
  300001, what the service answers in practice) no such access_token, 400105 an unsupported
  message type, 460101 the body is over 20,000 bytes, 430101-430104 the content was refused:
  all final, and so is any other errcode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from bridge.classify import Outcome, Verdict, read_errcode_answer

__all__ = ["FAIL_ERRCODES", "REASONS", "RETRY_ERRCODES", "THROTTLE_SECONDS", "classify"]

THROTTLE_SECONDS: Final = 600.0
"""How long the robot refuses everything once it has had more than 20 messages in a minute."""

RETRY_ERRCODES: Final = {-1: "system_busy", 410100: "rate_limited", 130101: "rate_limited"}
FAIL_ERRCODES: Final = {
    400013: "robot_gone",
    400106: "robot_gone",
    400102: "robot_disabled",
    400101: "invalid_key",
    300001: "invalid_key",
    400105: "bad_request",
    40035: "bad_request",
    43004: "bad_request",
    460101: "too_long",
    101002: "too_long",
    430101: "content_rejected",
    430102: "content_rejected",
    430103: "content_rejected",
    430104: "content_rejected",
}
SECURITY_ERRCODE: Final = 310000
# 310000's errmsg says which security setting refused the message.
_SECURITY_REASONS: Final = (
    ("sign", "bad_signature"),
    ("timestamp", "bad_signature"),
    ("keyword", "keyword_missing"),
    ("whitelist", "ip_not_allowed"),
)
REASONS: Final = (
    "bad_signature",
    "keyword_missing",
    "ip_not_allowed",
    "security_check",
    "robot_gone",
    "robot_disabled",
    "bad_request",
    "content_rejected",
    "errcode",
)
"""Its own reasons (metric labels); ``errcode`` is an errcode it does not know (final)."""


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> Verdict:
    answer = read_errcode_answer(status, body, headers)
    if isinstance(answer, Verdict):
        return answer
    if answer.errcode in RETRY_ERRCODES:
        reason = RETRY_ERRCODES[answer.errcode]
        wait = THROTTLE_SECONDS if reason == "rate_limited" else None
        return Verdict(Outcome.RETRY, reason, answer.detail, wait)
    if answer.errcode == SECURITY_ERRCODE:
        lowered = answer.errmsg.lower()
        reason = next((r for word, r in _SECURITY_REASONS if word in lowered), "security_check")
        return Verdict(Outcome.FAILED, reason, answer.detail)
    return Verdict(Outcome.FAILED, FAIL_ERRCODES.get(answer.errcode, "errcode"), answer.detail)
