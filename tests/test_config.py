"""Configuration: defaults, expansion, secrets from files, and every error naming its key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sheepdog.cli import describe
from sheepdog.config import load_config, parse_config, secrets_of
from sheepdog.core.errors import ConfigError

DATA = Path(__file__).parent / "data" / "config"

# Sentinel secrets: any of these appearing in output is a leak.
SENTINELS = {
    "SHEEPDOG_ALERT_TOKEN": "sentinel-alert-token-7f3a",
    "HOLYSHEEP_API_KEY": "sentinel-upstream-key-91bc",
    "TEAM_A_KEY": "sentinel-team-a-key-02de",
    "WECHAT_ROBOT_KEY": "sentinel-robot-key-55aa",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/sentinel-slack-token-c0de",
    "SMTP_PASSWORD": "sentinel-smtp-password-beef",
    "ALERT_TOKEN": "sentinel-alert-token-7f3a",
    "UPSTREAM_KEY": "sentinel-upstream-key-91bc",
}
SECRET_TEXTS = [
    "sentinel-alert-token-7f3a",
    "sentinel-upstream-key-91bc",
    "sentinel-team-a-key-02de",
    "sentinel-robot-key-55aa",
    "sentinel-slack-token-c0de",
    "sentinel-smtp-password-beef",
]


def _expected_error(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: '"
    expected = first.removeprefix("# expect: ")
    return expected.replace("{path}", str(path)).replace("{dir}", str(path.parent))


BAD_CONFIGS = sorted(DATA.glob("bad-*.yaml"))


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=[p.stem for p in BAD_CONFIGS])
def test_bad_config_is_refused_with_its_exact_message(path: Path) -> None:
    """Each bad config file is refused with the message its first line expects, and no secret."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, SENTINELS)
    message = str(caught.value)
    assert message == _expected_error(path)
    for secret in SECRET_TEXTS:
        assert secret not in message


def test_empty_file_is_a_valid_config_with_complete_defaults(tmp_path: Path) -> None:
    """An empty file gives the built-in defaults: loopback, HolySheep, ./var, a log target."""
    empty = tmp_path / "sheepdog.yaml"
    empty.write_text("")
    config = load_config(empty, {})
    assert str(config.listen) == "127.0.0.1:8000"
    assert config.proxy.upstream.base_url == "https://api.holysheep.ai/v1"
    assert config.proxy.upstream.api_key is None
    assert config.state_dir == tmp_path / "var"
    assert [(t.name, t.type) for t in config.bridge.targets.values()] == [("default", "log")]
    assert config.proxy.prices.prices["gpt-4.1"].output == 8.00
    assert config.bridge.timezone == "Asia/Shanghai"


def test_defaults_take_the_upstream_key_from_the_environment() -> None:
    """With no file at all, the upstream key is $HOLYSHEEP_API_KEY when it is set."""
    config = load_config(None, {"HOLYSHEEP_API_KEY": "k-123"})
    assert config.proxy.upstream.api_key is not None
    assert config.proxy.upstream.api_key.reveal() == "k-123"


def test_spec_example_loads_with_its_variables_set() -> None:
    """The SPEC's example config is valid once its variables are set."""
    config = load_config(DATA / "spec-example.yaml", SENTINELS)
    assert [c.name for c in config.proxy.clients] == ["team-a"]
    assert config.proxy.clients[0].monthly_budget_usd == 100
    assert config.proxy.clients[0].requests_per_minute == 600
    assert config.proxy.clients[0].tokens_per_minute == 200000
    wechat = config.bridge.targets["ops-wechat"]
    assert wechat.url is not None
    assert wechat.url.reveal().endswith("key=sentinel-robot-key-55aa")
    assert wechat.mentions.userids == ("zhangsan",)
    assert wechat.mentions.mobiles == ("13800000000",)
    email = config.bridge.targets["ops-email"]
    assert email.smtp is not None and email.smtp.port == 587 and email.smtp.security == "starttls"
    assert config.bridge.watchdog is not None
    assert (config.bridge.watchdog.target, config.bridge.watchdog.silence_seconds) == (
        "ops-wechat",
        600,
    )
    assert config.workers == 1
    assert config.database.url is not None  # a secret: it may hold the password
    assert str(config.database.url) == "<secret>"
    assert len(secrets_of(config)) == 7


def test_the_specs_upstreams_example_loads_each_with_its_own_key() -> None:
    """SPEC.md's `upstreams`, uncommented: in order, each its own key; a listed upstream never
    gets $HOLYSHEEP_API_KEY by default, the one `upstream` still does."""
    raw = yaml.safe_load(
        """
proxy:
  upstreams:
    - {name: holysheep, base_url: https://api.holysheep.ai/v1, api_key: "${HOLYSHEEP_API_KEY}"}
    - {name: backup, base_url: https://relay2.example/v1, api_key: "${BACKUP_KEY}",
       models: ["gpt-*"]}
    - {name: local, base_url: http://127.0.0.1:8080/v1}
"""
    )
    env = {"HOLYSHEEP_API_KEY": "k-holysheep", "BACKUP_KEY": "k-backup"}
    upstreams = parse_config(raw, env=env).proxy.upstream_list
    assert [(u.name, u.models) for u in upstreams] == [
        ("holysheep", None),
        ("backup", ("gpt-*",)),
        ("local", None),
    ]
    assert [u.api_key.reveal() if u.api_key else None for u in upstreams] == [
        "k-holysheep",
        "k-backup",
        None,
    ]
    (default,) = parse_config({}, env=env).proxy.upstream_list
    assert default.name == "default" and default.api_key is not None


def test_variables_expand_with_defaults_and_dollar_escapes() -> None:
    """${VAR}, ${VAR:-default} and $$ expand in string values; other text stays as written."""
    raw = {
        "proxy": {
            "billing": {"currency": "${CURRENCY:-CNY}"},
            "upstream": {"base_url": "http://${HOST}:${PORT:-8080}/v1"},
        },
        "bridge": {"targets": {"t": {"type": "log", "template": "cost-$$5-$HOME"}}},
    }
    config = parse_config(raw, env={"HOST": "relay.internal"})
    assert config.proxy.billing.currency == "CNY"
    assert config.proxy.upstream.base_url == "http://relay.internal:8080/v1"
    assert config.bridge.targets["t"].template == "cost-$5-$HOME"


def test_secrets_can_come_from_files_relative_to_the_config(tmp_path: Path) -> None:
    """Every secret X may be given as X_file; relative paths are relative to the config file."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("token-from-file\n")
    (tmp_path / "secrets" / "upstream").write_text("  upstream-from-file  \n")
    (tmp_path / "secrets" / "robot-url").write_text("https://qyapi.weixin.qq.com/x?key=abc\n")
    (tmp_path / "secrets" / "team").write_text("team-key\n")
    (tmp_path / "secrets" / "smtp").write_text("smtp-pass\n")
    path = tmp_path / "sheepdog.yaml"
    path.write_text(
        """
auth:
  bearer_tokens_file: secrets/token
  basic: {username: am, password_file: secrets/token}
proxy:
  upstream: {api_key_file: secrets/upstream}
  clients: [{name: team-a, key_file: secrets/team}]
bridge:
  targets:
    w: {type: wechat, url_file: secrets/robot-url}
    m:
      type: email
      smtp: {host: localhost, username: am, password_file: secrets/smtp}
      from: a@example.com
      to: [b@example.com]
"""
    )
    config = load_config(path, {})
    assert [t.reveal() for t in config.auth.bearer_tokens] == ["token-from-file"]
    assert config.auth.basic is not None
    assert config.auth.basic.password.reveal() == "token-from-file"
    assert config.proxy.upstream.api_key is not None
    assert config.proxy.upstream.api_key.reveal() == "upstream-from-file"
    assert config.proxy.clients[0].key.reveal() == "team-key"
    url = config.bridge.targets["w"].url
    assert url is not None and url.reveal() == "https://qyapi.weixin.qq.com/x?key=abc"
    smtp = config.bridge.targets["m"].smtp
    assert smtp is not None and smtp.password is not None
    assert smtp.password.reveal() == "smtp-pass"


def test_secrets_print_as_placeholders() -> None:
    """A config printed or logged by accident shows <secret>, never the value."""
    config = load_config(DATA / "spec-example.yaml", SENTINELS)
    for text in (repr(config), str(config), describe(config)):
        for secret in SECRET_TEXTS:
            assert secret not in text
    assert "<secret>" in repr(config)


def _cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sheepdog.cli", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=cwd,
        timeout=30,
        check=False,
    )


def test_check_config_on_spec_example_exits_0_and_prints_no_secret() -> None:
    """`sheepdog check-config` accepts the SPEC example and its summary holds no secret."""
    result = _cli("check-config", "--config", str(DATA / "spec-example.yaml"), env=SENTINELS)
    assert result.returncode == 0, result.stderr
    assert "team-a: monthly budget $100.00" in result.stdout
    assert "ops-wechat: wechat → qyapi.weixin.qq.com, 20/min" in result.stdout
    assert (
        "bridge.watchdog: → ops-wechat after 10m (600s) without a heartbeat at /alerts/watchdog"
        in result.stdout
    )
    for secret in SECRET_TEXTS:
        assert secret not in result.stdout + result.stderr


def test_check_config_exits_2_naming_the_key_and_no_secret() -> None:
    """A bad config makes `check-config` exit 2 with the key path on stderr, and no secret."""
    result = _cli("check-config", "--config", str(DATA / "bad-url-scheme.yaml"), env=SENTINELS)
    assert result.returncode == 2
    assert "bridge.targets.ops-wechat.url: must be an http:// or https:// URL" in result.stderr
    for secret in SECRET_TEXTS:
        assert secret not in result.stdout + result.stderr


def test_config_is_discovered_from_environment_then_working_directory(tmp_path: Path) -> None:
    """Without --config, $SHEEPDOG_CONFIG is used, else ./sheepdog.yaml, else the defaults."""
    (tmp_path / "sheepdog.yaml").write_text("listen: 127.0.0.1:9001\n")
    other = tmp_path / "other.yaml"
    other.write_text("listen: 127.0.0.1:9002\n")
    assert "listen: 127.0.0.1:9001" in _cli("check-config", cwd=tmp_path).stdout
    from_env = _cli("check-config", cwd=tmp_path, env={"SHEEPDOG_CONFIG": str(other)})
    assert "listen: 127.0.0.1:9002" in from_env.stdout
    (tmp_path / "sheepdog.yaml").unlink()
    assert "config: built-in defaults" in _cli("check-config", cwd=tmp_path).stdout


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    """--config naming a file that does not exist exits 2 and says so."""
    result = _cli("check-config", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.yaml'}: no such file" in result.stderr
