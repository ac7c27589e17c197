"""`sheepdog render` and `sheepdog outbox`, as an operator runs them."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.outbox import Outbox
from bridge.payload import validate_payload
from sheepdog.cli import main
from sheepdog.config import load_config
from sheepdog.core.backends import database_for
from tests.bridge.conftest import ROBOT_KEY, SMTP_PASSWORD, fixture_payload, make_payload
from tests.support.state import StoredState

TARGETS = {
    "ops-wechat": {
        "type": "wechat",
        "url": f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={ROBOT_KEY}",
        "mentions": {"userids": ["zhangsan"], "mobiles": ["13800000000"]},
    },
    "ops-email": {
        "type": "email",
        "smtp": {"host": "smtp.example.com", "username": "am", "password": SMTP_PASSWORD},
        "from": "alerts@example.com",
        "to": ["oncall@example.com"],
    },
}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "sheepdog.yaml"
    document = {"state_dir": str(tmp_path / "state"), "bridge": {"targets": TARGETS}}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_render_prints_the_bodies_that_would_be_sent(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sample payload to WeChat: the markdown body, then the mobile mention, no key."""
    code, out, _ = run(capsys, "render", "ops-wechat", "--config", str(config_file))
    assert code == 0
    assert out.startswith(
        "# target ops-wechat (wechat) → https://qyapi.weixin.qq.com/<redacted>: 2 message(s)"
    )
    assert "--- message 1/2: WeChat markdown," in out
    assert "--- message 2/2: WeChat text mentioning 13800000000 ---" in out
    first = out.split("--- message 1/2")[1].split("\n", 1)[1].split("--- message 2/2")[0]
    body = json.loads(first)
    assert body["msgtype"] == "markdown"
    assert "LLMRelayHighErrorRate" in body["markdown"]["content"]
    assert ROBOT_KEY not in out


def test_render_shows_every_part(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A payload too big for one message is shown as the numbered parts that would go."""
    payload = make_payload(150, summary="上游中转服务不可用" * 5)
    path = tmp_path / "big.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    code, out, _ = run(
        capsys, "render", "ops-wechat", "--payload", str(path), "--config", str(config_file)
    )
    assert code == 0
    count = int(out.split(": ")[1].split(" message")[0])
    assert count > 2
    for number in range(1, count):  # the last message is the mobile mention
        assert f"({number}/{count - 1})" in out


def test_render_reads_stdin_and_shows_email_headers_and_parts(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--payload -` reads stdin; an email is shown as headers, text part and HTML part."""
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(fixture_payload("resolved-one.json"))))
    code, out, _ = run(
        capsys, "render", "ops-email", "--payload", "-", "--config", str(config_file)
    )
    assert code == 0
    assert "Subject: [RESOLVED] LLMRelayHighErrorRate" in out
    assert "From: alerts@example.com" in out
    assert "To: oncall@example.com" in out
    assert "--- text/plain ---" in out and "--- text/html ---" in out
    assert "oncall@example.com via smtp.example.com:587" in out
    assert SMTP_PASSWORD not in out


@pytest.mark.parametrize(
    ("argv", "code", "error"),
    [
        (["render", "nope"], 2, "unknown target 'nope' (configured: ops-email, ops-wechat)"),
        (["render", "ops-wechat", "--payload", "/no/such/file"], 1, "No such file"),
        (["outbox", "retry"], 2, "give dead letter ids, or --all-dead"),
        (["outbox", "list", "3"], 2, "takes no ids"),
    ],
)
def test_usage_errors(
    config_file: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, error: str
) -> None:
    """Mistakes get a message saying what is wrong, and a non-zero exit."""
    result, _, err = run(capsys, *argv, "--config", str(config_file))
    assert result == code
    assert error in err


def test_render_refuses_a_bad_payload_naming_the_field(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid payload file is refused with the field that is wrong."""
    payload: dict[str, Any] = make_payload(2)
    payload["alerts"][1]["labels"] = {"x": 1}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    code, _, err = run(
        capsys, "render", "ops-wechat", "--payload", str(path), "--config", str(config_file)
    )
    assert code == 1
    assert "alerts[1].labels: must be an object of strings" in err


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "body: nested more than 32 levels deep"),
        (b"\xff\xfe not text", "body: not UTF-8"),
        (b'{"version": 1' + b"0" * 5000 + b"}", "body: not JSON that can be read"),
    ],
)
def test_render_refuses_unreadable_payload_files(
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    error: str,
) -> None:
    """A payload file nested too deeply, not UTF-8 or with a huge number: exit 1, no traceback."""
    path = tmp_path / "odd.json"
    path.write_bytes(content)
    code, _, err = run(
        capsys, "render", "ops-wechat", "--payload", str(path), "--config", str(config_file)
    )
    assert code == 1
    assert error in err


def test_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken config is exit status 2 with the key path, for render and outbox alike."""
    path = tmp_path / "bad.yaml"
    path.write_text("bridge:\n  targets:\n    x: {type: wechat}\n", encoding="utf-8")
    for argv in (["render", "x"], ["outbox"]):
        code, _, err = run(capsys, *argv, "--config", str(path))
        assert code == 2
        assert "bridge.targets.x.url: required" in err


async def _store_three_two_dead(config_file: Path) -> None:
    db = database_for(load_config(config_file, env={}))
    outbox = Outbox(db)
    try:
        ids = [
            (await outbox.add("ops-wechat", validate_payload(make_payload(2, name=name)), 1.0))[0]
            for name in ("Alpha", "Beta", "Gamma")
        ]
        await outbox.claim(ids[1:], "test", 1.0)
        await outbox.mark_dead(ids[1:], 2.0, "invalid_key: errcode 93000: invalid webhook url")
    finally:
        await db.close()


def test_outbox_lists_and_requeues(
    tmp_path: Path,
    backend: dict[str, Any],
    stored: StoredState,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`outbox` lists waiting and dead rows; `retry --all-dead` queues the dead ones again;
    on either backend."""
    config_file = tmp_path / "sheepdog.yaml"
    document = {"state_dir": str(tmp_path / "state"), "bridge": {"targets": TARGETS}, **backend}
    config_file.write_text(yaml.safe_dump(document), encoding="utf-8")
    code, out, _ = run(capsys, "outbox", "--config", str(config_file))
    assert code == 0
    assert ("no outbox yet" if not backend else "nothing waiting, no dead letters") in out

    asyncio.run(_store_three_two_dead(config_file))

    code, out, _ = run(capsys, "outbox", "list", "--config", str(config_file))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "TARGET",
        "STATUS",
        "ATTEMPTS",
        "AGE",
        "ALERTS",
        "LAST",
        "ERROR",
    ]
    assert lines[1].split()[:4] == ["1", "ops-wechat", "pending", "0"]
    assert "Alpha (2 alerts)" in lines[1]
    assert "invalid_key: errcode 93000" in lines[2]
    assert lines[-1].startswith("1 waiting, 2 dead")

    code, out, _ = run(capsys, "outbox", "dead", "--config", str(config_file))
    assert [line.split()[0] for line in out.splitlines()[1:-1]] == ["2", "3"]

    code, out, err = run(capsys, "outbox", "retry", "--all-dead", "--config", str(config_file))
    assert code == 0 and "queued again: 2, 3" in out
    rows = stored.query("SELECT status, attempts FROM outbox_notifications ORDER BY id")
    assert [(row["status"], row["attempts"]) for row in rows] == [("pending", 0)] * 3
    code, _, err = run(capsys, "outbox", "retry", "1", "7", "--config", str(config_file))
    assert code == 1
    assert "not queued: 1 is pending, not dead" in err
    assert "not queued: 7 no such notification" in err
    assert "SENTINEL" not in out + err


DINGTALK_TOKEN = "SENTINEL-cli-dingtalk-token-11f0"
DINGTALK_SECRET = "SECSENTINEL-cli-dingtalk-secret"
FEISHU_HOOK = "SENTINEL-cli-feishu-hook-9c2e"
FEISHU_SECRET = "SENTINEL-cli-feishu-secret"
ROBOTS = {
    "ops-dingtalk": {
        "type": "dingtalk",
        "url": f"https://oapi.dingtalk.com/robot/send?access_token={DINGTALK_TOKEN}",
        "secret": DINGTALK_SECRET,
        "mentions": {"mobiles": ["13800000000"]},
    },
    "ops-feishu": {
        "type": "feishu",
        "url": f"https://open.feishu.cn/open-apis/bot/v2/hook/{FEISHU_HOOK}",
        "secret": FEISHU_SECRET,
        "mentions": {"user_ids": ["ou_1f2e3d"]},
    },
    "ops-wechat-v2": {
        "type": "wechat",
        "url": f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={ROBOT_KEY}",
        "format": "markdown_v2",
    },
}
ROBOT_SECRETS = (DINGTALK_TOKEN, DINGTALK_SECRET, FEISHU_HOOK, FEISHU_SECRET, ROBOT_KEY)


def _robots_config(tmp_path: Path, language: str) -> Path:
    path = tmp_path / f"robots-{language}.yaml"
    document = {
        "state_dir": str(tmp_path / "state"),
        "bridge": {"language": language, "targets": ROBOTS},
    }
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("language", ["en", "zh"])
def test_render_shows_dingtalk_feishu_and_markdown_v2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], language: str
) -> None:
    """`render` prints the DingTalk markdown with its at list, the Feishu card with the place of
    its signature, and the markdown_v2 table: never a token or a signing secret."""
    path = _robots_config(tmp_path, language)
    code, out, _ = run(capsys, "render", "ops-dingtalk", "--config", str(path))
    assert code == 0
    assert out.startswith(
        "# target ops-dingtalk (dingtalk) → https://oapi.dingtalk.com/<redacted>, signed when "
        "sent (加签): 1 message(s)"
    )
    assert "--- message 1/1: DingTalk markdown, " in out and "mentioning 13800000000 ---" in out
    body = json.loads(out.split(" ---\n", 1)[1])
    assert body["at"]["atMobiles"] == ["13800000000"]
    firing = "告警触发" if language == "zh" else "FIRING"
    assert body["markdown"]["title"] == f"🔥 {firing} LLMRelayHighErrorRate ×2"

    code, out, _ = run(capsys, "render", "ops-feishu", "--config", str(path))
    assert code == 0
    assert "--- message 1/1: Feishu/Lark card, " in out and "mentioning ou_1f2e3d ---" in out
    card = json.loads(out.split(" ---\n", 1)[1])
    assert card["timestamp"] == "<when sent>" and card["sign"] == "<computed when sent>"
    assert card["card"]["header"]["template"] == "red"

    code, out, _ = run(capsys, "render", "ops-wechat-v2", "--config", str(path))
    assert code == 0
    assert "--- message 1/1: WeChat markdown_v2, " in out
    for secret in ROBOT_SECRETS:
        assert secret not in out


def test_check_config_describes_the_robots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check-config` names each robot's host, that it signs, and its pace, and no secret."""
    code, out, _ = run(capsys, "check-config", "--config", str(_robots_config(tmp_path, "zh")))
    assert code == 0
    assert "bridge.language: zh" in out
    assert "  ops-dingtalk: dingtalk → oapi.dingtalk.com, signed (加签), 20/min" in out
    assert "  ops-feishu: feishu → open.feishu.cn (Feishu), at most 5/s, signed, 100/min" in out
    for secret in ROBOT_SECRETS:
        assert secret not in out
