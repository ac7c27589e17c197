"""Fuzzing ``POST /alerts/{target}`` with hypothesis: malformed and merely strange payloads.

Valid Alertmanager payloads are mutated: fields deleted or given wrong types and nulls, strings
that templates and channels find hard (markup, template syntax, control characters, unpaired
surrogate escapes, 5,000 characters), hundreds of labels, nesting 60 levels deep; and raw bodies
that are no JSON at all or not UTF-8. sheepdog must answer 200 or a 400 whose message names the
field, never a 500 nor a traceback in its log; and everything it accepted must then reach the
local WeChat, Slack and SMTP peers, every message within the channels' limits.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sheepdog.config import parse_config
from tests.bridge.conftest import ALERT_TOKEN, make_payload
from tests.faults.background import Served
from tests.faults.conftest import FIGURES, LogRecorder
from tests.peers.slack import SlackWebhook
from tests.peers.smtp import SmtpServer
from tests.peers.wechat import WeChatRobot
from tests.support.fuzzing import examples
from tests.support.loop import LoopThread
from tests.support.polling import wait_until
from tests.support.strategies import documents, nested

# The service runs on another thread meanwhile, and the email notifier's Message-ID comes from
# the global random module: hypothesis sees that as a strategy using it.
pytestmark = [
    pytest.mark.fuzz,
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]

TARGETS = ("ops-wechat", "ops-slack", "ops-email")
HEADERS = {"Authorization": f"Bearer {ALERT_TOKEN}", "Content-Type": "application/json"}
FUZZ = settings(
    max_examples=examples(300),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TRICKY = [
    "",
    " ",
    "\ud800",
    "a\udfffb",
    "\x00",
    "\x1b[31m",
    "\u202eevil",
    "<b>&amp;</b>",
    "</font>",
    "{{ 7*7 }}",
    "{% raw %}",
    "*bold*",
    "`code`",
    "**",
    "> quote",
    "🔥" * 20,
    "x" * 5000,
    "0001-01-01T00:00:00Z",
    "2026-13-45T99:99:99Z",
    "firing",
    "resolved",
    "4",
    "\r\n\r\n",
    "\\",
    '"',
    "%s%n",
    "@all",
    "<@U123>",
    "<!channel>",
    "13800000000, @all",
    "中文告警" * 50,
    "\u2028",
    "\ufeff",
]
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=20)
TEXT = st.one_of(st.text(max_size=40), st.sampled_from(TRICKY))
JSON = documents(TEXT, max_size=4, max_leaves=12)
DEEP = st.integers(min_value=1, max_value=60).map(nested)
WRONG = st.one_of(JSON, DEEP)


@dataclass
class Service:
    served: Served
    registry: CollectorRegistry
    state_dir: Path
    robot: WeChatRobot
    slack: SlackWebhook
    smtp: SmtpServer
    logs: LogRecorder
    accepted: dict[int, str] = field(default_factory=dict)
    """Rows accepted: outbox id → target."""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """sheepdog with WeChat, Slack and email targets on local peers, for the whole module."""
    workdir = tmp_path_factory.mktemp("fuzz-alerts")
    thread = LoopThread()
    logs = LogRecorder.attached(logging.INFO)
    robot = thread.run(WeChatRobot(keys=["fuzz-key"], per_minute=1_000_000).start())
    slack = thread.run(SlackWebhook().start())
    smtp = SmtpServer(workdir).start()
    config = parse_config(
        {
            "state_dir": str(workdir / "state"),
            "auth": {"bearer_tokens": [ALERT_TOKEN]},
            "bridge": {
                "targets": {
                    "ops-wechat": {
                        "type": "wechat",
                        "url": robot.url(),
                        "rate_per_minute": 0,
                        "mentions": {"userids": ["oncall"], "mobiles": ["13800000000"]},
                    },
                    "ops-slack": {"type": "slack", "url": slack.url, "rate_per_minute": 0},
                    "ops-email": {
                        "type": "email",
                        "rate_per_minute": 0,
                        "smtp": smtp.smtp_section(),
                        "from": "sheepdog@example.com",
                        "to": ["oncall@example.com"],
                    },
                },
                "retry": {"initial_seconds": 0.05, "max_seconds": 0.2},
            },
        },
        env={},
    )
    served = Served.create(thread, config)
    try:
        yield Service(served, served.registry, workdir / "state", robot, slack, smtp, logs)
    finally:
        served.stop()
        thread.run(robot.close())
        thread.run(slack.close())
        smtp.stop()
        thread.close()
        logs.detach()


def post(service: Service, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST a body; fails on a 5xx or on any traceback logged while it was handled."""
    before = len(service.logs.records)
    status, raw, _ = service.served.request("POST", f"/alerts/{target}", data=body, headers=HEADERS)
    answer = json.loads(raw)
    assert status in (200, 400), (status, answer)
    new = service.logs.records[before:]
    assert not [r for r in new if r.exc_info is not None or r.levelno >= logging.ERROR], [
        r.getMessage() for r in new
    ]
    if status == 200 and target != "watchdog":  # a heartbeat is stored, but not in the outbox
        service.accepted[answer["id"]] = target
    return status, answer


# Structured mutations ---------------------------------------------------------------------------


def _paths(node: Any, where: str = "") -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else key
            found.append(path)
            found += _paths(value, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            path = f"{where}[{index}]"
            found.append(path)
            found += _paths(value, path)
    return found


_STEP = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _locate(document: Any, path: str) -> tuple[Any, str | int]:
    """The container holding ``path`` and the key or index in it."""
    steps: list[str | int] = [name if name else int(index) for name, index in _STEP.findall(path)]
    node = document
    for step in steps[:-1]:
        node = node[step]
    return node, steps[-1]


def _related(field: str, path: str) -> bool:
    """Whether the field an error names and a mutated path are the same, or one holds the other."""
    return any(
        a == b or a.startswith(b + ".") or a.startswith(b + "[")
        for a, b in ((field, path), (path, field))
    )


_SERIAL = itertools.count()


@st.composite
def mutated_payloads(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A valid payload changed in 0 to 3 ways, as JSON text, and the paths that were changed."""
    serial = next(_SERIAL)  # a new group each time: no payload is a retry of an earlier one
    document = make_payload(
        draw(st.integers(min_value=1, max_value=3)),
        status=draw(st.sampled_from(["firing", "resolved"])),
        name=draw(st.sampled_from(["Fuzzed", "Fuzz_B", "Fuzz中文"])),
        summary=draw(TEXT),
        group=f'{{}}:{{fuzz="{serial}"}}',
        fingerprint_prefix=f"fuzz{serial}-",
    )
    changed: list[str] = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        kind = draw(
            st.sampled_from(["delete", "replace", "add", "labels", "strings", "strings", "root"])
        )
        if "body" in changed:
            break  # the whole document was replaced: nothing of the payload is left to change
        paths = [p for p in _paths(document) if _reachable(document, p)]
        if kind == "root" or not paths:
            document = draw(WRONG)
            changed.append("body")
            continue
        if (
            kind == "labels"
            and isinstance(document, dict)
            and isinstance(document.get("alerts"), list)
            and document["alerts"]
            and isinstance(document["alerts"][0], dict)
        ):
            labels = draw(st.dictionaries(NAMES, TEXT, min_size=50, max_size=400))
            document["alerts"][0]["labels"] = {"alertname": "ManyLabels", **labels}
            continue  # a valid change
        if kind == "strings":
            strings = [p for p in paths if isinstance(_get(document, p), str)]
            if strings:
                path = draw(st.sampled_from(strings))
                container, key = _locate(document, path)
                container[key] = draw(TEXT)
                changed.append(path)
            continue
        path = draw(st.sampled_from(paths))
        container, key = _locate(document, path)
        if kind == "delete":
            if isinstance(container, dict):
                del container[key]
            else:  # the later items move up: the whole list counts as changed
                container.pop(key)
                path = path.rpartition("[")[0] or "body"
        elif kind == "replace":
            container[key] = draw(WRONG)
        elif isinstance(container[key], dict):
            name = draw(NAMES)
            container[key][name] = draw(WRONG)
            path = f"{path}.{name}"
        else:
            continue
        changed.append(path)
    text = json.dumps(document, ensure_ascii=draw(st.booleans()))
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate cannot be written raw: escape it, as JSON may
        body = json.dumps(document).encode("ascii")
    return body, changed


def _reachable(document: Any, path: str) -> bool:
    """Whether ``path`` leads back to its value (keys with dots or brackets do not)."""
    try:
        _get(document, path)
    except (KeyError, IndexError, TypeError, ValueError):
        return False
    return True


def _get(document: Any, path: str) -> Any:
    container, key = _locate(document, path)
    return container[key]


@FUZZ
@given(case=mutated_payloads(), target=st.sampled_from(TARGETS))
def test_mutated_payloads_get_200_or_a_400_naming_the_field(
    service: Service, case: tuple[bytes, list[str]], target: str
) -> None:
    """Deleted fields, wrong types, nulls, odd strings, many labels, deep nesting: 200 or 400."""
    body, changed = case
    FIGURES.fuzzed["POST /alerts: mutated Alertmanager payloads"] += 1
    status, answer = post(service, target, body)
    if status == 400:
        error = answer["error"]
        where, _, message = error.partition(": ")
        assert where and message, error
        assert changed, f"an unchanged payload was refused: {error}"
        # A replaced root may be refused anywhere; else the field is one that was changed.
        assert "body" in changed or any(_related(where, path) for path in changed), (error, changed)


@settings(FUZZ, max_examples=100)
@given(case=mutated_payloads())
def test_mutated_heartbeats_get_200_or_a_400_naming_the_field(
    service: Service, case: tuple[bytes, list[str]]
) -> None:
    """The same mutations posted to the reserved /alerts/watchdog: 200 (a heartbeat, or a
    resolved payload ignored) or a 400 naming a changed field; nothing goes to the outbox."""
    body, changed = case
    FIGURES.fuzzed["POST /alerts/watchdog: mutated Alertmanager payloads"] += 1
    status, answer = post(service, "watchdog", body)
    if status == 200:
        assert answer["status"] in ("heartbeat", "ignored"), answer
        assert "id" not in answer
    else:
        where = answer["error"].partition(": ")[0]
        assert "body" in changed or any(_related(where, path) for path in changed), answer


RAW = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=500).map(lambda text: text.encode()),
    JSON.filter(lambda value: not isinstance(value, dict)).map(
        lambda value: json.dumps(value).encode()
    ),
    st.tuples(st.integers(0, 600), st.binary(min_size=1, max_size=8)).map(
        lambda cut: (lambda raw: raw[: cut[0]] + b"\xff" + cut[1] + raw[cut[0] :])(
            json.dumps(make_payload(2)).encode()
        )
    ),
    st.integers(0, 700).map(lambda cut: json.dumps(make_payload(2)).encode()[:cut]),
    # Past any parser's recursion limit, and a number longer than Python converts.
    st.sampled_from([40, 5_000, 200_000]).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(4_301, 10_000).map(lambda digits: b'{"version": 1' + b"0" * digits + b"}"),
)


@FUZZ
@given(body=RAW, target=st.sampled_from(TARGETS))
def test_raw_bodies_that_are_no_payload_get_400(service: Service, body: bytes, target: str) -> None:
    """Bytes, text, invalid UTF-8, cut-off JSON and JSON that is no object: 400 naming why."""
    FIGURES.fuzzed["POST /alerts: raw bodies (bytes, invalid UTF-8, cut JSON)"] += 1
    status, answer = post(service, target, body)
    assert status == 400, answer
    assert answer["error"].partition(": ")[0], answer


def test_after_the_fuzzing_the_service_is_healthy_and_delivered_everything(
    service: Service,
) -> None:
    """Still healthy and ready; every accepted notification was delivered, none dead or stuck."""
    assert service.served.request("GET", "/-/healthy")[0] == 200
    assert service.served.request("GET", "/-/ready")[0] == 200
    assert service.accepted, "the fuzzing accepted nothing"

    def statuses() -> dict[int, tuple[str, str | None]]:
        with closing(sqlite3.connect(service.state_dir / "sheepdog.db")) as conn:
            return {
                row_id: (status, error)
                for row_id, status, error in conn.execute(
                    "SELECT id, status, last_error FROM outbox_notifications"
                )
            }

    with contextlib.suppress(AssertionError):  # what is left unsent is asserted and counted below
        wait_until(
            lambda: all(status == "sent" for status, _ in statuses().values()),
            timeout=60,
            what="every accepted notification sent",
        )
    unsent = {row: value for row, value in statuses().items() if value[0] != "sent"}
    assert unsent == {}
    assert not [r for r in service.logs.records if r.exc_info is not None]
    assert all(
        len(m.content.encode()) <= 4096
        for m in service.robot.messages
        if m.body["msgtype"] == "markdown"
    )
    assert service.robot.errcodes() == []
    assert [r for r in service.slack.replies if r[0] != 200] == []
    counts = {target: list(service.accepted.values()).count(target) for target in TARGETS}
    assert min(counts.values()) > 0, counts
    FIGURES.notifications(accepted=len(service.accepted), lost=len(unsent))
