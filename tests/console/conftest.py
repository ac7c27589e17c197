"""The console's test service: sheepdog with every kind of secret a sentinel, on each backend.

One service per backend and module, served on a loop of its own (:class:`LoopThread`), with a
WeChat robot to deliver to and an upstream whose known traffic fills the spend ledger; and one
headless Chromium (Debian's ``chromium``) for the browser tests, driven by Playwright's sync API
from the test's thread. ``$SHEEPDOG_SCREENSHOTS`` names a directory to save each page's
screenshot in (``scripts/screenshots`` writes docs/console/).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import openai
import pytest
from prometheus_client import CollectorRegistry

from bridge import BRIDGE
from proxy import RELAY
from sheepdog.app import create_app
from sheepdog.config import parse_config
from tests.bridge.conftest import make_payload
from tests.faults.background import LoopThread, Served
from tests.faults.conftest import LogRecorder
from tests.peers.upstream import FakeUpstream
from tests.peers.wechat import WeChatRobot
from tests.support.postgres import PASSWORD as DATABASE_PASSWORD
from tests.support.postgres import PostgresServer

UPSTREAM_KEY: Final = "SENTINEL-console-upstream-key-5e2a"
CLIENT_A_KEY: Final = "SENTINEL-console-client-a-7b1c"
CLIENT_B_KEY: Final = "SENTINEL-console-client-b-0d9f"
BEARER: Final = "SENTINEL-console-bearer-4a6e"
BASIC_USER: Final = "operator"
BASIC_PASSWORD: Final = "SENTINEL-console-basic-password-93c1"
WECHAT_KEY: Final = "SENTINEL-console-wechat-key-2f8d"
DINGTALK_TOKEN: Final = "SENTINEL-console-dingtalk-token-61b0"
DINGTALK_SECRET: Final = "SENTINEL-console-dingtalk-secret-c4e7"
FEISHU_HOOK: Final = "SENTINEL-console-feishu-hook-8a3d"
SLACK_TOKEN: Final = "SENTINEL-console-slack-token-e5f2"
SMTP_PASSWORD: Final = "SENTINEL-console-smtp-password-17aa"
SENTINELS: Final = {
    "upstream api_key": UPSTREAM_KEY,
    "client key a": CLIENT_A_KEY,
    "client key b": CLIENT_B_KEY,
    "bearer token": BEARER,
    "basic password": BASIC_PASSWORD,
    "WeChat robot key": WECHAT_KEY,
    "DingTalk access token": DINGTALK_TOKEN,
    "DingTalk signing secret": DINGTALK_SECRET,
    "Feishu hook id": FEISHU_HOOK,
    "Slack webhook token": SLACK_TOKEN,
    "SMTP password": SMTP_PASSWORD,
    "database password": DATABASE_PASSWORD,
}
BASIC: Final = {
    "Authorization": "Basic "
    + base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode("ascii")
}
BEARER_AUTH: Final = {"Authorization": f"Bearer {BEARER}"}

# The known traffic: gpt-4.1 at $2 input, $0.50 cache read, $8 output per million tokens.
PROMPT_TOKENS: Final = 1000
CACHED_TOKENS: Final = 200
COMPLETION_TOKENS: Final = 500
REQUEST_USD: Final = (
    (PROMPT_TOKENS - CACHED_TOKENS) * 2.0 + CACHED_TOKENS * 0.5 + COMPLETION_TOKENS * 8.0
) / 1e6
REQUEST_CACHE_SAVINGS_USD: Final = CACHED_TOKENS * (2.0 - 0.5) / 1e6
TRAFFIC: Final = {"team-a": 3, "team-b": 2}
"""gpt-4.1 requests per client; team-b also sends one for a model without a price."""
UNPRICED_MODEL: Final = "mystery-model-x"
BUDGET_A: Final = 0.02

CHROMIUM: Final = "/usr/bin/chromium"
# Chromium's background connections are refused on this closed network: turn them off.
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class ConsoleService:
    backend: str
    served: Served
    thread: LoopThread
    robot: WeChatRobot
    upstream: FakeUpstream
    logs: LogRecorder

    @property
    def base_url(self) -> str:
        return self.served.base_url

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request, redirects not followed; the status, body and headers of the answer."""

        async def call() -> tuple[int, bytes, dict[str, str]]:
            session = self.served.session
            assert session is not None
            body = io.BytesIO(data) if data is not None else None  # large ones too, unwarned
            async with session.request(
                method, self.base_url + path, data=body, headers=headers, allow_redirects=False
            ) as response:
                return response.status, await response.read(), dict(response.headers)

        return self.thread.run(call())

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        return self.request("GET", path, headers=headers)

    def post(
        self, path: str, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        return self.request(
            "POST",
            path,
            data=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        )

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until nothing waits in the outbox (deliveries an earlier test began are done)."""
        outbox = self.served.app[BRIDGE].outbox
        deadline = time.monotonic() + timeout
        while any(stats.waiting for stats in self.served.call(outbox.stats).values()):
            assert time.monotonic() < deadline, "the outbox did not empty"
            time.sleep(0.05)

    def alert(self, payload: dict[str, Any], target: str = "ops-wechat") -> int:
        status, body, _ = self.request(
            "POST", f"/alerts/{target}", data=json.dumps(payload).encode(), headers=BEARER_AUTH
        )
        assert status == 200, body
        return int(json.loads(body)["id"])


def _config(workdir: Path, robot: WeChatRobot, upstream: FakeUpstream, url: str | None) -> Any:
    document: dict[str, Any] = {
        "state_dir": str(workdir / "state"),
        "auth": {
            "bearer_tokens": [BEARER],
            "basic": {"username": BASIC_USER, "password": BASIC_PASSWORD},
        },
        "proxy": {
            "upstream": {"base_url": upstream.base_url, "api_key": UPSTREAM_KEY},
            "clients": [
                {"name": "team-a", "key": CLIENT_A_KEY, "monthly_budget_usd": BUDGET_A},
                {"name": "team-b", "key": CLIENT_B_KEY, "monthly_budget_usd": 50},
            ],
            "pricing": {"gpt-4.1": {"input": 2.0, "output": 8.0, "cache_read": 0.5}},
        },
        "bridge": {
            "retry": {"initial_seconds": 0.05, "max_seconds": 0.2},
            "watchdog": {"target": "ops-wechat", "silence_seconds": 3600},
            "targets": {
                "ops-wechat": {
                    "type": "wechat",
                    "url": robot.url(WECHAT_KEY),
                    "rate_per_minute": 0,
                    "mentions": {"userids": ["zhangsan"]},
                },
                "ops-dingtalk": {
                    "type": "dingtalk",
                    "url": f"http://127.0.0.1:9/robot/send?access_token={DINGTALK_TOKEN}",
                    "secret": DINGTALK_SECRET,
                },
                "ops-feishu": {
                    "type": "feishu",
                    "url": f"http://127.0.0.1:9/open-apis/bot/v2/hook/{FEISHU_HOOK}",
                },
                "ops-slack": {
                    "type": "slack",
                    "url": f"http://127.0.0.1:9/services/T0/B0/{SLACK_TOKEN}",
                },
                "ops-email": {
                    "type": "email",
                    "smtp": {
                        "host": "127.0.0.1",
                        "port": 9,
                        "username": "alertmanager",
                        "password": SMTP_PASSWORD,
                    },
                    "from": "sheepdog@example.com",
                    "to": ["oncall@example.com"],
                },
            },
        },
    }
    if url is not None:
        document["database"] = {"url": url, "lease_seconds": 2}
    return parse_config(document, env={})


def _spend(service: ConsoleService) -> None:
    """The known traffic, through the proxy with the official SDK, then written to the ledger."""
    for client, key in (("team-a", CLIENT_A_KEY), ("team-b", CLIENT_B_KEY)):
        sdk = openai.OpenAI(base_url=f"{service.base_url}/v1", api_key=key, max_retries=0)
        for _ in range(TRAFFIC[client]):
            sdk.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": "status?"}]
            )
        if client == "team-b":
            sdk.chat.completions.create(
                model=UNPRICED_MODEL, messages=[{"role": "user", "content": "status?"}]
            )
        sdk.close()
    service.served.call(service.served.app[RELAY].ledger.flush)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def console_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleService]:
    """sheepdog on each backend, with the known spend in its ledger, for the whole module."""
    url = None
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.database_url()
    workdir = tmp_path_factory.mktemp(f"console-{request.param}")
    thread = LoopThread()
    logs = LogRecorder.attached(logging.INFO)
    robot = thread.run(WeChatRobot(keys=[WECHAT_KEY], per_minute=1_000_000).start())
    upstream = thread.run(FakeUpstream().start())
    upstream.script(
        "gpt-4.1",
        prompt_tokens=PROMPT_TOKENS,
        completion_tokens=COMPLETION_TOKENS,
        cached_tokens=CACHED_TOKENS,
    )
    config = _config(workdir, robot, upstream, url)

    async def build() -> Served:
        return Served(thread, create_app(config, registry=CollectorRegistry()))

    served = thread.run(build()).start()
    service = ConsoleService(request.param, served, thread, robot, upstream, logs)
    try:
        _spend(service)
        yield service
    finally:
        served.stop()
        thread.run(robot.close())
        thread.run(upstream.close())
        thread.close()
        logs.detach()


def firing(name: str, summary: str = "disk almost full") -> dict[str, Any]:
    """A one-alert firing payload named ``name`` (unique per test, on a shared service)."""
    return make_payload(1, name=name, summary=summary)


# The browser ---------------------------------------------------------------------------------


def why_no_browser() -> str | None:
    if shutil.which(CHROMIUM) is None:
        return (
            "Debian's chromium is not installed (scripts/setup --test installs it where apt is "
            "available)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module, test_browser.py, the only one using it (each test
    opens a context of its own). Not for the session: between its calls Playwright's sync API
    leaves its event loop marked running in the main thread, which every asyncio test after it
    would find and fail on; it is stopped before the next module begins.

    Where apt is available scripts/setup --test installs both, so a missing one is a failure
    there; elsewhere the browser tests are skipped, and say so."""
    reason = why_no_browser()
    if reason is not None:
        if shutil.which("apt-get") is not None:
            pytest.fail(f"the console's browser tests cannot run: {reason}", pytrace=False)
        pytest.skip(f"NOT TESTED IN A BROWSER on this machine (no apt-get): {reason}")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        # Playwright starts it with a fresh, temporary profile (user-data dir) of its own.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


def screenshot(page: Any, name: str) -> None:
    """Save ``page`` as ``$SHEEPDOG_SCREENSHOTS/<name>.png`` when that is set."""
    directory = os.environ.get("SHEEPDOG_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)
