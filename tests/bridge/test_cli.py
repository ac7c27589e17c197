"""`sheepdog render` and `sheepdog outbox`, as an operator runs them."""

from __future__ import annotations

import io
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.outbox import _schema, add_row
from bridge.payload import validate_payload
from sheepdog.cli import main
from tests.bridge.conftest import ROBOT_KEY, SMTP_PASSWORD, fixture_payload, make_payload

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


def test_outbox_lists_and_requeues(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`outbox` lists waiting and dead rows; `retry --all-dead` queues the dead ones again."""
    code, out, _ = run(capsys, "outbox", "--config", str(config_file))
    assert code == 0 and "no outbox yet" in out

    (tmp_path / "state").mkdir()
    with closing(sqlite3.connect(tmp_path / "state" / "sheepdog.db")) as conn, conn:
        _schema(conn)
        for name in ("Alpha", "Beta", "Gamma"):
            add_row(conn, "ops-wechat", validate_payload(make_payload(2, name=name)), 1.0, 60)
        conn.execute(
            "UPDATE outbox_notifications SET status = 'dead', attempts = 3, "
            "last_error = 'invalid_key: errcode 93000: invalid webhook url' "
            "WHERE id IN (2, 3)"
        )

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
    with closing(sqlite3.connect(tmp_path / "state" / "sheepdog.db")) as conn, conn:
        statuses = conn.execute("SELECT status, attempts FROM outbox_notifications").fetchall()
    assert statuses == [("pending", 0)] * 3
    code, _, err = run(capsys, "outbox", "retry", "1", "7", "--config", str(config_file))
    assert code == 1
    assert "not queued: 1 is pending, not dead" in err
    assert "not queued: 7 no such notification" in err
