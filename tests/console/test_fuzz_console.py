"""Nothing a client sends the console crashes it: fuzzed forms, queries and bodies.

Every answer is below 500 and no handler logs a traceback, whatever the fields hold (text,
numbers, huge ids, JSON of every shape in the playground, multipart bodies, bad encodings).
scripts/test sends the same inputs each run; scripts/fuzz new ones, and more.
"""

from __future__ import annotations

import json
import logging
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.console.conftest import BASIC, ConsoleService
from tests.console.test_console import origin, token
from tests.faults.conftest import FIGURES
from tests.support.fuzzing import examples

pytestmark = [
    pytest.mark.slow,
    pytest.mark.fuzz,
    pytest.mark.parametrize("console_service", ["sqlite"], indirect=True),
]

SETTINGS = settings(
    max_examples=examples(120),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
WORDS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["ops-wechat", "ops-dingtalk", "sample", "pasted", "1", "all", "-1", ""]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
PAYLOADS = st.one_of(
    JSON.map(json.dumps),
    st.text(max_size=200),
    st.builds(
        lambda alerts, status, version: json.dumps(
            {"version": version, "status": status, "alerts": alerts, "groupKey": "k"}
        ),
        st.lists(
            st.dictionaries(st.sampled_from(["status", "labels", "startsAt", "annotations"]), JSON),
            max_size=3,
        ),
        JSON,
        st.sampled_from(["4", 4, "3", None]),
    ),
)


def no_traceback(service: ConsoleService, before: int) -> None:
    new = service.logs.records[before:]
    bad = [r.getMessage() for r in new if r.exc_info is not None or r.levelno >= logging.CRITICAL]
    bad += [
        r.getMessage() for r in new if r.name.startswith("aiohttp") and r.levelno >= logging.ERROR
    ]
    assert bad == []


@SETTINGS
@given(
    target=WORDS, source=WORDS, payload=PAYLOADS, extra=st.dictionaries(WORDS, WORDS, max_size=3)
)
def test_fuzzed_playground_forms_never_crash_it(
    console_service: ConsoleService, target: str, source: str, payload: str, extra: dict[str, str]
) -> None:
    service = console_service
    before = len(service.logs.records)
    form = {**extra, "csrf": token(service), "target": target, "source": source, "payload": payload}
    status, _, _ = service.post("/ui/playground", form, {**BASIC, **origin(service)})
    assert status in (200, 400), status
    FIGURES.fuzzed["console playground forms"] += 1
    no_traceback(service, before)


@SETTINGS
@given(fields=st.dictionaries(st.sampled_from(["id", "all", "csrf", "ids"]), WORDS, max_size=3))
def test_fuzzed_retry_forms_never_crash_it(
    console_service: ConsoleService, fields: dict[str, str]
) -> None:
    service = console_service
    before = len(service.logs.records)
    form = {"csrf": token(service), **fields} if "csrf" not in fields else fields
    status, _, _ = service.post("/ui/dead-letters/retry", form, {**BASIC, **origin(service)})
    assert status in (303, 400, 403), status
    FIGURES.fuzzed["console retry forms"] += 1
    no_traceback(service, before)


@SETTINGS
@given(
    path=st.sampled_from(
        ["/ui/", "/ui/dead-letters", "/ui/playground", "/ui/spend", "/ui/spend.csv"]
    ),
    query=st.dictionaries(
        st.sampled_from(["month", "target", "queued", "ids", "refused", "v", "x"]),
        WORDS,
        max_size=4,
    ),
)
def test_fuzzed_queries_never_crash_it(
    console_service: ConsoleService, path: str, query: dict[str, str]
) -> None:
    service = console_service
    before = len(service.logs.records)
    status, _, _ = service.get(f"{path}?{urllib.parse.urlencode(query)}", BASIC)
    assert status in (200, 400), (status, query)
    FIGURES.fuzzed["console queries"] += 1
    no_traceback(service, before)


BODIES: list[tuple[str, bytes]] = [
    (
        "multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="payload"; filename="a"\r\n'
        b"\r\nhi\r\n--x--\r\n",
    ),
    ("multipart/form-data; boundary=x", b"--x\r\nbroken"),
    ("multipart/form-data", b"no boundary at all"),
    ("application/x-www-form-urlencoded", b"\xff\xfe=\xff&csrf=%ZZ"),
    ("application/x-www-form-urlencoded; charset=klingon", b"a=b"),
    ("application/x-www-form-urlencoded", b"&".join(b"f%d=1" % i for i in range(500))),
    ("application/json", b'{"target": "ops-wechat"}'),
    ("text/plain", b"\x00" * 1000),
]


@pytest.mark.parametrize(("content_type", "body"), BODIES)
def test_odd_bodies_are_refused_not_crashed_on(
    console_service: ConsoleService, content_type: str, body: bytes
) -> None:
    service = console_service
    before = len(service.logs.records)
    for path in ("/ui/playground", "/ui/dead-letters/retry"):
        status, _, _ = service.request(
            "POST",
            path,
            data=body,
            headers={**BASIC, **origin(service), "Content-Type": content_type},
        )
        assert status in (400, 403), (path, status)
    no_traceback(service, before)
