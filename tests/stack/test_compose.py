"""compose.yaml, the Dockerfile, the config sheepdog runs with in compose, and .env.example."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.stack._optional import enable
from tests.stack._procs import REPO, parse_duration

# The Compose Specification's JSON schema, as the dclint package on the npm registry ships it;
# `scripts/setup --test` fetches it (see there).
SCHEMA = REPO / ".cache" / "compose-spec" / "compose.schema.json"
DEPLOY_CONFIG = REPO / "deploy" / "sheepdog.compose.yaml"
TOKEN_SECRET = "sheepdog_alert_token"
SMTP_SECRET = "smtp_password"
STACK = {"sheepdog", "prometheus", "alertmanager", "grafana", "node-exporter", "blackbox-exporter"}
HA = {
    "postgres",
    "sheepdog-1",
    "sheepdog-2",
    "sheepdog-lb",
    "alertmanager-1",
    "alertmanager-2",
    "prometheus-ha",
}
HA_CONFIG = REPO / "deploy" / "sheepdog.ha.yaml"
DATABASE_SECRETS = ("postgres_password", "sheepdog_database_url")
# ${VAR}, ${VAR:-default}, ${VAR:?message}; $$ is an escaped dollar in compose.
_INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?][^}]*)?\}")


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
    return doc


def _env_example(optional: bool = False) -> dict[str, str]:
    """NAME=value of .env.example; with ``optional``, its optional blocks' too, uncommented."""
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    values = {}
    for line in (enable(text) if optional else text).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def _strings(node: Any) -> list[str]:
    """Every string value (and mapping key) in a parsed YAML document."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*_strings(key), *_strings(value))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            mounts.append((source, rest.split(":")[0]))
        else:
            mounts.append((volume.get("source", ""), volume["target"]))
    return mounts


def _schema() -> dict[str, Any]:
    if not SCHEMA.is_file():
        pytest.skip(
            f"{SCHEMA} is missing: `scripts/setup --test` fetches it where npm is available"
        )
    schema: dict[str, Any] = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return schema


def test_compose_file_matches_the_compose_specification_schema() -> None:
    """compose.yaml validates against the Compose Specification's JSON schema."""
    schema = _schema()
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(_compose()), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_rejects_a_broken_compose_file() -> None:
    """The schema is strict enough to catch a misspelt service key."""
    schema = _schema()
    broken = _compose()
    broken["services"]["sheepdog"]["helthcheck"] = broken["services"]["sheepdog"]["healthcheck"]
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_the_whole_stack_is_defined() -> None:
    """sheepdog, Prometheus, Alertmanager, Grafana, node-exporter and blackbox-exporter run;
    the ha profile adds PostgreSQL, two replicas and their load balancer, two Alertmanagers and
    a Prometheus of its own."""
    assert set(_compose()["services"]) == STACK | HA


def test_every_mounted_repository_path_exists() -> None:
    """Every relative bind-mount source is a file or directory of the repository."""
    for name, service in _compose()["services"].items():
        for source, _target in _bind_mounts(service):
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"


def test_referenced_services_volumes_and_secrets_are_defined() -> None:
    """depends_on, named volumes and secrets refer to definitions in the file."""
    compose = _compose()
    services = set(compose["services"])
    volumes = set(compose.get("volumes") or {})
    secrets = set(compose.get("secrets") or {})
    for name, service in compose["services"].items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name}: depends_on {dependency}"
        for source, _target in _bind_mounts(service):
            if not source.startswith(("/", ".", "~")):
                assert source in volumes, f"{name}: volume {source} is not declared"
        for secret in service.get("secrets", []):
            secret_name = secret if isinstance(secret, str) else secret["source"]
            assert secret_name in secrets, f"{name}: secret {secret_name} is not declared"


def test_hostnames_in_the_stack_configs_are_compose_services() -> None:
    """Hosts that Prometheus, Alertmanager and Grafana talk to are services of compose.yaml."""
    services = set(_compose()["services"])
    texts = [
        (REPO / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"),
        (REPO / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8"),
        (REPO / "grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8"),
    ]
    hosts = {
        host
        for text in texts
        for host in re.findall(r"(?:http://|\")([a-z][a-z-]*):\d+", text)
        if host != "localhost"
    }
    assert hosts, "no host:port found"
    assert hosts <= services, hosts - services


def test_images_are_pinned_and_services_have_healthchecks() -> None:
    """No :latest or untagged image; every service has a healthcheck and a restart policy."""
    for name, service in _compose()["services"].items():
        image = service["image"]
        tag = image.rpartition(":")[2] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: image {image} is not pinned"
        assert service["healthcheck"]["test"], name
        assert service.get("restart") == "unless-stopped", name


def test_healthchecks_poll_fast_while_starting() -> None:
    """Every healthcheck has a start period with a short start_interval, so a dependant (Grafana
    on Prometheus) starts as soon as the service is ready, not one 30 s interval later."""
    for name, service in _compose()["services"].items():
        check = service["healthcheck"]
        assert parse_duration(check["start_interval"]) <= 2, name
        assert parse_duration(check["start_period"]) >= 10, name
        assert parse_duration(check["interval"]) == 30, name


def test_node_exporter_sees_the_host_behind_its_profile() -> None:
    """node-exporter is opt-in (profile host-metrics: Linux hosts), in the host's network and
    process namespaces with the host's root filesystem; it listens on the docker0 address by
    default, Prometheus reaches it as host.docker.internal, and its healthcheck asks the
    landing page, not /metrics."""
    services = _compose()["services"]
    node = services["node-exporter"]
    assert node["profiles"] == ["host-metrics"]
    assert (node["network_mode"], node["pid"]) == ("host", "host")
    assert node["volumes"] == ["/:/host:ro,rslave"]
    assert "--path.rootfs=/host" in node["command"]
    listen = "${NODE_EXPORTER_ADDRESS:-172.17.0.1}:9100"
    assert f"--web.listen-address={listen}" in node["command"]
    assert node["healthcheck"]["test"][-1] == f"http://{listen}/"
    assert "ports" not in node
    assert services["prometheus"]["extra_hosts"] == ["host.docker.internal:host-gateway"]
    prometheus = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text("utf-8"))
    (job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "node"]
    assert job["static_configs"] == [{"targets": ["host.docker.internal:9100"]}]
    # the other services are in the compose network and start without a profile, or in the
    # ha profile on the ha network
    for name, service in services.items():
        if name in HA:
            assert service["profiles"] == ["ha"], name
            assert list(service["networks"]) == ["ha"], name
        elif name != "node-exporter":
            assert "profiles" not in service and "network_mode" not in service, name


def test_alertmanager_runs_alone() -> None:
    """A single Alertmanager: no gossip cluster listener on :9094."""
    assert "--cluster.listen-address=" in _compose()["services"]["alertmanager"]["command"]


def test_state_lives_in_named_volumes() -> None:
    """sheepdog's state_dir, and Prometheus, Alertmanager and Grafana data, are named volumes."""
    compose = _compose()
    expected = {
        "sheepdog": "/var/lib/sheepdog",
        "prometheus": "/prometheus",
        "alertmanager": "/alertmanager",
        "grafana": "/var/lib/grafana",
    }
    for name, target in expected.items():
        sources = {t: s for s, t in _bind_mounts(compose["services"][name])}
        assert sources.get(target) in compose["volumes"], f"{name}: {target}"
    deploy = yaml.safe_load(DEPLOY_CONFIG.read_text(encoding="utf-8"))
    assert deploy["state_dir"] == expected["sheepdog"]


def test_sheepdog_runs_the_compose_config_and_prometheus_its_rules() -> None:
    """The config paths in the commands are where the repository directories are mounted."""
    services = _compose()["services"]
    sheepdog = services["sheepdog"]
    mounts = {s: t for s, t in _bind_mounts(sheepdog)}
    config_path = f"{mounts['./deploy']}/{DEPLOY_CONFIG.name}"
    assert sheepdog["command"] == ["sheepdog", "serve", "--config", config_path]
    assert sheepdog["environment"]["SHEEPDOG_CONFIG"] == config_path
    prometheus = services["prometheus"]
    assert ("./prometheus", "/etc/prometheus") in _bind_mounts(prometheus)
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    alertmanager = services["alertmanager"]
    assert ("./alertmanager", "/etc/alertmanager") in _bind_mounts(alertmanager)
    # rendered from /etc/alertmanager/alertmanager.yml first (test_alertmanager_render.py)
    assert "--config.file=/alertmanager/alertmanager.yml" in alertmanager["command"]
    assert "/etc/alertmanager/alertmanager.yml" in alertmanager["entrypoint"][2]
    blackbox = services["blackbox-exporter"]
    assert ("./blackbox", "/etc/blackbox_exporter") in _bind_mounts(blackbox)
    assert "--config.file=/etc/blackbox_exporter/blackbox.yml" in blackbox["command"]


def test_secrets_are_files_that_sheepdog_and_alertmanager_both_read() -> None:
    """The alert token and the SMTP password are file secrets (not `environment:` secrets, which
    Compose 2.27.1 to 2.28.1 and 2.40.1 mishandle), mounted into both sheepdog and Alertmanager,
    and each side's config reads them at /run/secrets/<name>."""
    compose = _compose()
    assert compose["secrets"] == {
        name: {"file": f"./secrets/{name}"}
        for name in (TOKEN_SECRET, SMTP_SECRET, *DATABASE_SECRETS)
    }
    for service in ("sheepdog", "alertmanager", "alertmanager-1", "alertmanager-2"):
        assert compose["services"][service]["secrets"] == [TOKEN_SECRET, SMTP_SECRET], service
    for service in ("sheepdog-1", "sheepdog-2"):
        assert compose["services"][service]["secrets"] == [
            TOKEN_SECRET,
            SMTP_SECRET,
            "sheepdog_database_url",
        ], service
    alertmanager = (REPO / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8")
    assert set(re.findall(r"credentials_file:\s*(\S+)", alertmanager)) == {
        f"/run/secrets/{TOKEN_SECRET}"
    }
    assert re.findall(r"smtp_auth_password_file:\s*(\S+)", alertmanager) == [
        f"/run/secrets/{SMTP_SECRET}"
    ]
    deploy = yaml.safe_load(DEPLOY_CONFIG.read_text(encoding="utf-8"))
    assert deploy["auth"] == {"bearer_tokens_file": [f"/run/secrets/{TOKEN_SECRET}"]}
    smtp = deploy["bridge"]["targets"]["ops-email"]["smtp"]
    assert smtp["password_file"] == f"/run/secrets/{SMTP_SECRET}"
    assert "password" not in smtp


def test_secret_files_stay_out_of_git() -> None:
    """secrets/ is git-ignored (and, like everything else, out of the image's build context)."""
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "/secrets/" in ignored


def test_every_dollar_in_compose_is_an_interpolation_or_escaped() -> None:
    """`$$` is a literal dollar (the alertmanager entrypoint's "$$@"); any other `$` starts a
    ${VAR} that Compose fills in, or Compose rejects the file."""
    for value in _strings(_compose()):
        without_escapes = value.replace("$$", "")
        dollars = without_escapes.count("$")
        assert dollars == len(_INTERPOLATION.findall(without_escapes)), value


def test_secrets_in_compose_come_from_env_interpolation() -> None:
    """Every secret-like environment value in compose.yaml is a ${VAR} from .env, not a literal."""
    secret_like = re.compile(r"TOKEN|KEY|PASSWORD|SECRET|WEBHOOK|SMTP_USERNAME")
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key.endswith("_FILE"):  # a path to a file secret, not the secret
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}={value!r}"
            elif secret_like.search(key):
                assert _INTERPOLATION.fullmatch(str(value)), f"{name}: {key}={value!r}"


def test_every_variable_is_documented_in_env_example() -> None:
    """Each ${VAR} of compose.yaml, the compose config of sheepdog and alertmanager.yml (their
    optional blocks uncommented) has a line in .env.example (in its optional blocks, for the
    optional targets), and .env.example holds nothing unused."""
    documented = set(_env_example(optional=True))
    used = set()
    for path in (REPO / "compose.yaml", DEPLOY_CONFIG, REPO / "alertmanager" / "alertmanager.yml"):
        document = yaml.safe_load(enable(path.read_text(encoding="utf-8")))
        for text in _strings(document):
            used |= {m["name"] for m in _INTERPOLATION.finditer(text)}
    assert used - documented == set(), "missing from .env.example"
    assert documented - used == set(), "in .env.example but never used"


def test_env_example_holds_only_placeholders() -> None:
    """Secret values in .env.example are placeholders, so no real secret is committed."""
    for name, value in _env_example(optional=True).items():
        if re.search(r"TOKEN|KEY|PASSWORD|WEBHOOK|SECRET|HOOK_ID", name):
            assert re.search(r"replace|REPLACE", value), f"{name}={value!r}"


def _check_deploy_config(
    tmp_path: Path, env: dict[str, str], secrets: dict[str, str], *, optional: bool = False
) -> Any:
    """`sheepdog check-config` on deploy/sheepdog.compose.yaml (its optional blocks uncommented,
    with ``optional``) with /run/secrets/ pointing at ``secrets`` written to ``tmp_path``, and
    ``env`` as the environment."""
    for name, value in secrets.items():
        (tmp_path / name).write_text(value + "\n", encoding="utf-8")
    config = tmp_path / DEPLOY_CONFIG.name
    text = DEPLOY_CONFIG.read_text(encoding="utf-8")
    text = enable(text) if optional else text
    assert "/run/secrets/" in text
    config.write_text(text.replace("/run/secrets/", f"{tmp_path}/"), encoding="utf-8")
    env = {key: value for key, value in env.items() if key != "SHEEPDOG_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "sheepdog.cli", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


SECRET_FILES = {TOKEN_SECRET: "a-long-random-token", SMTP_SECRET: "smtp-password"}


def test_compose_config_of_sheepdog_is_valid(tmp_path: Path) -> None:
    """`sheepdog check-config` accepts deploy/sheepdog.compose.yaml with .env.example's values
    and the secret files in place."""
    result = _check_deploy_config(tmp_path, {**os.environ, **_env_example()}, SECRET_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "auth: 1 bearer token(s)" in result.stdout
    assert "bridge.watchdog: → ops-wechat after 10m (600s) without a heartbeat" in result.stdout
    for secret in SECRET_FILES.values():
        assert secret not in result.stdout + result.stderr
    deploy = yaml.safe_load(DEPLOY_CONFIG.read_text(encoding="utf-8"))
    assert deploy["listen"] == "0.0.0.0:8000"
    assert set(deploy["bridge"]["targets"]) == {"ops-wechat", "ops-slack", "ops-email"}


def test_compose_config_of_sheepdog_is_valid_with_the_optional_targets(tmp_path: Path) -> None:
    """With its DingTalk and Feishu blocks uncommented and .env.example's optional values set,
    the deploy config is valid and describes both robots as signed, printing no secret."""
    env = {**os.environ, **_env_example(optional=True)}
    result = _check_deploy_config(tmp_path, env, SECRET_FILES, optional=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ops-dingtalk: dingtalk → oapi.dingtalk.com, signed (加签), 20/min" in result.stdout
    assert "ops-feishu: feishu → open.feishu.cn (Feishu), at most 5/s, signed" in result.stdout
    for name, value in _env_example(optional=True).items():
        if name.startswith(("DINGTALK_", "FEISHU_")):
            assert value not in result.stdout + result.stderr


@pytest.mark.parametrize("missing", sorted(SECRET_FILES))
def test_compose_config_of_sheepdog_needs_the_secret_files(tmp_path: Path, missing: str) -> None:
    """Without a secret file the config is refused (exit 2), naming the file."""
    secrets = {name: value for name, value in SECRET_FILES.items() if name != missing}
    result = _check_deploy_config(tmp_path, {**os.environ, **_env_example()}, secrets)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{tmp_path}/{missing}" in result.stdout + result.stderr


def _dockerfile() -> list[str]:
    """Dockerfile instructions, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_dockerfile_builds_a_small_non_root_image() -> None:
    """One python:3.N-slim-<Debian> base for both stages (a Python that pyproject.toml allows),
    `pip install .`, a non-root USER, port 8000, the SPEC's command."""
    lines = _dockerfile()
    bases = {line.split()[1] for line in lines if line.startswith("FROM ")}
    (base,) = bases
    image = re.fullmatch(r"python:3\.(?P<minor>\d+)-slim-(?P<debian>[a-z]+)", base)
    assert image, base
    requires = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "requires-python"
    ]
    assert requires == ">=3.11"
    assert int(image["minor"]) >= 11
    assert any(re.search(r"pip install \.$", line) for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert "EXPOSE 8000" in lines
    assert 'CMD ["sheepdog", "serve", "--config", "/etc/sheepdog/sheepdog.yaml"]' in lines


def test_dockerfile_healthcheck_asks_the_liveness_endpoint_with_urllib() -> None:
    """The image's HEALTHCHECK fetches /-/healthy with Python's urllib (no curl in slim images)."""
    (healthcheck,) = [line for line in _dockerfile() if line.startswith("HEALTHCHECK ")]
    assert "urllib.request" in healthcheck
    assert "http://127.0.0.1:8000/-/healthy" in healthcheck


@pytest.mark.parametrize("path", [".env", "secrets/", "var/", "tests/", "prometheus/", ".git/"])
def test_dockerignore_keeps_secrets_and_the_stack_out_of_the_image(path: str) -> None:
    """.dockerignore starts from nothing and lets in only the package sources."""
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    assert not any(Path(path).parts[0] == entry for entry in allowed), path


def test_the_ha_replicas_run_the_ha_config_which_differs_only_in_its_state() -> None:
    """Both replicas run deploy/sheepdog.ha.yaml: the compose config with the state in
    PostgreSQL (its URL a file secret) and two processes each; nothing else differs."""
    services = _compose()["services"]
    config_path = f"/etc/sheepdog/{HA_CONFIG.name}"
    for name in ("sheepdog-1", "sheepdog-2"):
        assert services[name]["command"] == ["sheepdog", "serve", "--config", config_path]
        assert services[name]["environment"]["SHEEPDOG_CONFIG"] == config_path
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        environment = {**services[name]["environment"], "SHEEPDOG_CONFIG": None}
        assert environment == {**services["sheepdog"]["environment"], "SHEEPDOG_CONFIG": None}
    single = yaml.safe_load(DEPLOY_CONFIG.read_text(encoding="utf-8"))
    ha = yaml.safe_load(HA_CONFIG.read_text(encoding="utf-8"))
    assert ha.pop("database") == {"url_file": "/run/secrets/sheepdog_database_url"}
    assert ha.pop("workers") == 2
    assert ha == single


def test_the_ha_load_balancer_answers_as_sheepdog_and_spreads_over_both_replicas() -> None:
    """On the ha network the load balancer is `sheepdog` (where alertmanager.yml posts), and
    its nginx config sends to both replicas without buffering streams."""
    lb = _compose()["services"]["sheepdog-lb"]
    assert lb["networks"] == {"ha": {"aliases": ["sheepdog"]}}
    assert ("./deploy/nginx.ha.conf", "/etc/nginx/nginx.conf") in _bind_mounts(lb)
    nginx = (REPO / "deploy" / "nginx.ha.conf").read_text(encoding="utf-8")
    assert re.findall(r"server (sheepdog-\d):8000", nginx) == ["sheepdog-1", "sheepdog-2"]
    assert "proxy_buffering off;" in nginx
    assert "non_idempotent" not in nginx  # a POST that reached a replica is not sent again
    assert "http://sheepdog:8000/alerts/" in (REPO / "alertmanager" / "alertmanager.yml").read_text(
        encoding="utf-8"
    )


def test_the_ha_alertmanagers_form_one_cluster_and_prometheus_scrapes_both_replicas() -> None:
    """The two Alertmanagers gossip with each other; the ha Prometheus scrapes both replicas
    and both Alertmanagers and sends its alerts to both."""
    services = _compose()["services"]
    for name in ("alertmanager-1", "alertmanager-2"):
        command = services[name]["command"]
        assert "--cluster.listen-address=0.0.0.0:9094" in command
        peers = {arg.split("=", 1)[1] for arg in command if arg.startswith("--cluster.peer=")}
        assert peers == {"alertmanager-1:9094", "alertmanager-2:9094"}
    prometheus = services["prometheus-ha"]
    assert "--config.file=/etc/prometheus/prometheus.ha.yml" in prometheus["command"]
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.ha.yml").read_text("utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["sheepdog"]["static_configs"] == [
        {"targets": ["sheepdog-1:8000", "sheepdog-2:8000"]}
    ]
    targets = ["alertmanager-1:9093", "alertmanager-2:9093"]
    assert config["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": targets}]}]
    assert config["rule_files"] == ["rules/*.yml"]
    hosts = {
        host.rsplit(":", 1)[0]
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for host in static["targets"]
    } - {"localhost"}
    assert hosts <= HA


def test_the_ha_config_of_sheepdog_is_valid(tmp_path: Path) -> None:
    """`sheepdog check-config` accepts deploy/sheepdog.ha.yaml with its secret files, and
    prints where the database is without its password."""
    password = "SENTINEL-compose-db-password"
    secrets = {
        **SECRET_FILES,
        "sheepdog_database_url": f"postgresql://sheepdog:{password}@postgres:5432/sheepdog",
    }
    for name, value in secrets.items():
        (tmp_path / name).write_text(value + "\n", encoding="utf-8")
    config = tmp_path / HA_CONFIG.name
    text = HA_CONFIG.read_text(encoding="utf-8").replace("/run/secrets/", f"{tmp_path}/")
    config.write_text(text, encoding="utf-8")
    env = {key: value for key, value in {**os.environ, **_env_example()}.items()}
    env.pop("SHEEPDOG_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "sheepdog.cli", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "database: postgresql://postgres:5432/sheepdog" in result.stdout
    assert "workers: 2" in result.stdout
    assert password not in result.stdout + result.stderr
