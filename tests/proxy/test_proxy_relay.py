"""The relay as the openai SDK sees it: every endpoint, streams, headers, bodies, limits."""

from __future__ import annotations

import asyncio
import gzip
import json

import aiohttp
import openai
import pytest
from yarl import URL

from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import TEAM_A_KEY, UPSTREAM_KEY, StartProxy, proxy_config


async def test_chat_completion_arrives_as_the_upstream_sent_it(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """A non-streamed chat completion reaches the SDK exactly as the upstream sent it."""
    proxy = await start_proxy()
    async with proxy.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
        )
        completion = raw.parse()
    assert raw.content == upstream.sent[-1]
    assert completion.choices[0].message.content == "Hello, world!"
    assert completion.usage is not None and completion.usage.prompt_tokens == 12
    assert upstream.received[-1].json == {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "hi"}],
    }


async def test_stream_without_include_usage_hides_the_usage_chunk(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """A client that did not ask for usage gets the stream without the usage-only chunk."""
    proxy = await start_proxy()
    async with proxy.client() as client:
        stream = await client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    sent_upstream = upstream.received[-1].json
    assert sent_upstream["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello, world!"
    assert all(chunk.choices for chunk in chunks)
    assert [chunk.usage for chunk in chunks] == [None] * len(chunks)
    # Everything else is what the upstream sent, byte for byte.
    upstream_events = upstream.sent[-1].split(b"\n\n")
    assert len(chunks) == len(upstream_events) - 3  # minus the usage chunk, [DONE] and the end


async def test_stream_with_include_usage_keeps_the_usage_chunk(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """A client that asked for usage gets the usage chunk, and its request is sent unchanged."""
    proxy = await start_proxy()
    async with proxy.client() as client:
        stream = await client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (12, 4)
    assert upstream.received[-1].json["stream_options"] == {"include_usage": True}


async def test_stream_bytes_are_the_upstream_bytes_less_the_usage_event(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """Raw stream: the client receives the upstream's bytes with only the usage event removed."""
    upstream.script("gpt-4.1", write_mode="split", line_ending="\r\n")
    proxy = await start_proxy()
    body = {"model": "gpt-4.1", "messages": [], "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            proxy.url("/v1/chat/completions"),
            json=body,
            headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
        ) as response,
    ):
        received = await response.read()
    events = upstream.sent[-1].split(b"\r\n\r\n")
    usage_events = [event for event in events if b'"choices": []' in event]
    assert len(usage_events) == 1
    assert received == upstream.sent[-1].replace(usage_events[0] + b"\r\n\r\n", b"")


async def test_embeddings_models_completions_and_responses(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """Embeddings, models.list, legacy completions and the Responses API all relay through."""
    proxy = await start_proxy()
    async with proxy.client() as client:
        embeddings = await client.embeddings.create(
            model="text-embedding-3-small", input=["a", "b"]
        )
        assert [item.embedding for item in embeddings.data] == [[0.25, -0.5, 0.125]] * 2
        models = await client.models.list()
        assert models.data[0].id == "gpt-4.1"
        assert upstream.received[-1].method == "GET"
        assert upstream.received[-1].path == "/v1/models"
        completion = await client.completions.create(model="gpt-4.1", prompt="say hi")
        assert completion.choices[0].text == "Hello, world!"
        response = await client.responses.create(model="gpt-4.1", input="hi")
        assert response.output_text == "Hello, world!"
        stream = await client.responses.create(model="gpt-4.1", input="hi", stream=True)
        events = [event async for event in stream]
    assert [event.type for event in events][-1] == "response.completed"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == "Hello, world!"
    # The Responses API reports usage without being asked: nothing is injected.
    assert "stream_options" not in upstream.received[-1].json


async def test_sync_sdk_chat_and_stream(start_proxy: StartProxy) -> None:
    """The synchronous SDK (in a thread) gets completions and streams through the proxy."""
    proxy = await start_proxy()

    def call() -> tuple[str, str]:
        with proxy.sync_client() as client:
            completion = client.chat.completions.create(
                model="deepseek-v3.2", messages=[{"role": "user", "content": "hi"}]
            )
            stream = client.chat.completions.create(
                model="deepseek-v3.2", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
            return completion.choices[0].message.content or "", streamed

    assert await asyncio.to_thread(call) == ("Hello, world!", "Hello, world!")


async def test_headers_keys_and_query_cross_as_they_should(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """The upstream gets its own key, never the client's; hop-by-hop headers stop at the proxy."""
    proxy = await start_proxy()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            proxy.url("/v1/chat/completions?api-version=2024-10-01"),
            json={"model": "gpt-4.1", "messages": []},
            headers={
                "Authorization": f"Bearer {TEAM_A_KEY}",
                "x-api-key": TEAM_A_KEY,
                "OpenAI-Organization": "org-1",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "1",
                "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            },
        ) as response,
    ):
        assert response.status == 200
        await response.read()
    received = upstream.received[-1]
    assert received.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert received.query == "api-version=2024-10-01"
    assert received.headers["OpenAI-Organization"] == "org-1"
    for name in ("x-api-key", "X-Hop", "Proxy-Authorization"):
        assert name not in received.headers
    assert TEAM_A_KEY not in str(received.headers)


async def test_no_upstream_key_means_no_authorization_upstream(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """Without an upstream key configured, no Authorization header goes upstream at all."""
    config = proxy_config(upstream)
    config["proxy"]["upstream"]["api_key"] = ""
    proxy = await start_proxy(config)
    async with proxy.client() as client:
        await client.models.list()
    assert "Authorization" not in upstream.received[-1].headers


async def test_gzip_body_reaches_the_client_intact_and_is_metered(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """A gzip body from the upstream reaches the client byte for byte, and its usage is read."""
    upstream.script("gpt-4.1", gzip=True, prompt_tokens=1000, completion_tokens=500)
    proxy = await start_proxy()
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(
            proxy.url("/v1/chat/completions"),
            json={"model": "gpt-4.1", "messages": []},
            headers={"Authorization": f"Bearer {TEAM_A_KEY}", "Accept-Encoding": "gzip, br"},
        ) as response,
    ):
        raw = await response.read()
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Length"] == str(len(raw))
    assert raw == upstream.sent[-1]
    assert json.loads(gzip.decompress(raw))["choices"][0]["message"]["content"] == "Hello, world!"
    # br is dropped: the proxy only lets the upstream use what it can decode for metering.
    assert upstream.received[-1].headers["Accept-Encoding"] == "gzip"
    tokens = {"model": "gpt-4.1", "client": "team-a"}
    assert proxy.value("llm_tokens_total", type="input", **tokens) == 1000
    assert proxy.value("llm_tokens_total", type="output", **tokens) == 500

    async with proxy.client() as client:  # and the SDK decodes it as usual
        completion = await client.chat.completions.create(model="gpt-4.1", messages=[])
    assert completion.choices[0].message.content == "Hello, world!"


async def test_upstream_errors_pass_through_unchanged(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """An upstream 500 reaches the SDK with its status and body as the upstream sent them."""
    upstream.script("gpt-4.1", status=500)
    proxy = await start_proxy()
    async with proxy.client() as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="gpt-4.1", messages=[])
    assert caught.value.status_code == 500
    assert caught.value.response.content == upstream.sent[-1]


async def test_body_over_the_limit_is_refused_with_413(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """A body over proxy.max_body_bytes gets an OpenAI-shaped 413 and never reaches upstream."""
    proxy = await start_proxy(proxy_config(upstream, max_body_bytes=4096))
    async with proxy.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": "x" * 5000}]
            )
    assert caught.value.status_code == 413
    assert caught.value.body == {
        "message": "Request body is larger than this proxy accepts (4096 bytes).",
        "type": "invalid_request_error",
        "code": "request_too_large",
    }

    # Chunked upload without Content-Length: the limit holds as well.
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b"x" * 1000

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            proxy.url("/v1/embeddings"),
            data=chunks(),
            headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
        ) as response,
    ):
        assert response.status == 413
    assert upstream.received == []
    assert proxy.requests(model="other", route="chat", code="413", client="team-a") == 1


async def test_non_json_body_is_relayed_as_model_other(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """A body that is not JSON is relayed untouched and metered under model "other"."""
    proxy = await start_proxy()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            proxy.url("/v1/chat/completions"),
            data=b"\xff not json",
            headers={"Authorization": f"Bearer {TEAM_A_KEY}", "Content-Type": "text/plain"},
        ) as response,
    ):
        assert response.status == 200
        await response.read()
    assert upstream.received[-1].body == b"\xff not json"
    assert upstream.received[-1].headers["Content-Type"] == "text/plain"
    assert proxy.requests(model="other", route="chat", code="200", client="team-a") == 1


@pytest.mark.parametrize("path", ["/v1/../admin/keys", "/v1/%2e%2E/admin", "/v1/a/.%2F..%2F..%2Fx"])
async def test_dot_segments_cannot_escape_v1(
    start_proxy: StartProxy, upstream: FakeUpstream, path: str
) -> None:
    """A path that would resolve outside /v1 upstream is refused, never sent with our key."""
    proxy = await start_proxy()
    url = URL(proxy.url("/") + path.lstrip("/"), encoded=True)
    headers = {"Authorization": f"Bearer {TEAM_A_KEY}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_path"
    assert upstream.received == []
