"""The console in a real browser (headless Chromium), as an operator uses it, on both backends.

Log in with the basic-auth credentials the browser is asked for; see a dead letter and send it
again with its Retry button until the WeChat robot has it; render a pasted payload in the
playground; download the month's CSV and check its figures against the known traffic. With
``$SHEEPDOG_SCREENSHOTS`` set, each page is saved as a screenshot (``scripts/screenshots``).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.bridge.conftest import fixture_payload
from tests.console.conftest import (
    BASIC_PASSWORD,
    BASIC_USER,
    BUDGET_A,
    CACHED_TOKENS,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    REQUEST_CACHE_SAVINGS_USD,
    REQUEST_USD,
    SENTINELS,
    TRAFFIC,
    UNPRICED_MODEL,
    ConsoleService,
    firing,
    screenshot,
)
from tests.peers.wechat import Answer

pytestmark = pytest.mark.slow


@pytest.fixture
def page(browser: Any, console_service: ConsoleService) -> Iterator[Any]:
    """A logged-in tab: the browser answers the Basic challenge with the configured login."""
    context = browser.new_context(
        base_url=console_service.base_url,
        http_credentials={"username": BASIC_USER, "password": BASIC_PASSWORD},
        viewport={"width": 1100, "height": 760},
        accept_downloads=True,
    )
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    try:
        yield tab
    finally:
        context.close()


def no_sentinel(html: str, where: str) -> None:
    leaked = [name for name, secret in SENTINELS.items() if secret in html]
    assert leaked == [], f"{leaked} in {where}"


def wait_until(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_browser_with_a_wrong_password_gets_401_and_the_basic_challenge(
    browser: Any, console_service: ConsoleService
) -> None:
    """A wrong login: the page is the 401 explaining how to log in, never the console. (With no
    login at all headless Chromium would open the login dialog: HTTP-level tests cover that.)"""
    context = browser.new_context(
        base_url=console_service.base_url,
        http_credentials={"username": BASIC_USER, "password": "not-the-password"},
    )
    try:
        tab = context.new_page()
        response = tab.goto("/ui/")
        assert response is not None and response.status == 401
        assert response.headers["www-authenticate"].startswith("Basic ")
        assert "Log in" in tab.content()
        assert "Targets" not in tab.title()
    finally:
        context.close()


def test_a_dead_letter_is_seen_retried_and_delivered_to_the_robot(
    page: Any, console_service: ConsoleService
) -> None:
    """The robot refuses the key once (errcode 93000, permanent): a dead letter. The targets
    page counts it, the dead-letters page shows its reason, Retry sends it, the robot has it."""
    service = console_service
    name = f"ConsoleRetry{service.backend.title()}"
    service.settle()
    service.robot.script(Answer(errcode=93000))
    row_id = service.alert(firing(name))
    page.goto("/ui/")
    wait_until(
        lambda: page.reload() and "invalid_key" in page.inner_text("table.targets"),
        "the dead letter on the targets page",
    )
    row = page.locator("table.targets tr", has_text="ops-wechat")
    assert row.locator("td[data-label=Dead]").inner_text().strip() != "0"
    screenshot(page, "targets")
    page.click("text=Dead letters")
    letter = page.locator(f"#letter-{row_id}")
    assert name in letter.inner_text()
    assert "invalid_key" in letter.locator("td[data-label=Reason]").inner_text()
    screenshot(page, "dead-letters")
    no_sentinel(page.content(), "the dead letters page")
    letter.get_by_role("button", name="Retry").click()
    status = page.get_by_role("status")
    assert f"#{row_id}" in status.inner_text()
    assert "Queued again" in status.inner_text()
    wait_until(
        lambda: any(name in message.content for message in service.robot.messages),
        "the retried notification at the robot",
    )
    page.goto("/ui/dead-letters")
    assert page.locator(f"#letter-{row_id}").count() == 0


def test_a_pasted_payload_renders_with_a_preview_and_a_bad_one_shows_the_400(
    page: Any, console_service: ConsoleService
) -> None:
    """A real Alertmanager payload pasted for the WeChat target: the JSON that would be sent
    and its markdown rendered; a payload missing its alerts: the receiver's 400, word for word."""
    service = console_service
    payload = fixture_payload("firing-one.json")
    page.goto("/ui/playground")
    page.select_option("select[name=target]", "ops-wechat")
    page.check("input[value=pasted]")
    page.fill("textarea[name=payload]", json.dumps(payload, indent=2, ensure_ascii=False))
    page.get_by_role("button", name="Render").click()
    rendering = page.locator("#rendering")
    sent = json.loads(rendering.locator("pre.sent").first.inner_text())
    assert sent["msgtype"] == "markdown"
    alertname = payload["alerts"][0]["labels"]["alertname"]
    assert alertname in sent["markdown"]["content"]
    preview = rendering.locator(".preview").first
    assert alertname in preview.inner_text()
    assert preview.locator("span.md-mention", has_text="@zhangsan").count() == 1
    # The preview made HTML of the markdown (a heading, a coloured word), and nothing else.
    assert preview.locator(".md-h").count() >= 1
    assert preview.locator("script, img, iframe").count() == 0
    screenshot(page, "playground")

    bad = dict(payload)
    del bad["alerts"]
    page.check("input[value=pasted]")
    page.fill("textarea[name=payload]", json.dumps(bad))
    page.get_by_role("button", name="Render").click()
    answer = page.locator("#answer")
    status, body, _ = service.request(
        "POST",
        "/alerts/ops-wechat",
        data=json.dumps(bad).encode(),
        headers={"Authorization": "Bearer " + SENTINELS["bearer token"]},
    )
    assert status == 400
    assert "400" in answer.inner_text()
    assert json.loads(answer.locator("pre.answer").inner_text()) == json.loads(body)


def test_the_spend_page_and_its_csv_match_the_known_traffic(
    page: Any, console_service: ConsoleService, tmp_path: Any
) -> None:
    """team-a spent 3 requests' worth of its $0.02 budget (a bar at 85%); the CSV downloaded
    from the page has every figure the traffic makes, and names the unpriced model."""
    page.goto("/ui/spend")
    clients = page.locator("table.clients")
    team_a = clients.locator("tr", has_text="team-a")
    expected_a = TRAFFIC["team-a"] * REQUEST_USD
    meter = team_a.locator("meter")
    assert float(meter.get_attribute("value")) == pytest.approx(expected_a / BUDGET_A)
    assert f"{expected_a / BUDGET_A:.0%}" in team_a.inner_text()
    assert UNPRICED_MODEL in page.locator("table.unpriced").inner_text()
    screenshot(page, "spend")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    download = download_info.value
    assert download.suggested_filename.startswith("sheepdog-usage-")
    path = tmp_path / "usage.csv"
    download.save_as(str(path))
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    by = {(row["group"], row["client"], row["model"]): row for row in rows}
    requests = sum(TRAFFIC.values())
    model = by[("model", "", "gpt-4.1")]
    assert int(model["requests"]) == requests
    assert int(model["input_tokens"]) == requests * PROMPT_TOKENS
    assert int(model["output_tokens"]) == requests * COMPLETION_TOKENS
    assert int(model["cache_read_tokens"]) == requests * CACHED_TOKENS
    assert float(model["usd"]) == pytest.approx(requests * REQUEST_USD, abs=1e-6)
    assert float(model["cache_savings_usd"]) == pytest.approx(
        requests * REQUEST_CACHE_SAVINGS_USD, abs=1e-6
    )
    for client, count in TRAFFIC.items():
        assert float(by[("client", client, "")]["usd"]) == pytest.approx(
            count * REQUEST_USD, abs=1e-6
        )
    assert int(by[("unpriced", "", UNPRICED_MODEL)]["requests"]) == 1
    assert int(by[("total", "", "")]["requests"]) == requests + 1


def test_every_page_reads_well_on_a_phone(browser: Any, console_service: ConsoleService) -> None:
    """At 390 px wide no page scrolls sideways: tables become labelled cards."""
    context = browser.new_context(
        base_url=console_service.base_url,
        http_credentials={"username": BASIC_USER, "password": BASIC_PASSWORD},
        viewport={"width": 390, "height": 844},
        device_scale_factor=1,
    )
    try:
        tab = context.new_page()
        pages = {
            "/ui/": "targets",
            "/ui/dead-letters": "dead-letters",
            "/ui/playground": "playground",
            "/ui/spend": "spend",
        }
        for path, name in pages.items():
            tab.goto(path)
            width = tab.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
            no_sentinel(tab.content(), path)
            screenshot(tab, f"{name}-phone")
    finally:
        context.close()
