"""What an SMTP server's reply means: 4xx is transient, 5xx permanent (535: the login was
refused); anything that is not a reply code (a dropped connection) is tried again."""

from __future__ import annotations

from typing import Final

from bridge.classify import Outcome, Verdict, clip

__all__ = ["REASONS", "classify_smtp_reply"]

REASONS: Final = ("auth_failed", "smtp_transient", "smtp_permanent")


def classify_smtp_reply(code: int, message: str) -> Verdict:
    """Decide on an SMTP reply code."""
    detail = clip(f"SMTP {code}: {message}")
    if 400 <= code < 500:
        return Verdict(Outcome.RETRY, "smtp_transient", detail)
    if code in (530, 534, 535, 538):
        return Verdict(Outcome.FAILED, "auth_failed", detail)
    if 500 <= code < 600:
        return Verdict(Outcome.FAILED, "smtp_permanent", detail)
    # Not a reply code at all (aiosmtplib uses -1 for a dropped connection): try again.
    return Verdict(Outcome.RETRY, "connection_error", detail)
