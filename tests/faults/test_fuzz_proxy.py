"""Fuzzing the relay with hypothesis: any method, path, headers and body a client can send.

Bodies are JSON objects whose ``model``, ``stream`` and ``stream_options`` have any type, with
odd strings and unpaired surrogate escapes, nested deeply, padded past 64 KiB (where the proxy
scans instead of parsing), or no JSON at all; paths carry dot segments, encoded bytes and
unknown routes; keys are right, wrong, missing or garbage. The answer is whatever the upstream
says or a 4xx of the proxy's own, never a 500 nor a traceback, and afterwards nothing is left
active and the ``model`` label has only priced names and ``other``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sheepdog.config import parse_config
from sheepdog.core.runtime import RUNTIME
from tests.faults.background import Served
from tests.faults.conftest import FIGURES, LogRecorder
from tests.peers.upstream import FakeUpstream
from tests.support.fuzzing import examples
from tests.support.loop import LoopThread
from tests.support.strategies import documents

pytestmark = pytest.mark.fuzz

KEY = "sd-fuzz-client-key"
PRICED = ["gpt-4.1", "deepseek-v3.2", "text-embedding-3-small"]
FUZZ = settings(
    max_examples=examples(400),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TRICKY = ["", "\ud800", "x\udfffy", "\x00", "../../admin", "gpt-4.1\n", "GPT-4.1", "🔥", "a" * 3000]
TEXT = st.one_of(st.text(max_size=20), st.sampled_from(TRICKY))
JSON = documents(TEXT, max_size=3, max_leaves=10)
DEEP = st.sampled_from([40, 900, 5000]).map(lambda depth: "[" * depth + "]" * depth)


class Body(bytes):
    """Bytes whose repr stays short when hypothesis reports a failing example."""

    def __repr__(self) -> str:
        if len(self) <= 300:
            return bytes.__repr__(self)
        return f"<{len(self)} bytes: {bytes(self[:150])!r} … {bytes(self[-150:])!r}>"


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A request body: mostly a JSON object with the members the proxy reads, any types."""
    kind = draw(st.sampled_from(["object", "object", "object", "raw", "empty", "deep"]))
    if kind == "raw":
        return Body(draw(st.binary(max_size=500)))
    if kind == "empty":
        return Body()
    document: dict[str, Any] = {}
    if draw(st.booleans()):
        document["model"] = draw(st.one_of(st.sampled_from(PRICED), JSON))
    if draw(st.booleans()):
        document["stream"] = draw(st.one_of(st.just(True), JSON))
    if draw(st.booleans()):
        document["stream_options"] = draw(
            st.one_of(st.fixed_dictionaries({}, optional={"include_usage": JSON, "x": TEXT}), JSON)
        )
    document.update(draw(st.dictionaries(TEXT, JSON, max_size=3)))
    document.setdefault("messages", [{"role": "user", "content": draw(TEXT)}])
    text = json.dumps(document, ensure_ascii=True)
    if kind == "deep":  # a member nested past any recursion limit
        member = draw(st.sampled_from(["model", "stream", "stream_options", "messages"]))
        text = text[:-1] + f', "{member}": {draw(DEEP)}}}'
    if draw(st.integers(0, 3)) == 0:  # past 64 KiB the proxy scans for members instead
        padding = '"padding": "' + "p" * 70_000 + '"'
        text = (
            "{" + padding + ", " + text[1:]
            if draw(st.booleans())
            else (text[:-1] + ", " + padding + "}")
        )
    return Body(text.encode("ascii"))


SEGMENT = st.one_of(
    st.sampled_from([".", "..", "%2e%2e", "%2E", "%00", "%ff", "models", "chat", "", "a;b=c"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_~", min_size=1, max_size=12),
)
METERED = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]
PATHS = st.one_of(
    st.sampled_from(METERED),
    st.sampled_from([*METERED, "/v1/models"]),
    st.lists(SEGMENT, min_size=1, max_size=4).map(lambda parts: "/v1/" + "/".join(parts)),
).flatmap(lambda path: st.sampled_from([path, path + "?stream=true", path + "?a=%ff&b"]))
AUTHORIZATION = st.one_of(
    st.sampled_from(
        [
            f"Bearer {KEY}",
            f"bearer {KEY}",
            f"Bearer  {KEY} ",
            "Bearer wrong",
            "Bearer",
            "Basic dXNlcjpwYXNz",
            "",
            f"Token {KEY}",
        ]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=255, exclude_categories=["Cc"]),
        max_size=30,
    ),
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Authorization": AUTHORIZATION,
        "Content-Type": st.sampled_from(["application/json", "text/plain", "", "x/y; charset=z"]),
        "Accept-Encoding": st.sampled_from(["gzip", "br", "identity", "*", "zstd;q=2"]),
        "Accept": st.sampled_from(["text/event-stream", "*/*", ""]),
        "api-key": st.sampled_from([KEY, "leak-me"]),
        "Connection": st.sampled_from(["close", "keep-alive", "upgrade"]),
    },
)


@dataclass
class Service:
    served: Served
    registry: CollectorRegistry
    upstream: FakeUpstream
    logs: LogRecorder


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """sheepdog relaying to a local upstream, for the whole module."""
    workdir: Path = tmp_path_factory.mktemp("fuzz-proxy")
    thread = LoopThread()
    logs = LogRecorder.attached(logging.INFO)
    upstream = thread.run(FakeUpstream().start())
    config = parse_config(
        {
            "state_dir": str(workdir / "state"),
            "proxy": {
                "upstream": {
                    "base_url": upstream.base_url,
                    "api_key": "sk-fuzz-upstream",
                    "timeout_seconds": 10,
                },
                "clients": [{"name": "fuzzer", "key": KEY}],
            },
            "bridge": {"targets": {}},
        },
        env={},
    )
    served = Served.create(thread, config)
    try:
        yield Service(served, served.registry, upstream, logs)
    finally:
        served.stop()
        thread.run(upstream.close())
        thread.close()
        logs.detach()


@FUZZ
@given(
    method=st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE", "PATCH"]),
    path=PATHS,
    headers=HEADERS,
    body=bodies(),
)
def test_any_request_gets_an_answer_that_is_not_a_500(
    service: Service, method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    """Whatever the method, path, headers and body: no 500, no traceback, no secret echoed."""
    FIGURES.fuzzed["/v1/*: requests (method, path, headers, body)"] += 1
    before = len(service.logs.records)
    status, answer, _ = service.served.request(
        method,
        path,
        data=bytes(body) or None,
        headers=headers,
        skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
    )
    new = service.logs.records[before:]
    assert status < 500, (status, answer[:300])
    assert not [r for r in new if r.exc_info is not None or r.levelno >= logging.ERROR], [
        r.getMessage() for r in new
    ]
    assert b"sk-fuzz-upstream" not in answer
    if status == 401:
        assert json.loads(answer)["error"]["code"] in ("missing_api_key", "invalid_api_key")


def test_after_the_fuzzing_nothing_is_active_and_labels_stay_bounded(service: Service) -> None:
    """No request left active, upstream calls closed, model label only priced names or other."""
    assert service.served.request("GET", "/-/healthy")[0] == 200
    assert service.served.request("GET", "/-/ready")[0] == 200
    models = set()
    for metric in service.registry.collect():
        for sample in metric.samples:
            if "model" in sample.labels:
                models.add(sample.labels["model"])
            if sample.name == "llm_active_requests":
                assert sample.value == 0, sample
    assert models <= set(service.served.app[RUNTIME].settings.proxy.prices.models) | {"other"}
    assert service.upstream.active == 0
    requests = sum(
        sample.value
        for metric in service.registry.collect()
        if metric.name == "llm_requests"
        for sample in metric.samples
        if sample.name == "llm_requests_total"
    )
    assert requests > 0
