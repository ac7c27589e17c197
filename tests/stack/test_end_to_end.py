"""End to end: real processes started from the repository's own config files.

``sheepdog serve`` relays to a local OpenAI-compatible upstream; the real Prometheus scrapes it
with the repository's scrape config and rules; the real Alertmanager routes with the
repository's alertmanager.yml (its optional DingTalk and Feishu blocks enabled) to sheepdog's
bridge, which delivers to a local WeChat robot, Slack webhook, DingTalk robot and Feishu bot
(both checking signatures) and SMTP server. Only addresses are substituted, and intervals and
``for:`` durations shortened (see ``_live.py``), so the test takes seconds, not the ten minutes the
alert waits in production.

The same running stack then checks the stack's PromQL and the list of exported metrics against
the real sheepdog, not the sample exporter the other stack tests use.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.peers.dingtalk import DingTalkRobot
from tests.peers.feishu import FeishuBot
from tests.peers.slack import SlackWebhook
from tests.peers.smtp import ReceivedMail, SmtpServer
from tests.peers.wechat import WeChatRobot
from tests.stack._live import (
    CLIENT_NAME,
    SMTP_SETTINGS,
    WATCHDOG_OUTLIVES_PROMETHEUS_SECONDS,
    WATCHDOG_REPEAT,
    WATCHDOG_SILENCE_SECONDS,
    LiveStack,
    Traffic,
    every_kind_of_request,
    running_stack,
    wait_for,
)
from tests.stack._procs import parse_duration, require_binary
from tests.stack._promql import (
    GRAFANA_VALUES,
    OTHER_EXPORTERS,
    dashboard_expressions,
    metric_names,
    recording_rules,
    rule_expressions,
)
from tests.stack.exported_metrics import METRICS, Metric

pytestmark = pytest.mark.slow

ALERT = "LLMHighErrorRatio"
# The alert's model; the other tests' requests are for the model the dashboards' $model is set to,
# so that neither disturbs the other, whatever order they run in.
MODEL = "deepseek-v3.2"
DASHBOARD_MODEL = GRAFANA_VALUES["model"]
# While errors last, one request in ERROR_EVERY fails: 12.5%, above the warning threshold (5%)
# and well under the critical one (25%), even diluted by the traffic before.
ERROR_EVERY = 8


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """The whole stack, up and scraped; stopped after the module, whatever happened."""
    prometheus = require_binary("prometheus", "prometheus")
    alertmanager = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
    with running_stack(tmp_path_factory.mktemp("e2e"), prometheus, alertmanager) as live:
        yield live


@pytest.fixture(scope="module")
def every_kind_of_traffic(stack: LiveStack) -> None:
    """Every kind of request once, then until Prometheus has scraped it and evaluated the rules
    on it (a recording rule over the newest family has a value)."""
    every_kind_of_request(stack, DASHBOARD_MODEL)
    model = f'model="{DASHBOARD_MODEL}"'
    for expr in (
        f"llm_upstream_interrupted_total{{{model}}}",
        f"llm_usage_missing_total{{{model}}}",
        f"llm_time_to_first_token_seconds_count{{{model}}} > 0",
        f'llm_requests_total{{{model}, code=~"5.."}}',
        f"model:llm_upstream_interrupted:rate5m{{{model}}}",
    ):
        wait_for(partial(stack.prometheus.vector, expr), 20, f"Prometheus has {expr}")


# ------------------------------------------------------------------------------------------------
# Alert -> Alertmanager -> bridge -> WeChat, and the resolution


def _status(headline: str) -> str | None:
    """``firing`` or ``resolved`` as the first line of a message says it, else None (a digest)."""
    first = headline.strip().splitlines()[0].upper() if headline.strip() else ""
    if "RESOLVED" in first:
        return "resolved"
    if "FIRING" in first:
        return "firing"
    return None


def _wechat(robot: WeChatRobot, status: str) -> list[str]:
    return [
        message.content
        for message in list(robot.messages)
        if ALERT in message.content
        and MODEL in message.content
        and _status(message.content) == status
    ]


def _slack(slack: SlackWebhook, status: str) -> list[dict[str, Any]]:
    return [
        body
        for body in list(slack.messages)
        if ALERT in json.dumps(body, ensure_ascii=False)
        and MODEL in json.dumps(body, ensure_ascii=False)
        and _status(str(body.get("text"))) == status
    ]


def _dingtalk(robot: DingTalkRobot, status: str) -> list[str]:
    return [
        message.text
        for message in list(robot.messages)
        if ALERT in message.title and MODEL in message.text and _status(message.title) == status
    ]


def _feishu(bot: FeishuBot, status: str) -> list[str]:
    return [
        message.title
        for message in list(bot.messages)
        if ALERT in message.title
        and MODEL in "\n".join(message.texts)
        and _status(message.title) == status
    ]


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} on /metrics")


def test_error_ratio_alert_reaches_wechat_and_resolves(stack: LiveStack) -> None:
    """Upstream 500s through the proxy fire LLMHighErrorRatio; Alertmanager routes it to the
    bridge, which delivers it to the WeChat robot (and Slack, DingTalk and Feishu, signed); once
    errors stop while traffic goes on, the resolved message follows everywhere."""
    prometheus = stack.prometheus
    assert not _wechat(stack.robot, "firing")
    traffic = Traffic(stack.sheepdog.base_url, stack.upstream, model=MODEL, rate=20)
    traffic.start()
    try:
        guard = f'model:llm_requests:rate5m{{model="{MODEL}"}} * 300 >= 10'
        wait_for(lambda: prometheus.vector(guard), 20, "traffic above the alert's minimum")

        traffic.fail_every = ERROR_EVERY
        firing = wait_for(
            lambda: _wechat(stack.robot, "firing"), 45, f"a firing {ALERT} message on WeChat"
        )
        wait_for(lambda: _slack(stack.slack, "firing"), 10, f"a firing {ALERT} message on Slack")
        wait_for(lambda: _dingtalk(stack.dingtalk, "firing"), 10, f"a firing {ALERT} on DingTalk")
        wait_for(lambda: _feishu(stack.feishu, "firing"), 10, f"a firing {ALERT} on Feishu")

        traffic.fail_every = 0
        resolved = wait_for(
            lambda: _wechat(stack.robot, "resolved"), 60, f"a resolved {ALERT} message on WeChat"
        )
        wait_for(
            lambda: _slack(stack.slack, "resolved"), 10, f"a resolved {ALERT} message on Slack"
        )
        wait_for(
            lambda: _dingtalk(stack.dingtalk, "resolved"), 10, f"a resolved {ALERT} on DingTalk"
        )
        wait_for(lambda: _feishu(stack.feishu, "resolved"), 10, f"a resolved {ALERT} on Feishu")
    finally:
        traffic.stop()

    assert not traffic.unexpected, "\n".join(traffic.unexpected[:20])
    assert traffic.failed > 0 and traffic.succeeded > 0
    assert stack.robot.rejections == []
    # Both robots checked every request's signature and refused none.
    assert stack.dingtalk.rejections == [] and stack.feishu.rejections == []
    assert all(m.signed for m in [*stack.dingtalk.messages, *stack.feishu.messages])
    for messages in (stack.dingtalk.messages, stack.feishu.messages):
        statuses = [_status(m.title) for m in messages if ALERT in m.title]
        assert statuses.index("firing") < statuses.index("resolved")
    # The firing message came first, and the bridge counted both ways through.
    contents = [message.content for message in stack.robot.messages]
    assert contents.index(firing[0]) < contents.index(resolved[0])
    metrics = stack.metrics_text()
    for status in ("firing", "resolved"):
        received = _sample(
            metrics, "sheepdog_alerts_received_total", target="ops-wechat", status=status
        )
        assert received >= 1, status
    sent = _sample(metrics, "sheepdog_notifications_total", target="ops-wechat", result="sent")
    assert sent >= 2
    assert _sample(metrics, "llm_requests_total", model=MODEL, code="500", client=CLIENT_NAME) > 0


# ------------------------------------------------------------------------------------------------
# The stack's PromQL against Prometheus scraping the real sheepdog


def _live_series_names(text: str) -> set[str]:
    families = text_string_to_metric_families(text)
    return {sample.name for family in families for sample in family.samples}


def test_every_rule_and_dashboard_query_evaluates_on_the_real_sheepdog(
    stack: LiveStack, every_kind_of_traffic: None
) -> None:
    """Every rule is healthy, and every rule and dashboard expression evaluates without error."""
    prometheus = stack.prometheus
    groups = prometheus.api("/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(rule_expressions())
    broken = [f"{r['name']}: {r['health']} {r.get('lastError', '')}" for r in rules
              if r["health"] != "ok"]  # fmt: skip
    assert not broken, "\n".join(broken)
    failures = []
    for expression in [*rule_expressions(), *dashboard_expressions()]:
        answer = prometheus.query(expression.expr)
        if answer["status"] != "success":
            failures.append(f"{expression.where}: {answer.get('error')}")
    assert not failures, "\n".join(failures)


_SELECTOR = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?(?!\s*\()")


def test_every_metric_and_selector_used_is_one_sheepdog_really_exports(
    stack: LiveStack, every_kind_of_traffic: None
) -> None:
    """Each metric name a rule or dashboard reads is on sheepdog's live /metrics (or recorded by
    a rule, or from Prometheus and the blackbox exporter), and each selector of such a metric,
    label matchers included, matches series in Prometheus."""
    live = _live_series_names(stack.metrics_text())
    recorded = {rule["record"] for rule in recording_rules()}
    unknown = []
    empty = []
    for expression in [*rule_expressions(), *dashboard_expressions()]:
        names = metric_names(expression.expr)
        for name in sorted(names):
            if name not in live and name not in recorded and not OTHER_EXPORTERS.match(name):
                unknown.append(f"{expression.where}: {name}")
        for match in _SELECTOR.finditer(expression.expr):
            name, matchers = match.group(1), match.group(2) or ""
            if name in names and name in live:
                selector = f"{name}{matchers}"
                if not stack.prometheus.vector(f"count({selector})"):
                    empty.append(f"{expression.where}: {selector}")
    assert not unknown, "not exported by sheepdog:\n" + "\n".join(unknown)
    assert not empty, "selectors matching no series of the real sheepdog:\n" + "\n".join(empty)


# ------------------------------------------------------------------------------------------------
# exported_metrics.py against the live /metrics


def _family_name(metric: Metric) -> str:
    """The family name prometheus_client's parser gives (counters lose ``_total``)."""
    return metric.name.removesuffix("_total") if metric.type == "counter" else metric.name


def test_exported_metrics_list_matches_the_live_metrics(
    stack: LiveStack, every_kind_of_traffic: None
) -> None:
    """Every family of exported_metrics.py is on the live /metrics with its type, labels (and
    buckets, where listed) and samples; every llm_* and sheepdog_* family there is listed."""
    families = {family.name: family for family in text_string_to_metric_families(
        stack.metrics_text())}  # fmt: skip
    listed = {_family_name(metric): metric for metric in METRICS}
    problems = []
    for name, metric in listed.items():
        family = families.get(name)
        if family is None:
            problems.append(f"{metric.name}: not on /metrics")
            continue
        if family.type != metric.type:
            problems.append(f"{metric.name}: type {family.type}, listed as {metric.type}")
        if not family.samples:
            problems.append(f"{metric.name}: no samples after every kind of request")
        for sample in family.samples:
            labels = set(sample.labels) - {"le"}
            if labels != set(metric.labels):
                problems.append(f"{sample.name}: labels {sorted(labels)}, listed {metric.labels}")
                break
        if metric.buckets:
            bounds = sorted(
                {float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")}
            )
            if bounds != [*sorted(metric.buckets), float("inf")]:
                problems.append(f"{metric.name}: buckets {bounds}")
    created = {f"{name}_created" for name, m in listed.items() if m.type != "gauge"}
    for name in families:
        if name.startswith(("llm_", "sheepdog_")) and name not in listed and name not in created:
            problems.append(f"{name}: on /metrics, not in exported_metrics.py")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------
# The watchdog: Prometheus -> Alertmanager -> /alerts/watchdog, nobody else; its silence reported


def _monitoring_silent(robot: WeChatRobot, status: str) -> list[str]:
    return [
        message.content
        for message in list(robot.messages)
        if "MonitoringSilent" in message.content and _status(message.content) == status
    ]


def _to_anyone_but_wechat(stack: LiveStack, word: str) -> list[str]:
    """Messages naming ``word`` that reached Slack, DingTalk, Feishu or a mailbox."""
    return [
        *(json.dumps(b) for b in list(stack.slack.messages) if word in json.dumps(b)),
        *(m.text for m in list(stack.dingtalk.messages) if word in m.text + m.title),
        *(json.dumps(m.body) for m in list(stack.feishu.messages) if word in json.dumps(m.body)),
        *(m.message.as_string() for m in list(stack.smtp.received)
          if word in str(m.message["Subject"]) + _plain_text(m)),
    ]  # fmt: skip


def _plain_text(mail: ReceivedMail) -> str:
    try:
        return mail.part("text/plain")
    except KeyError:
        return ""


def test_watchdog_heartbeat_reaches_the_watchdog_target_and_no_person(stack: LiveStack) -> None:
    """With Prometheus and Alertmanager running, the always-firing Watchdog goes through
    Alertmanager's watchdog route to sheepdog's /alerts/watchdog again and again (the
    last-heartbeat gauge moves on), and nothing reaches any person: neither the Watchdog nor a
    "monitoring is silent"."""
    first = wait_for(stack.last_heartbeat, 30, "a heartbeat at /alerts/watchdog")
    wait_for(lambda: stack.last_heartbeat() > first, 20, "another heartbeat")
    assert time.time() - stack.last_heartbeat() < WATCHDOG_SILENCE_SECONDS
    for word in ("Watchdog", "MonitoringSilent"):
        assert not [m for m in stack.robot.messages if word in m.content], word
        assert not _to_anyone_but_wechat(stack, word), word


def test_prometheus_stopped_monitoring_is_silent_then_recovered(stack: LiveStack) -> None:
    """Prometheus stopped: once Alertmanager lets the Watchdog expire (4 evaluation intervals)
    the heartbeats stop, and within silence_seconds plus one repeat interval "monitoring is
    silent" reaches the WeChat group of bridge.watchdog.target, once, and nobody else;
    Prometheus started again, the recovery message follows."""
    assert not _monitoring_silent(stack.robot, "firing")
    wait_for(lambda: time.time() - stack.last_heartbeat() < 3, 20, "heartbeats arriving")
    stack.prometheus.stop()
    try:
        # What the deadline is made of: heartbeats go on until the Watchdog expires in
        # Alertmanager, then silence_seconds of listening, then one repeat interval and a check
        # of slack for when the last heartbeat came; then delivery, on a machine under load.
        repeat = parse_duration(WATCHDOG_REPEAT)
        deadline = WATCHDOG_OUTLIVES_PROMETHEUS_SECONDS + WATCHDOG_SILENCE_SECONDS + repeat + 10
        (silent,) = wait_for(
            lambda: _monitoring_silent(stack.robot, "firing"),
            deadline,
            "a 'monitoring is silent' message on WeChat",
        )
    finally:
        stack.start_prometheus()
    (recovered,) = wait_for(
        lambda: _monitoring_silent(stack.robot, "resolved"), 30, "the recovery message on WeChat"
    )

    assert "Monitoring is silent: no Watchdog heartbeat for 12s" in silent
    assert "critical" in silent
    assert "docs/runbooks/MonitoringSilent.md" in silent
    assert "Monitoring is back" in recovered
    contents = [message.content for message in stack.robot.messages]
    assert contents.index(silent) < contents.index(recovered)
    # One message for the silence, not one per check; nobody else was told.
    assert len(_monitoring_silent(stack.robot, "firing")) == 1
    assert not _to_anyone_but_wechat(stack, "MonitoringSilent")
    assert stack.robot.rejections == []


def test_alertmanager_stopped_monitoring_is_silent_then_recovered(stack: LiveStack) -> None:
    """Alertmanager stopped, Prometheus still running: no route can tell anyone, and the
    heartbeats stop at once; sheepdog says "monitoring is silent" on WeChat by itself, once, and
    "monitoring is back" when Alertmanager (restarted on its own storage) sends them again."""
    wait_for(lambda: time.time() - stack.last_heartbeat() < 3, 30, "heartbeats arriving")
    silent_before = len(_monitoring_silent(stack.robot, "firing"))
    recovered_before = len(_monitoring_silent(stack.robot, "resolved"))
    stack.alertmanager.stop()
    try:
        deadline = WATCHDOG_SILENCE_SECONDS + parse_duration(WATCHDOG_REPEAT) + 10
        wait_for(
            lambda: len(_monitoring_silent(stack.robot, "firing")) > silent_before,
            deadline,
            "a 'monitoring is silent' message on WeChat with Alertmanager down",
        )
    finally:
        stack.alertmanager.start()
    # Prometheus sends the still-firing Watchdog again at its next resend (one scrape interval).
    wait_for(
        lambda: len(_monitoring_silent(stack.robot, "resolved")) > recovered_before,
        60,
        "the recovery message on WeChat after Alertmanager came back",
    )
    silent = _monitoring_silent(stack.robot, "firing")[silent_before:]
    assert len(silent) == 1, silent
    assert "Monitoring is silent: no Watchdog heartbeat" in silent[0]
    assert "Monitoring is back" in _monitoring_silent(stack.robot, "resolved")[-1]
    assert not _to_anyone_but_wechat(stack, "MonitoringSilent")


# ------------------------------------------------------------------------------------------------
# sheepdog down: Alertmanager emails SheepdogDown itself. Last in the module: it restarts sheepdog,
# whose counters start again from nothing.


def _alertmanager_mails(smtp: SmtpServer, status: str) -> list[ReceivedMail]:
    return [
        mail
        for mail in list(smtp.received)
        if "SheepdogDown" in str(mail.message["Subject"])
        and f"[{status.upper()}" in str(mail.message["Subject"])
        and mail.sender == SMTP_SETTINGS["ALERT_EMAIL_FROM"]
    ]


def test_sheepdog_down_reaches_email_straight_from_alertmanager(stack: LiveStack) -> None:
    """With sheepdog stopped, nothing can go through the bridge: SheepdogDown reaches the SMTP
    server from Alertmanager itself (STARTTLS, the SMTP account of .env, the password from its
    file), reading as a person needs it; with sheepdog back, the resolved mail follows."""
    sheepdog_instance = stack.sheepdog.base_url.removeprefix("http://")
    stack.sheepdog.stop()
    try:
        (mail,) = wait_for(
            lambda: _alertmanager_mails(stack.smtp, "firing"),
            30,
            "a firing SheepdogDown mail from Alertmanager",
        )
    finally:
        stack.sheepdog.start()

    assert mail.recipients == [SMTP_SETTINGS["ALERT_EMAIL_TO"]]
    assert mail.message["To"] == SMTP_SETTINGS["ALERT_EMAIL_TO"]
    assert mail.message["From"] == SMTP_SETTINGS["ALERT_EMAIL_FROM"]
    assert (SMTP_SETTINGS["SMTP_USERNAME"], True) in stack.smtp.auth_attempts
    subject = str(mail.message["Subject"])
    assert subject.startswith("[FIRING:1] SheepdogDown"), subject
    text = mail.part("text/plain")
    lines = text.splitlines()
    assert lines[0] == "FIRING: sheepdog is down"
    assert f"Prometheus has failed to scrape sheepdog at {sheepdog_instance}" in lines[1]
    assert "Alertmanager also emails this alert itself, without the bridge." in lines[1]
    assert re.fullmatch(
        r"Severity: critical, since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lines[2]
    ), lines[2]
    assert lines[3] == (
        "Runbook: https://github.com/sheepdog-dev/sheepdog/blob/main/docs/runbooks/SheepdogDown.md"
    )
    assert "Sent by Alertmanager itself, not through the sheepdog bridge" in text
    assert "{{" not in text and "${" not in text
    assert "SheepdogDown" in mail.part("text/html")
    # Only Alertmanager's own email receiver mails this; the bridge was down.
    assert all(m.sender == SMTP_SETTINGS["ALERT_EMAIL_FROM"] for m in stack.smtp.received)

    wait_for(
        lambda: stack.prometheus.vector('up{job="sheepdog"} == 1'), 20, "sheepdog scraped again"
    )
    (resolved,) = wait_for(
        lambda: _alertmanager_mails(stack.smtp, "resolved"),
        30,
        "a resolved SheepdogDown mail from Alertmanager",
    )
    assert resolved.part("text/plain").startswith("RESOLVED: sheepdog is down")
