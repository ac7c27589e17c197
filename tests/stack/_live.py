"""The whole stack, live: ``sheepdog serve``, the real Prometheus and Alertmanager run with the
repository's own config files, and local peers (OpenAI-compatible upstream, WeChat robot, Slack
webhook, DingTalk robot, Feishu bot, SMTP server) standing in for the outside world.

The configs are the repository's files, parsed and rewritten: addresses (compose service names,
the upstream relay, the SMTP server, the secret files) become loopback ones, and intervals and
``for:`` durations are shortened. Nothing else changes: every expression, label, route, matcher and
inhibit rule is the one that ships. alertmanager.yml has its optional DingTalk and Feishu blocks
uncommented, as a user enables them, and gets its SMTP settings the way the container does,
through alertmanager/render.sh.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.peers.dingtalk import DingTalkRobot
from tests.peers.feishu import FeishuBot
from tests.peers.slack import SlackWebhook
from tests.peers.smtp import SmtpServer
from tests.peers.upstream import FakeUpstream, Script
from tests.peers.wechat import WeChatRobot
from tests.stack._optional import enable
from tests.stack._procs import (
    REPO,
    AlertmanagerProcess,
    PrometheusProcess,
    free_port,
    rules_for_test,
)
from tests.support.loop import LoopThread
from tests.support.polling import wait_until
from tests.support.ports import closed_port
from tests.support.processes import SheepdogProcess

T = TypeVar("T")

CLIENT_NAME = "team-a"
CLIENT_KEY = "sk-team-a-e2e"
UPSTREAM_KEY = "sk-upstream-e2e"
ALERT_TOKEN = "alertmanager-e2e-token"
ROBOT_KEY = "robot-key"
# The optional robots, both signing.
DINGTALK_TOKEN = "dingtalk-e2e-token"
DINGTALK_SECRET = "SECdingtalk-e2e-secret"
FEISHU_HOOK = "feishu-e2e-hook"
FEISHU_SECRET = "feishu-e2e-secret"
# The SMTP account of .env, here the local SMTP server's (STARTTLS and AUTH required).
SMTP_SETTINGS = {
    "SMTP_HOST": "127.0.0.1",
    "SMTP_USERNAME": "alerts@example.com",
    "ALERT_EMAIL_FROM": "alerts@example.com",
    "ALERT_EMAIL_TO": "oncall@example.com",
}
SMTP_PASSWORD = "smtp-e2e-password"

# `for:` durations are divided by this (10m -> 2s, 5m -> 1s, at least 1s).
FOR_DIVISOR = 300
# Alertmanager's timers, wherever the routing tree sets them.
ROUTE_TIMERS = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "5m"}
SCRAPE_INTERVAL = "1s"
# The watchdog route sends the heartbeat again every WATCHDOG_REPEAT (1m as shipped), and
# sheepdog reports silence after WATCHDOG_SILENCE_SECONDS without one (600 as shipped): the
# same ratio of a few heartbeats, in seconds.
WATCHDOG_REPEAT = "2s"
WATCHDOG_SILENCE_SECONDS = 12
# How long Alertmanager goes on sending the heartbeat once Prometheus stops: Prometheus marks a
# firing alert valid for 4 x max(evaluation interval, resend delay) (here both SCRAPE_INTERVAL).
WATCHDOG_OUTLIVES_PROMETHEUS_SECONDS = 4


# ------------------------------------------------------------------------------------------------
# The repository's configs, rewritten for loopback and short timers


def substitute_addresses(tree: Any, addresses: dict[str, str], used: set[str]) -> Any:
    """``tree`` with every occurrence of each key of ``addresses`` in a string replaced."""
    if isinstance(tree, dict):
        return {key: substitute_addresses(value, addresses, used) for key, value in tree.items()}
    if isinstance(tree, list):
        return [substitute_addresses(item, addresses, used) for item in tree]
    if isinstance(tree, str):
        # One pass over the original text: a replacement is never scanned again, so a new
        # address (``127.0.0.1:5871``) cannot be mistaken for another key (``127.0.0.1:587``).
        pattern = re.compile("|".join(re.escape(old) for old in sorted(addresses, key=len)[::-1]))

        def replace(match: re.Match[str]) -> str:
            used.add(match.group(0))
            return addresses[match.group(0)]

        return pattern.sub(replace, tree)
    return tree


def _strings(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _strings(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _strings(item)
    elif isinstance(tree, str):
        yield tree


def _rewrite(path: Path, addresses: dict[str, str]) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    used: set[str] = set()
    rewritten: dict[str, Any] = substitute_addresses(doc, addresses, used)
    unused = set(addresses) - used
    assert not unused, f"{path.relative_to(REPO)} no longer mentions {sorted(unused)}"
    return rewritten


def prometheus_config(addresses: dict[str, str], rules_glob: str) -> dict[str, Any]:
    """prometheus/prometheus.yml with loopback addresses, scrapes and evaluations every second.

    Every target and the Alertmanager must end up on loopback: a test never reaches out.
    """
    config = _rewrite(REPO / "prometheus" / "prometheus.yml", addresses)
    config["global"]["scrape_interval"] = SCRAPE_INTERVAL
    config["global"]["evaluation_interval"] = SCRAPE_INTERVAL
    config["rule_files"] = [rules_glob]
    for job in config["scrape_configs"]:
        for key in ("scrape_interval", "scrape_timeout"):
            if key in job:
                job[key] = SCRAPE_INTERVAL
    targets = [
        target
        for section in [*config["scrape_configs"], *config["alerting"]["alertmanagers"]]
        for static in section.get("static_configs", [])
        for target in static["targets"]
    ]
    replacements = [
        relabel["replacement"]
        for job in config["scrape_configs"]
        for relabel in job.get("relabel_configs", [])
        if relabel.get("target_label") == "__address__"
    ]
    for address in [*targets, *replacements]:
        assert address.startswith(("127.0.0.1:", "http://127.0.0.1:")), (
            f"prometheus.yml: {address} is not substituted by a loopback address"
        )
    return config


def render_alertmanager_config(workdir: Path, settings: dict[str, str]) -> Path:
    """alertmanager/alertmanager.yml with its optional blocks uncommented, then .env's
    ``settings`` filled in by render.sh, as the container does before Alertmanager starts."""
    source = workdir / "alertmanager.yml"
    shipped = (REPO / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8")
    source.write_text(enable(shipped), encoding="utf-8")
    rendered = workdir / "alertmanager.rendered.yml"
    result = subprocess.run(
        ["/bin/sh", str(REPO / "alertmanager" / "render.sh"), str(source), str(rendered)],
        env={"PATH": "/usr/bin:/bin", **settings},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return rendered


def alertmanager_config(
    rendered: Path, addresses: dict[str, str], smtp_ca_file: Path | None = None
) -> dict[str, Any]:
    """The rendered alertmanager.yml posting to the test's sheepdog, mailing through the test's
    SMTP server (trusting ``smtp_ca_file``), with the test's secret files; every timer of the
    routing tree shortened."""
    config = _rewrite(rendered, addresses)

    def shorten(route: dict[str, Any]) -> None:
        for key, value in ROUTE_TIMERS.items():
            if key in route:
                route[key] = value
        if route.get("receiver") == "watchdog":
            route["repeat_interval"] = WATCHDOG_REPEAT
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    for receiver in config["receivers"]:
        for email in receiver.get("email_configs", []):
            if smtp_ca_file is not None:
                # per receiver: Alertmanager 0.25 has no global smtp_tls_config
                email["tls_config"] = {"ca_file": str(smtp_ca_file)}
        for webhook in receiver.get("webhook_configs", []):
            assert webhook["url"].startswith("http://127.0.0.1:"), webhook["url"]
            token_file = webhook["http_config"]["authorization"]["credentials_file"]
            assert not token_file.startswith("/run/"), token_file
    assert config["global"]["smtp_smarthost"].startswith("127.0.0.1:")
    return config


# ------------------------------------------------------------------------------------------------
# Traffic


@dataclass
class Traffic:
    """Chat completions through the proxy at a steady rate, with the openai SDK, from a thread.

    While ``fail_every`` is N > 0, every Nth request is answered 500 by the upstream (for
    ``model`` only); the others succeed. Outcomes other than the expected ones are collected in
    ``unexpected``.
    """

    base_url: str
    upstream: FakeUpstream
    model: str = "gpt-4.1"
    rate: float = 20.0
    fail_every: int = 0
    succeeded: int = 0
    failed: int = 0
    unexpected: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            with openai.OpenAI(
                base_url=f"{self.base_url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10
            ) as client:
                self._loop(client)
        except Exception as exc:  # the thread must not die silently
            self.unexpected.append(f"traffic stopped: {exc!r}")

    def _loop(self, client: openai.OpenAI) -> None:
        number = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            number += 1
            failing = self.fail_every > 0 and number % self.fail_every == 0
            self.upstream.scripts[self.model] = Script(status=500) if failing else Script()
            try:
                client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": "ping"}]
                )
            except openai.InternalServerError as exc:
                if failing:
                    self.failed += 1
                else:
                    self.unexpected.append(f"request {number}: {exc!r}")
            except openai.OpenAIError as exc:
                self.unexpected.append(f"request {number}: {exc!r}")
            else:
                if failing:
                    self.unexpected.append(f"request {number}: succeeded, expected a 500")
                else:
                    self.succeeded += 1
            next_at += 1 / self.rate
            self._stop.wait(max(0.0, next_at - time.monotonic()))


# ------------------------------------------------------------------------------------------------
# The stack


@dataclass
class LiveStack:
    peers: LoopThread
    upstream: FakeUpstream
    robot: WeChatRobot
    slack: SlackWebhook
    dingtalk: DingTalkRobot
    feishu: FeishuBot
    smtp: SmtpServer
    sheepdog: SheepdogProcess
    alertmanager: AlertmanagerProcess
    prometheus: PrometheusProcess

    def metrics_text(self) -> str:
        status, text = self.sheepdog.get("/metrics")
        assert status == 200, text
        return text

    def last_heartbeat(self) -> float:
        """sheepdog's sheepdog_watchdog_last_heartbeat_timestamp_seconds (0 before the first)."""
        for family in text_string_to_metric_families(self.metrics_text()):
            if family.name == "sheepdog_watchdog_last_heartbeat_timestamp_seconds":
                return float(family.samples[0].value)
        raise AssertionError("no sheepdog_watchdog_last_heartbeat_timestamp_seconds on /metrics")

    def start_prometheus(self) -> None:
        """Start Prometheus (again), and wait until it evaluates rules and knows Alertmanager."""
        self.prometheus.start()
        self.prometheus.wait_until_evaluated(min_scrapes=2)
        _wait_until_alertmanager_is_known(self.prometheus)

    def logs(self) -> str:
        """For a failure report: the processes' logs, and what the peers received."""
        wechat = [m.content.strip().split("\n")[0] for m in list(self.robot.messages)]
        slack = [str(m.get("text")) for m in list(self.slack.messages)]
        dingtalk = [m.title for m in list(self.dingtalk.messages)]
        feishu = [m.title for m in list(self.feishu.messages)]
        mail = [str(m.message["Subject"]) for m in list(self.smtp.received)]
        parts = [
            ("sheepdog", self.sheepdog.output),
            ("alertmanager", self.alertmanager.log),
            ("prometheus", self.prometheus.log),
            ("alerts in Prometheus", self._prometheus_alerts()),
            ("WeChat robot: first line of each message", "\n".join(wechat)),
            ("WeChat robot: errcodes answered", str(self.robot.rejections)),
            ("Slack: text of each message", "\n".join(slack)),
            ("DingTalk: title of each message", "\n".join(dingtalk)),
            ("DingTalk: errcodes answered", str(self.dingtalk.rejections)),
            ("Feishu: title of each card", "\n".join(feishu)),
            ("Feishu: codes answered", str(self.feishu.rejections)),
            ("SMTP: subject of each mail", "\n".join(mail)),
        ]
        return "\n".join(f"===== {name} =====\n{text[-20000:]}" for name, text in parts)

    def _prometheus_alerts(self) -> str:
        try:
            alerts = self.prometheus.api("/api/v1/alerts")["data"]["alerts"]
        except Exception as exc:  # a report must not fail for want of Prometheus
            return f"unavailable: {exc!r}"
        return "\n".join(
            f"{a['labels']} {a['state']} since {a.get('activeAt')} value {a.get('value')}"
            for a in alerts
        )


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy, which is returned; fail at the
    deadline, saying what was awaited (:func:`tests.support.polling.wait_until`)."""
    return wait_until(condition, timeout=timeout, what=what, interval=interval)


def _sheepdog_config(
    workdir: Path,
    port: int,
    token_file: Path,
    upstream: FakeUpstream,
    targets: dict[str, Any],
    *,
    watchdog: bool,
) -> Path:
    bridge: dict[str, Any] = {"timezone": "UTC", "targets": targets}
    if watchdog:  # as deploy/sheepdog.compose.yaml, with the silence shortened
        bridge["watchdog"] = {"target": "ops-wechat", "silence_seconds": WATCHDOG_SILENCE_SECONDS}
    config = {
        "listen": f"127.0.0.1:{port}",
        "state_dir": "state",
        "auth": {"bearer_tokens_file": [str(token_file)]},
        "proxy": {
            # Two upstreams, as a deployment with a fallback has them: the second (the same
            # local server under another name) serves one model nobody asks for, so the
            # traffic here never fails over and the upstream families are there all the same.
            "upstreams": [
                {"name": "holysheep", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY},
                {
                    "name": "backup",
                    "base_url": upstream.base_url.replace("127.0.0.1", "localhost"),
                    "api_key": UPSTREAM_KEY,
                    "models": ["e2e-backup-only"],
                },
            ],
            "clients": [
                {
                    "name": CLIENT_NAME,
                    "key": CLIENT_KEY,
                    "monthly_budget_usd": 1000,
                    "requests_per_minute": 1_000_000,
                }
            ],
        },
        "bridge": bridge,
    }
    path = workdir / "sheepdog.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def running_stack(
    workdir: Path, prometheus_binary: str, alertmanager_binary: str
) -> Iterator[LiveStack]:
    """Start everything, wait until Prometheus has scraped sheepdog and evaluated every rule,
    and stop everything on exit, whatever happened. Setup failures print every log so far."""
    with ExitStack() as stack:
        peers = LoopThread("peers")
        stack.callback(peers.close)
        upstream = peers.run(FakeUpstream().start())
        stack.callback(lambda: peers.run(upstream.close()))
        robot = peers.run(WeChatRobot(keys=(ROBOT_KEY,)).start())
        stack.callback(lambda: peers.run(robot.close()))
        slack = peers.run(SlackWebhook().start())
        stack.callback(lambda: peers.run(slack.close()))
        dingtalk = peers.run(DingTalkRobot(tokens={DINGTALK_TOKEN: DINGTALK_SECRET}).start())
        stack.callback(lambda: peers.run(dingtalk.close()))
        feishu = peers.run(FeishuBot(hooks={FEISHU_HOOK: FEISHU_SECRET}).start())
        stack.callback(lambda: peers.run(feishu.close()))
        username = SMTP_SETTINGS["SMTP_USERNAME"]
        # PLAIN only: Alertmanager's LOGIN client answers only the "Username:"/"Password:" prompts
        # that mail servers send, not aiosmtpd's "User Name"; it takes the first mechanism offered.
        smtp = SmtpServer(
            workdir,
            username=username,
            password=SMTP_PASSWORD,
            tls="starttls",
            exclude_auth=("LOGIN",),
        )
        smtp.start()
        stack.callback(smtp.stop)
        assert smtp.ca_file is not None

        # The compose secrets, as files.
        token_file = workdir / "sheepdog_alert_token"
        token_file.write_text(ALERT_TOKEN + "\n", encoding="utf-8")
        smtp_password_file = workdir / "smtp_password"
        # no line break at the end: Alertmanager before 0.27 would send it as part of the password
        smtp_password_file.write_text(SMTP_PASSWORD, encoding="utf-8")
        port = free_port()
        sheepdog_address = f"127.0.0.1:{port}"

        am_dir = workdir / "alertmanager"
        am_dir.mkdir()
        alertmanager = AlertmanagerProcess(alertmanager_binary, am_dir)
        am_addresses = {
            "sheepdog:8000": sheepdog_address,
            "127.0.0.1:587": f"127.0.0.1:{smtp.port}",
            "/run/secrets/sheepdog_alert_token": str(token_file),
            "/run/secrets/smtp_password": str(smtp_password_file),
        }
        rendered = render_alertmanager_config(am_dir, SMTP_SETTINGS)
        am_config = alertmanager_config(rendered, am_addresses, smtp.ca_file)
        alertmanager.write_config(am_config)

        prom_dir = workdir / "prometheus"
        prom_dir.mkdir()
        prometheus = PrometheusProcess(prometheus_binary, prom_dir)
        prometheus.log_level = "info"
        # An alert that fired before Alertmanager was discovered (Watchdog, at the first
        # evaluation) reaches it at the next resend, not a minute later.
        prometheus.resend_delay = SCRAPE_INTERVAL
        nothing_listens = f"127.0.0.1:{stack.enter_context(closed_port())}"
        addresses = {
            "sheepdog:8000": sheepdog_address,
            "localhost:9090": prometheus.address,
            "alertmanager:9093": alertmanager.address,
            "host.docker.internal:9100": nothing_listens,
            "blackbox-exporter:9115": nothing_listens,
            "https://api.holysheep.ai/v1": upstream.base_url,
        }
        rules_glob = rules_for_test(prom_dir / "rules", for_divisor=FOR_DIVISOR)
        prometheus.write_config(prometheus_config(addresses, rules_glob))

        # The bridge targets the repository's receivers post to, each at its local peer.
        targets: dict[str, Any] = {
            "ops-wechat": {"type": "wechat", "url": robot.url(ROBOT_KEY)},
            "ops-slack": {"type": "slack", "url": slack.url},
            "ops-dingtalk": {
                "type": "dingtalk",
                "url": dingtalk.url(DINGTALK_TOKEN),
                "secret": DINGTALK_SECRET,
            },
            "ops-feishu": {
                "type": "feishu",
                "url": feishu.url(FEISHU_HOOK),
                "secret": FEISHU_SECRET,
            },
            "ops-email": {
                "type": "email",
                "smtp": {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "security": "starttls",
                    "ca_file": str(smtp.ca_file),
                    "username": username,
                    "password_file": str(smtp_password_file),
                },
                "from": "bridge@example.com",
                "to": [SMTP_SETTINGS["ALERT_EMAIL_TO"]],
            },
        }
        # Every webhook receiver posts to one of these, or to the reserved /alerts/watchdog.
        receivers = {r["name"] for r in am_config["receivers"] if "webhook_configs" in r}
        assert receivers - {"watchdog"} == set(targets), f"alertmanager.yml: {sorted(receivers)}"
        config_path = _sheepdog_config(workdir, port, token_file, upstream, targets, watchdog=False)
        sheepdog = SheepdogProcess(
            config_path, port, workdir, env={"NO_PROXY": "127.0.0.1,localhost"}
        )
        live = LiveStack(
            peers,
            upstream,
            robot,
            slack,
            dingtalk,
            feishu,
            smtp,
            sheepdog,
            alertmanager,
            prometheus,
        )
        stack.callback(sheepdog.stop)
        stack.callback(alertmanager.stop)
        stack.callback(prometheus.stop)
        try:
            sheepdog.start()
            alertmanager.start()
            prometheus.start()
            prometheus.wait_until_evaluated(min_scrapes=2)
            _wait_until_alertmanager_is_known(prometheus)
            # The watchdog is switched on once the heartbeat arrives, by a reload: from sheepdog's
            # start, Prometheus takes several seconds to send its first alert, which the 12 s of
            # silence here (where 600 s ship) would not always outlast.
            wait_for(live.last_heartbeat, 30, "the first heartbeat at /alerts/watchdog")
            _sheepdog_config(workdir, port, token_file, upstream, targets, watchdog=True)
            status, answer = sheepdog.request(
                "POST", "/-/reload", headers={"Authorization": f"Bearer {ALERT_TOKEN}"}
            )
            assert status == 200, answer
        except BaseException:
            print(live.logs())
            raise
        yield live


def _wait_until_alertmanager_is_known(prometheus: PrometheusProcess) -> None:
    def known() -> bool:
        answer = prometheus.api("/api/v1/alertmanagers")
        return bool(answer["data"]["activeAlertmanagers"])

    wait_for(known, 15, "Prometheus discovers the Alertmanager")


def every_kind_of_request(live: LiveStack, model: str) -> None:
    """Requests for ``model`` that make every metric family of the proxy move: a stream (time to
    first token), a 2xx without usage, a stream the upstream breaks off, a 5xx; then embeddings,
    a route that is not metered, and a caller with a wrong key."""
    scripts = live.upstream.scripts
    messages: list[Any] = [{"role": "user", "content": "ping"}]
    base_url = f"{live.sheepdog.base_url}/v1"
    with openai.OpenAI(base_url=base_url, api_key=CLIENT_KEY, max_retries=0) as client:
        scripts[model] = Script()
        stream = client.chat.completions.create(model=model, messages=messages, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "Hello, world!"
        scripts[model] = Script(usage=False)
        client.chat.completions.create(model=model, messages=messages)
        scripts[model] = Script(break_after_events=2)
        broken = client.chat.completions.create(model=model, messages=messages, stream=True)
        with pytest.raises(openai.APIConnectionError):
            for _ in broken:
                pass
        scripts[model] = Script(status=503)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=model, messages=messages)
        scripts[model] = Script()
        client.embeddings.create(model="text-embedding-3-small", input="ping")
        client.models.list()
    stranger = openai.OpenAI(base_url=base_url, api_key="sk-not-a-client", max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError):
        stranger.models.list()
