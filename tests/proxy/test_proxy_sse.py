"""The pieces that read what passes through: event streams, bodies, content codings, headers."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.encoding import Decoder, decoder_for, upstream_accept_encoding
from proxy.headers import client_response_headers, upstream_request_headers
from proxy.pricing import Usage
from proxy.streaming import SseMeter
from proxy.usage import BodyMeter, body_usage, usage_from

USAGE = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}


def chunk_event(delta: dict[str, object], *, usage: object = None, end: str = "\n") -> bytes:
    body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
    body["usage"] = usage
    return f"data: {json.dumps(body)}{end}{end}".encode()


def chat_stream(end: str = "\n") -> tuple[list[bytes], bytes]:
    """A chat stream with include_usage, and its usage-only event."""
    usage_only = f"data: {json.dumps({'choices': [], 'usage': USAGE})}{end}{end}".encode()
    events = [
        f": keep-alive{end}{end}".encode(),
        chunk_event({"role": "assistant", "content": ""}, end=end),
        chunk_event({"content": "Hel"}, end=end),
        chunk_event({"content": "lo"}, end=end),
        chunk_event({}, end=end),
        usage_only,
        f"data: [DONE]{end}{end}".encode(),
    ]
    return events, usage_only


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return [piece for piece in pieces if piece]


def meter(drop: bool, decoder: Decoder | None = None) -> SseMeter:
    clock = iter(range(1, 1000))
    return SseMeter(
        drop_usage_only=drop,
        monotonic=lambda: float(next(clock)),
        decoder=decoder or Decoder("identity"),
    )


@given(
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    end=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_usage_chunk_removal_does_not_depend_on_chunking(cuts: list[int], end: str) -> None:
    """However the stream is cut into reads, the output is the stream less its usage event."""
    events, usage_only = chat_stream(end)
    stream = b"".join(events)
    sse = meter(drop=True)
    out = b"".join(sse.feed(piece) for piece in split(stream, cuts)) + sse.finish()
    assert out == stream.replace(usage_only, b"")
    assert sse.usage == Usage(9, 5)
    assert sse.first_token_at is not None


@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_without_removal_every_chunk_goes_out_as_it_came(cuts: list[int]) -> None:
    """A client that asked for usage gets each chunk at once, unchanged; usage is still read."""
    events, _ = chat_stream()
    pieces = split(b"".join(events), cuts)
    sse = meter(drop=False)
    assert [sse.feed(piece) for piece in pieces] == pieces
    assert sse.finish() == b""
    assert sse.usage == Usage(9, 5)


def test_only_complete_events_are_held_back() -> None:
    """While removing, bytes of an incomplete event wait; complete events go out at once."""
    sse = meter(drop=True)
    first = chunk_event({"content": "Hi"})
    assert sse.feed(first + b'data: {"cho') == first
    assert sse.feed(b'ices": []}\n\n') == b'data: {"choices": []}\n\n'  # no usage: not removed


@pytest.mark.parametrize("drop", [False, True])
def test_time_to_first_token_is_the_first_content_event(drop: bool) -> None:
    """Role-only openers, comments and empty deltas are not tokens; content is. The time is
    when the chunk carrying it arrived, even though it is read after being passed on."""
    now = [0.0]
    sse = SseMeter(drop_usage_only=drop, monotonic=lambda: now[0], decoder=Decoder("identity"))
    for at, event in enumerate(
        [
            b": ping\n\n",
            chunk_event({"role": "assistant", "content": ""}),
            chunk_event({"content": None, "refusal": None}),
        ],
        start=1,
    ):
        now[0] = float(at)
        assert sse.feed(event) == event
        sse.read_deferred()
    assert sse.first_token_at is None
    now[0] = 4.0
    sse.feed(chunk_event({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}))
    now[0] = 4.5  # passing the chunk on took a while: the token arrived at 4
    assert sse.first_token_at == 4.0
    now[0] = 5.0
    sse.feed(chunk_event({"content": "later"}))
    assert sse.first_token_at == 4.0


@pytest.mark.parametrize(
    ("event", "is_token"),
    [
        (b'data: {"choices": [{"index": 0, "text": "Hi"}]}\n\n', True),
        (b'data: {"choices": [{"index": 0, "text": ""}]}\n\n', False),
        (b'event: response.created\ndata: {"type": "response.created"}\n\n', False),
        (b'event: x\ndata: {"type": "response.output_text.delta", "delta": "Hi"}\n\n', True),
        (b'data: {"type": "response.reasoning_summary_text.delta", "delta": "."}\n\n', True),
        (b"data: [DONE]\n\n", False),
        (b"data: not json\n\n", False),
    ],
)
def test_what_counts_as_a_first_token(event: bytes, is_token: bool) -> None:
    """Completions text, Responses API *.delta events count; lifecycle events and junk do not."""
    sse = meter(drop=False)
    sse.feed(event)
    assert (sse.first_token_at is not None) == is_token


def test_responses_usage_comes_from_response_completed() -> None:
    """Responses API streams report usage inside response.completed; nothing is removed."""
    completed = {
        "type": "response.completed",
        "response": {"usage": {"input_tokens": 30, "output_tokens": 8, "total_tokens": 38}},
    }
    created = {"type": "response.created", "response": {"usage": None}}
    stream = (
        f"event: response.created\ndata: {json.dumps(created)}\n\n"
        f"event: response.completed\ndata: {json.dumps(completed)}\n\n"
    ).encode()
    sse = meter(drop=True)
    assert sse.feed(stream) == stream
    assert sse.usage == Usage(30, 8)


def test_last_running_total_wins() -> None:
    """Servers that repeat a running usage total in several chunks are not double counted."""
    sse = meter(drop=False)
    sse.feed(chunk_event({"content": "a"}, usage={"prompt_tokens": 5, "completion_tokens": 1}))
    sse.feed(chunk_event({"content": "b"}, usage={"prompt_tokens": 5, "completion_tokens": 2}))
    assert sse.usage == Usage(5, 2)


def test_compressed_stream_is_read_from_a_decoded_copy() -> None:
    """A gzip event stream goes out as it came; usage is read from a decoded copy."""
    events, _ = chat_stream()
    compressed = gzip.compress(b"".join(events))
    sse = meter(drop=False, decoder=decoder_for("gzip"))
    pieces = split(compressed, [10, 50, 90])
    assert [sse.feed(piece) for piece in pieces] == pieces
    assert sse.usage == Usage(9, 5)


def test_an_endless_event_is_forwarded_not_held() -> None:
    """An event that never ends is sent on once it passes the size bound, not kept in memory."""
    sse = meter(drop=True)
    out = sse.feed(b"data: " + b"x" * (1024 * 1024 + 10))
    assert len(out) == 1024 * 1024 + 16


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("identity", lambda data: data),
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, no zlib header
    ],
)
def test_body_usage_is_read_in_every_coding(coding: str, encode) -> None:  # type: ignore[no-untyped-def]
    """gzip, deflate (with or without the zlib header) and plain bodies give up their usage."""
    body = encode(json.dumps({"choices": [], "usage": USAGE}).encode())
    decoder = decoder_for(coding)
    assert decoder is not None
    meter = BodyMeter(decoder)
    for piece in split(body, [3, 17, 40]):
        meter.feed(piece)
    assert meter.usage() == Usage(9, 5)


def test_unknown_coding_and_broken_bodies_give_no_usage() -> None:
    """A coding the proxy cannot decode, or a corrupt body, yields no usage rather than a guess."""
    assert decoder_for("br") is None
    meter = BodyMeter(Decoder("gzip"))
    meter.feed(b"\x1f\x8b not really gzip")
    assert meter.usage() is None
    meter = BodyMeter(Decoder("identity"))
    meter.feed(b'{"usage": {"prompt_tokens": "nine"}}')
    assert meter.usage() is None


def test_huge_body_usage_is_found_in_its_tail() -> None:
    """A body too large to keep whole is searched for usage in its tail (where servers put it),
    whether fed through a meter or read whole first."""
    pieces = [
        b'{"data": [',
        *[b'{"embedding": [' + b"0.1234," * 15_000 + b"0.5]}," for _ in range(200)],
        b'{}], "usage": {"prompt_tokens": 77, "total_tokens": 77, "details": {"cached": 0}}}',
    ]
    meter = BodyMeter(Decoder("identity"))
    for piece in pieces:
        meter.feed(piece)
    assert meter.usage() == Usage(77, 0)
    assert body_usage(b"".join(pieces)) == Usage(77, 0)


@pytest.mark.parametrize(
    ("client", "upstream"),
    [
        (None, "identity"),
        ("gzip, deflate, br, zstd", "gzip, deflate"),
        ("br", "identity"),
        ("gzip;q=0, deflate", "deflate"),
        ("*", "gzip, deflate"),
        ("GZIP;q=0.5", "gzip"),
    ],
)
def test_upstream_accept_encoding_is_what_the_proxy_can_decode(
    client: str | None, upstream: str
) -> None:
    """The upstream may only use codings both the client accepts and the proxy can decode."""
    assert upstream_accept_encoding(client) == upstream


def test_header_filtering_in_both_directions() -> None:
    """Hop-by-hop, credentials and lengths stop at the proxy; everything else crosses."""
    client = CIMultiDictProxy(
        CIMultiDict(
            {
                "Host": "proxy",
                "Authorization": "Bearer client",
                "Api-Key": "client",
                "Content-Length": "3",
                "Connection": "close, X-Private",
                "X-Private": "1",
                "TE": "trailers",
                "Accept-Encoding": "gzip",
                "Content-Type": "application/json",
                "X-Request-Id": "abc",
            }
        )
    )
    sent = upstream_request_headers(client, "Bearer upstream", stream=True)
    assert dict(sent) == {
        "Content-Type": "application/json",
        "X-Request-Id": "abc",
        "Authorization": "Bearer upstream",
        "Accept-Encoding": "identity",
    }
    upstream = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", "10"),
                ("Keep-Alive", "timeout=5"),
                ("Content-Encoding", "gzip"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("x-request-id", "req-1"),
            ]
        )
    )
    assert list(client_response_headers(upstream).items()) == [
        ("Content-Encoding", "gzip"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("x-request-id", "req-1"),
    ]


_KEYS = st.sampled_from(["usage", '"usage', "usage\\", "response", "choices", "x", ""])
_USAGE_SHAPES = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"prompt_tokens": st.integers(0, 10**6)},
        optional={
            "completion_tokens": st.integers(0, 10**6),
            "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": st.integers(0, 9)}),
        },
    ),
)
_VALUES = st.recursive(
    st.one_of(_USAGE_SHAPES, st.text(max_size=12), st.sampled_from(['"usage":{}', "}", ","])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=300, derandomize=True, deadline=None)
@example(members=[('"usage', {"prompt_tokens": 5})], last_usage=None, spaces="")
@example(members=[("x", ',"usage":{"prompt_tokens":5}')], last_usage=None, spaces="")
@example(members=[("response", {"usage": {"prompt_tokens": 5}})], last_usage=None, spaces=" ")
@example(  # integers past 64 bits, which orjson would read as floats
    members=[],
    last_usage={"prompt_tokens": 2**64, "prompt_tokens_details": {"cached_tokens": 2**70}},
    spaces="",
)
@example(members=[("a", {"usage": {"prompt_tokens": 5}})], last_usage=None, spaces="\n  ")
@given(
    members=st.lists(st.tuples(_KEYS, _VALUES), max_size=5),
    last_usage=_USAGE_SHAPES,
    spaces=st.sampled_from(["", " ", "\n  "]),
)
def test_body_usage_is_what_a_full_parse_reads(
    members: list[tuple[str, object]], last_usage: object, spaces: str
) -> None:
    """Usage read from an answer is the top-level ``usage`` a full JSON parse finds, whatever
    else the body holds: nested ``usage`` objects, keys that contain ``usage``, strings that look
    like JSON, usage that is not the last member."""
    pairs = [*members, ("usage", last_usage)] if last_usage is not None else members
    body = (
        "{"
        + ",".join(
            f"{spaces}{json.dumps(key)}{spaces}:{spaces}{json.dumps(value)}" for key, value in pairs
        )
        + spaces
        + "}"
    ).encode()
    meter = BodyMeter(Decoder("identity"))
    meter.feed(body)
    assert meter.usage() == usage_from(json.loads(body))
