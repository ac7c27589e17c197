"""alertmanager/render.sh: how compose.yaml gets .env's SMTP settings into alertmanager.yml.

It runs under the busybox shell and awk of the prom/alertmanager image; here under Debian's
busybox (as in the image) and under /bin/sh with the system awk.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stack._procs import REPO, require_binary, run_tool

SCRIPT = REPO / "alertmanager" / "render.sh"
CONFIG = REPO / "alertmanager" / "alertmanager.yml"
SETTINGS = {
    "SMTP_HOST": "smtp.example.com",
    "SMTP_USERNAME": "alerts@example.com",
    "ALERT_EMAIL_FROM": "alerts@example.com",
    "ALERT_EMAIL_TO": "oncall@example.com",
}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@pytest.fixture(params=["busybox", "sh"])
def shell(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """The command that runs a shell script: busybox's sh with busybox's awk, mv and rm first
    in PATH (as in the image), or /bin/sh with the system's tools."""
    if request.param == "sh":
        yield ["/bin/sh"]
        return
    busybox = require_binary("busybox", "busybox")
    applets = tmp_path / "busybox-bin"
    applets.mkdir()
    for applet in ("sh", "awk", "mv", "rm"):
        (applets / applet).symlink_to(busybox)
    yield [str(applets / "sh")]


def _render(
    shell: list[str], source: Path, destination: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    path = str(Path(shell[0]).parent) + os.pathsep + os.environ["PATH"]
    return subprocess.run(
        [*shell, str(SCRIPT), str(source), str(destination)],
        env={"PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return doc


def test_rendered_config_carries_the_settings_and_amtool_accepts_it(
    shell: list[str], tmp_path: Path
) -> None:
    """With .env's settings, the rendered alertmanager.yml has them where the placeholders were,
    nothing else changed, and `amtool check-config` accepts it."""
    rendered = tmp_path / "alertmanager.yml"
    result = _render(shell, CONFIG, rendered, SETTINGS)
    assert result.returncode == 0, result.stderr
    config = _load(rendered)
    assert config["global"]["smtp_smarthost"] == "smtp.example.com:587"
    assert config["global"]["smtp_from"] == "alerts@example.com"
    assert config["global"]["smtp_auth_username"] == "alerts@example.com"
    (receiver,) = [r for r in config["receivers"] if r["name"] == "alertmanager-email"]
    assert receiver["email_configs"][0]["to"] == "oncall@example.com"
    original = CONFIG.read_text(encoding="utf-8")
    expected = _PLACEHOLDER.sub(lambda m: SETTINGS.get(m[1], m[0]), original)
    code = [line for line in expected.splitlines() if not line.lstrip().startswith("#")]
    assert [
        line
        for line in rendered.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ] == code
    amtool = require_binary("amtool", "prometheus-alertmanager")
    checked = run_tool(amtool, "check-config", str(rendered))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    "value",
    ['Ops "night" team <ops@example.com>', "back\\slash & slash/ $HOME ${X}", "值班 <a@b.c>"],
)
def test_values_arrive_literally(shell: list[str], tmp_path: Path, value: str) -> None:
    """Quotes, backslashes, `&`, `/`, dollars and non-ASCII text in a value come through as they
    are, whatever sed or awk make of them elsewhere."""
    rendered = tmp_path / "alertmanager.yml"
    result = _render(shell, CONFIG, rendered, {**SETTINGS, "ALERT_EMAIL_FROM": value})
    assert result.returncode == 0, result.stderr
    assert _load(rendered)["global"]["smtp_from"] == value


@pytest.mark.parametrize("problem", ["unset", "empty", "line break"])
def test_a_missing_setting_is_named_and_the_old_config_stays(
    shell: list[str], tmp_path: Path, problem: str
) -> None:
    """An unset or empty variable, or one with a line break, fails naming it; the destination
    keeps what it had, so a restart with a broken .env does not leave a half-written config."""
    rendered = tmp_path / "alertmanager.yml"
    rendered.write_text("the previous config\n", encoding="utf-8")
    env = dict(SETTINGS)
    if problem == "unset":
        del env["SMTP_HOST"]
    else:
        env["SMTP_HOST"] = "" if problem == "empty" else "smtp.example.com\nsmtp_from: evil"
    result = _render(shell, CONFIG, rendered, env)
    assert result.returncode != 0
    assert "${SMTP_HOST}" in result.stderr
    assert rendered.read_text(encoding="utf-8") == "the previous config\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("alertmanager")] == [
        "alertmanager.yml"
    ]


def test_every_placeholder_is_quoted_and_passed_by_compose() -> None:
    """Each ${NAME} in alertmanager.yml (outside comments) stands in a double-quoted YAML string,
    which is what render.sh escapes for, and compose.yaml gives Alertmanager the variable."""
    compose = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
    environment = compose["services"]["alertmanager"]["environment"]
    names = set()
    for line in CONFIG.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        for match in _PLACEHOLDER.finditer(line):
            names.add(match[1])
            assert re.search(r'"[^"]*' + re.escape(match[0]) + r'[^"]*"', line), line
    assert names == set(SETTINGS)
    assert set(environment) == names


def test_compose_runs_alertmanager_on_the_rendered_config() -> None:
    """The container renders the mounted alertmanager.yml into its data volume, then execs
    Alertmanager on that file with the command's flags."""
    service = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))["services"][
        "alertmanager"
    ]
    entrypoint = service["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    script = entrypoint[2]
    assert script.startswith(
        "/bin/sh /etc/alertmanager/render.sh /etc/alertmanager/alertmanager.yml "
        "/alertmanager/alertmanager.yml && exec /bin/alertmanager "
    )
    # compose turns $$ into $: the shell gets "$@", the command's flags
    assert script.endswith('"$$@"')
    assert "--config.file=/alertmanager/alertmanager.yml" in service["command"]
    assert "--cluster.listen-address=" in service["command"]
