"""Reading model and stream from request bodies without parsing them whole, and asking for usage."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.pricing import Price, PriceBook
from proxy.request import read_call, top_level_members

WANTED = frozenset({"model", "stream", "stream_options"})
PRICES = PriceBook({"gpt-4.1": Price(input=2.0, output=8.0)})

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(["model", "stream", "stream_options", "messages", "m\\odel"]) | st.text(
    max_size=8
)
objects = st.dictionaries(keys, json_values, max_size=6)


# Bodies over 64 KiB take the scanner's path, smaller ones json.loads': both must agree.
SIZES = pytest.mark.parametrize("size", ["small", "large"])


def sized(body: bytes, size: str) -> bytes:
    """``body`` (a JSON object) as it is, or made large with a first member of padding."""
    if size == "small":
        return body
    return body.replace(b"{", b'{"padding": "' + b"x" * 70_000 + b'", ', 1)


def members(body: bytes) -> dict[str, Any] | None:
    found = top_level_members(body, WANTED)
    if found is None:
        return None
    return {name: json.loads(body[start:end]) for name, (start, end) in found.spans.items()}


@given(
    document=objects,
    indent=st.sampled_from([None, 0, 2]),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", " :\r\n")]),
    ascii_only=st.booleans(),
)
def test_scanner_agrees_with_json_loads(
    document: dict[str, Any],
    indent: int | None,
    separators: tuple[str, str],
    ascii_only: bool,
) -> None:
    """For any JSON object, however written, the scanner finds what json.loads finds."""
    text = json.dumps(document, indent=indent, separators=separators, ensure_ascii=ascii_only)
    parsed = json.loads(text)
    assert members(text.encode()) == {name: parsed[name] for name in WANTED if name in parsed}


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'"model"', b'{"model": "gpt-4.1"', b'{"model" "x"}', b'{"a": 1} trailing',
     b'{"a": "unterminated}', b'{"a": [1, 2}', b'{"a": }', b"\xef\xbb\xbf{}", b'{"a": 1,}'],
)  # fmt: skip
def test_what_is_not_a_json_object_is_not_read(body: bytes) -> None:
    """Bodies that are not one JSON object give nothing: the model is "other", nothing changes."""
    assert top_level_members(body, WANTED) is None
    call = read_call("chat", body, PRICES, metered=True)
    assert (call.model, call.stream, call.body) == ("other", False, body)


@SIZES
def test_duplicate_keys_last_one_counts_as_in_json_loads(size: str) -> None:
    """With a key given twice, the scanner reads the last, as json.loads (and most servers) do."""
    body = sized(b'{"model": "cheap", "model": "gpt-4.1", "stream": false, "stream": true}', size)
    call = read_call("chat", body, PRICES, metered=True)
    assert (call.model, call.stream) == ("gpt-4.1", True)


@SIZES
def test_include_usage_is_added_without_touching_anything_else(size: str) -> None:
    """A stream without stream_options gets exactly one member inserted; the rest is byte-equal."""
    body = b'  {"messages": [{"role": "user", "content": "\\u00e9t\\u00e9 \\"x\\""}],\n "model":'
    body = sized(body + b' "gpt-4.1", "stream": true, "temperature": 0.70}', size)
    call = read_call("chat", body, PRICES, metered=True)
    assert call.drop_usage_only
    assert call.body == body.replace(b"{", b'{"stream_options":{"include_usage":true},', 1)
    assert json.loads(call.body)["stream_options"] == {"include_usage": True}


@SIZES
@pytest.mark.parametrize(
    ("options", "expected", "drops"),
    [
        ("null", {"include_usage": True}, True),
        ('{"include_usage": false, "x": 1}', {"include_usage": True, "x": 1}, True),
        ('{"include_usage": true}', {"include_usage": True}, False),
        ('"junk"', "junk", False),
    ],
)
def test_existing_stream_options_are_merged_in_place(
    options: str, expected: Any, drops: bool, size: str
) -> None:
    """stream_options the client sent are kept and only include_usage is set (if it can be)."""
    body = f'{{"model": "gpt-4.1", "stream_options": {options}, "stream": true, "n": 1}}'.encode()
    body = sized(body, size)
    call = read_call("completions", body, PRICES, metered=True)
    assert call.drop_usage_only is drops
    document = json.loads(call.body)
    assert document["stream_options"] == expected
    assert document["n"] == 1
    prefix = body.index(b'"stream_options"')
    assert call.body[:prefix] == body[:prefix]  # nothing before the member changed


def test_usage_is_only_asked_where_it_must_be() -> None:
    """Embeddings, the Responses API, non-streams and unmetered routes are sent unchanged."""
    stream = b'{"model": "gpt-4.1", "stream": true}'
    assert read_call("responses", stream, PRICES, metered=True).body == stream
    assert read_call("embeddings", stream, PRICES, metered=True).body == stream
    assert read_call("other", stream, PRICES, metered=False).model == "other"
    plain = b'{"model": "gpt-4.1", "stream": "yes"}'
    assert read_call("chat", plain, PRICES, metered=True).body == plain


def test_a_large_image_body_is_read_without_parsing_it() -> None:
    """A 16 MB base64 image before the model name is skipped over, not decoded."""
    image = base64.b64encode(b"\x00\xff" * 6_000_000).decode()
    content = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}]
    body = json.dumps(
        {"messages": [{"role": "user", "content": content}], "model": "gpt-4.1", "stream": True}
    ).encode()
    call = read_call("chat", body, PRICES, metered=True)
    assert (call.model, call.stream, call.drop_usage_only) == ("gpt-4.1", True, True)
    assert len(call.body) == len(body) + len(b'"stream_options":{"include_usage":true},')


@SIZES
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"model": ' + b"[" * 5000 + b"]" * 5000 + b"}", id="deep-model"),
        pytest.param(
            b'{"model": "gpt-4.1", "stream": true, "stream_options": {"x": '
            + b"[" * 5000
            + b"]" * 5000
            + b"}}",
            id="deep-options",
        ),
    ],
)
def test_deeply_nested_members_are_relayed_as_they_came(body: bytes, size: str) -> None:
    """Members nested too deeply to parse are not read: the body goes upstream unchanged."""
    body = sized(body, size)
    call = read_call("chat", body, PRICES, metered=True)
    assert call.body == body
    assert call.drop_usage_only is False


@SIZES
def test_unpaired_surrogate_escapes_in_stream_options_survive(size: str) -> None:
    """stream_options holding an unpaired surrogate escape is merged, the escape kept as sent."""
    body = sized(b'{"model": "gpt-4.1", "stream": true, "stream_options": {"x": "\\ud800"}}', size)
    call = read_call("chat", body, PRICES, metered=True)
    assert call.drop_usage_only is True
    sent = json.loads(call.body)
    assert sent["stream_options"] == {"x": "\ud800", "include_usage": True}
    assert b'"\\ud800"' in call.body
