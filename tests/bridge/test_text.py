"""Cutting text to a channel's limit without breaking characters, and hiding URLs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.channels.text import split_lines_to_fit, truncate_bytes, truncate_chars
from bridge.channels.webhook import redact_url, scrub, url_secrets


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("hello", 10, "hello"),
        ("hello", 5, "hello"),
        ("hello world", 8, "hello…"),
        ("告警告警", 12, "告警告警"),
        ("告警告警", 11, "告警…"),
        ("告警告警", 9, "告警…"),
        ("告警告警", 8, "告…"),
        ("🔥🔥🔥", 11, "🔥🔥…"),
        ("🔥🔥🔥", 10, "🔥…"),
        ("🔥🔥🔥", 3, "…"),
        ("🔥🔥🔥", 2, ""),
        ("", 0, ""),
    ],
)
def test_truncate_bytes(text: str, limit: int, expected: str) -> None:
    """Cut to a byte budget on a character boundary, marking the cut."""
    assert truncate_bytes(text, limit) == expected
    assert len(truncate_bytes(text, limit).encode()) <= max(limit, 0)


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("abc", 3, "abc"), ("abcdef", 4, "abc…"), ("告警告警", 3, "告警…")],
)
def test_truncate_chars(text: str, limit: int, expected: str) -> None:
    """Cut to a character budget, marking the cut."""
    assert truncate_chars(text, limit) == expected


@pytest.mark.parametrize(
    ("text", "limit", "pieces"),
    [
        ("a\nb\nc", 100, ["a\nb\nc"]),
        ("aaa\nbbb\nccc", 7, ["aaa\nbbb", "ccc"]),
        ("aaa\nbbb\nccc", 3, ["aaa", "bbb", "ccc"]),
        ("abcdefgh", 3, ["abc", "def", "gh"]),
        ("告警告警", 6, ["告警", "告警"]),
        ("告警告警", 7, ["告警", "告警"]),
        ("x\n告警告警告警", 6, ["x", "告警", "告警", "告警"]),
        ("", 5, [""]),
    ],
)
def test_split_lines_to_fit(text: str, limit: int, pieces: list[str]) -> None:
    """Split at lines first, inside a line only when it alone is over the limit."""
    assert split_lines_to_fit(text, limit) == pieces


@given(st.text(alphabet=st.sampled_from("ab告🔥\n <>&"), max_size=300), st.integers(4, 40))
def test_split_pieces_fit_and_lose_nothing(text: str, limit: int) -> None:
    """Every piece fits, and the pieces hold every character of the text."""
    pieces = split_lines_to_fit(text, limit)
    assert all(len(piece.encode()) <= limit for piece in pieces)
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc-123",
            "https://qyapi.weixin.qq.com/<redacted>",
        ),
        ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/<redacted>"),
        ("http://127.0.0.1:8080/hook?k=v", "http://127.0.0.1:8080/<redacted>"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    """Only the scheme and host of a webhook URL are ever shown."""
    assert redact_url(url) == shown


def test_scrub_removes_every_piece_of_the_url() -> None:
    """The URL, its path, its query and the key alone are all removed from a text."""
    url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=SECRET-KEY-123"
    text = f"failed {url} and key=SECRET-KEY-123 and SECRET-KEY-123 alone"
    cleaned = scrub(text, url_secrets(url))
    assert "SECRET-KEY-123" not in cleaned
    assert url not in cleaned
    assert cleaned.count("<redacted>") == 3
