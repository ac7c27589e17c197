"""The console over HTTP, on both backends: credentials, forms, headers, secrets, answers."""

from __future__ import annotations

import html
import json
import re
import time
from typing import Any

import pytest

from sheepdog.core.runtime import RUNTIME
from tests.console.conftest import (
    BASIC,
    BEARER_AUTH,
    SENTINELS,
    ConsoleService,
    firing,
)
from tests.peers.wechat import Answer

pytestmark = pytest.mark.slow

PAGES = ("/ui/", "/ui/dead-letters", "/ui/playground", "/ui/spend", "/ui/spend.csv")
FORMS = ("/ui/dead-letters/retry", "/ui/playground")
TARGETS = ("ops-wechat", "ops-dingtalk", "ops-feishu", "ops-slack", "ops-email")
_TOKEN = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def token(service: ConsoleService, headers: dict[str, str] = BASIC) -> str:
    status, body, _ = service.get("/ui/playground", headers)
    assert status == 200
    found = _TOKEN.search(body.decode())
    assert found is not None
    return found.group(1)


def origin(service: ConsoleService) -> dict[str, str]:
    return {"Origin": service.base_url, "Sec-Fetch-Site": "same-origin"}


def leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [name for name, secret in SENTINELS.items() if secret in text]


def dead_letter(service: ConsoleService, name: str) -> int:
    """A notification the robot refuses for good (errcode 93000): a dead letter."""
    service.settle()
    service.robot.script(Answer(errcode=93000))
    row_id = service.alert(firing(name))
    deadline = time.monotonic() + 20
    while f'id="letter-{row_id}"' not in service.get("/ui/dead-letters", BASIC)[1].decode():
        assert time.monotonic() < deadline, "no dead letter"
        time.sleep(0.05)
    return row_id


def test_without_credentials_every_page_and_form_is_401(console_service: ConsoleService) -> None:
    """No credentials, a wrong password or an unknown bearer token: 401 with a Basic challenge
    (the browser asks for the login), on every page and every form, and nothing of the state."""
    wrong = [
        {},
        {"Authorization": "Basic b3BlcmF0b3I6d3Jvbmc="},
        {"Authorization": "Bearer not-a-token"},
    ]
    for headers in wrong:
        for path in PAGES:
            status, body, answer = console_service.get(path, headers)
            assert status == 401, (path, headers)
            assert answer["WWW-Authenticate"].startswith("Basic realm=")
            assert b"ops-wechat" not in body and b"team-a" not in body
        for path in FORMS:
            status, _, _ = console_service.post(
                path, {"all": "1"}, {**headers, **origin(console_service)}
            )
            assert status == 401, (path, headers)


def test_a_bearer_token_works_for_scripts(console_service: ConsoleService) -> None:
    """A script with a bearer token of auth reads the CSV and retries with the form token."""
    status, body, headers = console_service.get("/ui/spend.csv", BEARER_AUTH)
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    assert body.startswith(b"month,group,client,model,")
    form = {"csrf": token(console_service, BEARER_AUTH), "all": "1"}
    status, _, answer = console_service.post("/ui/dead-letters/retry", form, BEARER_AUTH)
    assert status == 303
    assert answer["Location"].startswith("/ui/dead-letters?queued=")


def test_every_answer_has_the_security_headers_and_no_script(
    console_service: ConsoleService,
) -> None:
    """CSP without scripts or other origins, no framing, no caching of state, on every page,
    the 401 and 404 included; no page has a script of any kind."""
    answers = [console_service.get(path, BASIC) for path in PAGES]
    answers += [console_service.get("/ui/", {}), console_service.get("/ui/nothing-here", BASIC)]
    for status, body, headers in answers:
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src" not in csp  # default-src 'none': no script at all
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert b"<script" not in body.lower(), status
        assert (
            b"http://" not in body.split(b"</head>")[0]
            and b"https://" not in body.split(b"</head>")[0]
        )
    status, _, headers = console_service.get("/ui/console.css", BASIC)
    assert status == 200 and headers["Content-Type"].startswith("text/css")


def test_a_post_without_the_form_token_or_from_another_origin_is_refused(
    console_service: ConsoleService,
) -> None:
    """Retry without a token, with a wrong one, with another site's Origin or Sec-Fetch-Site:
    403, and the dead letter stays dead; with the page's token from the same origin: queued."""
    service = console_service
    row_id = dead_letter(service, f"ConsoleCsrf{service.backend.title()}")
    good = token(service)
    same = origin(service)
    refused = [
        ({"id": str(row_id)}, same),
        ({"id": str(row_id), "csrf": "0" * 64}, same),
        ({"id": str(row_id), "csrf": good}, {"Origin": "http://evil.example"}),
        ({"id": str(row_id), "csrf": good}, {"Origin": "null"}),
        ({"id": str(row_id), "csrf": good}, {"Origin": f"http://127.0.0.1:{_other_port(service)}"}),
        ({"id": str(row_id), "csrf": good}, {"Sec-Fetch-Site": "cross-site"}),
        ({"id": str(row_id), "csrf": good}, {"Sec-Fetch-Site": "same-site"}),
    ]
    for form, headers in refused:
        status, body, _ = service.post("/ui/dead-letters/retry", form, {**BASIC, **headers})
        assert status == 403, (form, headers)
        assert b"Form refused" in body
        assert f'id="letter-{row_id}"' in service.get("/ui/dead-letters", BASIC)[1].decode()
    status, _, answer = service.post(
        "/ui/dead-letters/retry", {"id": str(row_id), "csrf": good}, {**BASIC, **same}
    )
    assert status == 303
    assert answer["Location"] == f"/ui/dead-letters?queued=1&ids={row_id}"


def _other_port(service: ConsoleService) -> int:
    port = int(service.base_url.rsplit(":", 1)[1])
    return port + 1 if port < 65535 else port - 1


def test_no_secret_appears_in_any_page_form_answer_or_csv(console_service: ConsoleService) -> None:
    """Every page, every target's rendering in the playground (signed DingTalk included), the
    CSV, a dead letter's reason, and the 401/403/404/400 pages: no sentinel secret anywhere,
    headers included."""
    service = console_service
    dead_letter(service, f"ConsoleSecrets{service.backend.title()}")
    answers = [service.get(path, BASIC) for path in PAGES]
    answers += [service.get(f"/ui/playground?target={name}", BASIC) for name in TARGETS]
    form_token = token(service)
    for name in TARGETS:
        answers.append(
            service.post(
                "/ui/playground",
                {"csrf": form_token, "target": name, "source": "sample"},
                {**BASIC, **origin(service)},
            )
        )
    answers += [
        service.get("/ui/", {}),
        service.post("/ui/playground", {"target": "ops-wechat"}, BASIC),
        service.get("/ui/nothing", BASIC),
        service.get("/ui/spend?month=13-2026", BASIC),
    ]
    for status, body, headers in answers:
        assert status < 500
        assert leaks(body) == [], (status, body[:200])
        assert leaks(json.dumps(headers)) == []
    rendered = answers[len(PAGES) + len(TARGETS) + 1][1].decode()  # the signed DingTalk target
    assert "DingTalk markdown" in rendered and "signed when sent" in rendered


def _answer_of(page: bytes) -> tuple[int, Any]:
    text = page.decode()
    status = re.search(r"would be answered <strong>(\d{3})</strong>", text)
    body = re.search(r'<pre class="answer">(.*?)</pre>', text, re.S)
    assert status is not None and body is not None, text[-2000:]
    return int(status.group(1)), json.loads(html.unescape(body.group(1)))


def test_a_bad_payload_is_answered_as_the_receiver_answers_it(
    console_service: ConsoleService,
) -> None:
    """Not JSON, not an object, a missing field, a wrong version, an unknown target, a payload
    over bridge.max_body_bytes: the playground shows the status and body POST /alerts gives."""
    service = console_service
    good = firing("ConsoleBad")
    cases = [
        ("ops-wechat", "{not json"),
        ("ops-wechat", "[1, 2]"),
        ("ops-wechat", json.dumps({k: v for k, v in good.items() if k != "alerts"})),
        ("ops-wechat", json.dumps({**good, "version": "3"})),
        ("ops-wechat", json.dumps({**good, "alerts": [{"status": "firing"}]})),
        ("no-such-target", json.dumps(good)),
        ("ops-wechat", json.dumps({**good, "pad": "x" * (4 * 1024 * 1024)})),
    ]
    form_token = token(service)
    for target, text in cases:
        status, page, _ = service.post(
            "/ui/playground",
            {"csrf": form_token, "target": target, "source": "pasted", "payload": text},
            {**BASIC, **origin(service)},
        )
        assert status == 200
        receiver_status, receiver_body, _ = service.request(
            "POST", f"/alerts/{target}", data=text.encode(), headers=BEARER_AUTH
        )
        assert receiver_status in (400, 404, 413)
        assert _answer_of(page) == (receiver_status, json.loads(receiver_body)), text[:80]


def test_the_playground_renders_the_sample_for_every_target(
    console_service: ConsoleService,
) -> None:
    """Each channel's rendering of the built-in sample; markdown channels with a preview."""
    for name in TARGETS:
        status, body, _ = console_service.get(f"/ui/playground?target={name}", BASIC)
        text = body.decode()
        assert status == 200
        assert f"message(s) to {name}" in text
        assert "LLMRelayHighErrorRate" in text
        has_preview = 'class="preview"' in text
        assert has_preview == (name in ("ops-wechat", "ops-dingtalk")), name


def test_the_targets_page_says_where_the_state_is(console_service: ConsoleService) -> None:
    """The SQLite directory, or the PostgreSQL server and database without user or password."""
    status, body, _ = console_service.get("/ui/", BASIC)
    assert status == 200
    config = console_service.served.app[RUNTIME].settings
    if console_service.backend == "sqlite":
        assert f"SQLite in {config.state_dir}" in body.decode()
    else:
        assert "state: postgresql://127.0.0.1:" in body.decode()
