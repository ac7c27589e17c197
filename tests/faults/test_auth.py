"""Auth: every endpoint that needs credentials refuses without them; comparisons in constant time.

``POST /alerts/*`` and ``POST /-/reload`` need the ``auth`` credentials, ``/v1/*`` a client key.
Each is tried with no credentials and with every kind of wrong one (the other realm's secret,
a wrong password, a malformed header); each refusal must be a 401 that changes nothing. Constant
time is checked by construction, not by timing: every comparison of a presented credential goes
through :func:`hmac.compare_digest`, every configured token is compared whichever matches, and
no code compares a revealed secret with ``==``.
"""

from __future__ import annotations

import ast
import base64
import hmac
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

import sheepdog.core.secret
from sheepdog.config import load_config
from sheepdog.core.auth import is_authorized
from tests.bridge.conftest import make_payload
from tests.faults.conftest import FIGURES, StartApp
from tests.peers.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[2]
TOKENS = ["auth-token-one", "auth-token-two", "auth-token-three"]
PASSWORD = "auth-basic-password"
CLIENT_KEY = "auth-client-key"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


WRONG = {
    "no header": None,
    "empty": "",
    "scheme only": "Bearer",
    "bearer, wrong token": "Bearer auth-token-fou",
    "bearer, a token's prefix": "Bearer auth-token-",
    "bearer, token with a suffix": "Bearer auth-token-onex",
    "basic, wrong password": basic("alertmanager", "auth-basic-passwore"),
    "basic, wrong user": basic("alertmanage", PASSWORD),
    "basic, no colon": "Basic " + base64.b64encode(b"alertmanager").decode(),
    "basic, not base64": "Basic !!!not-base64!!!",
    "basic, not UTF-8": "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
    "token in the basic scheme": f"Basic {TOKENS[0]}",
    "unknown scheme": f"Token {TOKENS[0]}",
    "the client key": f"Bearer {CLIENT_KEY}",
}
WRONG_FOR_PROXY = {
    "no header": None,
    "empty": "",
    "scheme only": "Bearer",
    "wrong key": "Bearer auth-client-kez",
    "the key's prefix": "Bearer auth-client-",
    "key with a suffix": f"Bearer {CLIENT_KEY}x",
    "an alert token": f"Bearer {TOKENS[0]}",
    "basic with the key": basic("x", CLIENT_KEY),
    "unknown scheme": f"Token {CLIENT_KEY}",
}


@pytest.fixture
def config(tmp_path: Path, upstream: FakeUpstream) -> Any:
    """The config, from a file (so that a reload reads it again)."""
    path = tmp_path / "sheepdog.yaml"
    document = {
        "state_dir": str(tmp_path / "state"),
        "auth": {
            "bearer_tokens": TOKENS,
            "basic": {"username": "alertmanager", "password": PASSWORD},
        },
        "proxy": {
            "upstream": {"base_url": upstream.base_url, "api_key": "auth-upstream-key"},
            "clients": [{"name": "team", "key": CLIENT_KEY}],
        },
        "bridge": {"targets": {"ops": {"type": "log"}, "other": {"type": "log"}}},
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return load_config(path, env={})


async def test_every_endpoint_needing_credentials_refuses_without_them(
    start_bridge: StartApp, config: Any, upstream: FakeUpstream, registry: CollectorRegistry
) -> None:
    """/alerts/*, /-/reload and /v1/* answer 401 to missing or wrong credentials, and do nothing."""
    client = await start_bridge(config)
    payload = make_payload(1)
    refusals = 0
    alert_bodies: set[str] = set()

    async def refused(method: str, path: str, authorization: str | None, **kwargs: Any) -> None:
        nonlocal refusals
        headers = {} if authorization is None else {"Authorization": authorization}
        response = await client.request(method, path, headers=headers, **kwargs)
        assert response.status == 401, (path, authorization, await response.text())
        assert "WWW-Authenticate" in response.headers
        if not path.startswith("/v1/"):
            alert_bodies.add(await response.text())
        refusals += 1

    for wrong in WRONG.values():
        for target in ("ops", "other", "not-configured"):  # the target list is not revealed
            await refused("POST", f"/alerts/{target}", wrong, json=payload)
        await refused("POST", "/-/reload", wrong)
    for wrong in WRONG_FOR_PROXY.values():
        for method, path in (
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/completions"),
            ("POST", "/v1/embeddings"),
            ("POST", "/v1/responses"),
            ("GET", "/v1/models"),
            ("GET", "/v1/files/x"),
            ("DELETE", "/v1/anything"),
        ):
            await refused(method, path, wrong, json={"model": "gpt-4.1"})

    # The answer says nothing about which part was wrong.
    assert len(alert_bodies) == 1
    # Nothing was stored, relayed or reloaded.
    assert (
        registry.get_sample_value(
            "sheepdog_alerts_received_total", {"target": "ops", "status": "firing"}
        )
        == 0
    )
    assert upstream.received == []
    reloaded_at = registry.get_sample_value("sheepdog_config_last_reload_success_timestamp_seconds")
    # The right credentials work, each of them.
    rights = [f"Bearer {token}" for token in TOKENS] + [basic("alertmanager", PASSWORD)]
    for authorization in rights:
        response = await client.post(
            "/alerts/ops", json=payload, headers={"Authorization": authorization}
        )
        assert response.status == 200
    response = await client.post("/-/reload", headers={"Authorization": f"Bearer {TOKENS[2]}"})
    assert response.status == 200
    assert (
        registry.get_sample_value("sheepdog_config_last_reload_success_timestamp_seconds")
        >= reloaded_at
    )
    response = await client.get("/v1/models", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert response.status == 200
    # Open by design (Prometheus scrapes, orchestrators probe): no secret behind them.
    for path in ("/metrics", "/-/healthy", "/-/ready"):
        assert (await client.get(path)).status == 200
    FIGURES.fault("requests with missing or wrong credentials refused", refusals)


@pytest.fixture
def compare_digest_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Record every call of hmac.compare_digest made by sheepdog's credential checks."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    return calls


class _Request:
    def __init__(self, authorization: str) -> None:
        self.headers = {"Authorization": authorization}


def test_every_token_is_compared_in_constant_time_whichever_matches(
    config: Any, compare_digest_calls: list[tuple[bytes, bytes]]
) -> None:
    """Bearer: all three tokens compared by compare_digest even when the first one matches."""
    request: Any = _Request(f"Bearer {TOKENS[0]}")
    assert is_authorized(request, config.auth)
    assert sorted(expected for expected, _ in compare_digest_calls) == sorted(
        token.encode() for token in TOKENS
    )
    assert {presented for _, presented in compare_digest_calls} == {TOKENS[0].encode()}

    compare_digest_calls.clear()
    request = _Request(basic("intruder", PASSWORD))
    assert not is_authorized(request, config.auth)
    # Username and password are both compared, in constant time, whatever the username.
    assert (b"alertmanager", b"intruder") in compare_digest_calls
    assert (PASSWORD.encode(), PASSWORD.encode()) in compare_digest_calls


def test_client_keys_are_compared_in_constant_time(
    config: Any, compare_digest_calls: list[tuple[bytes, bytes]]
) -> None:
    """A client key is found by its SHA-256, then confirmed with compare_digest."""
    from proxy.clients import ClientDirectory

    directory = ClientDirectory(config.proxy.clients)
    caller = directory.authenticate(f"Bearer {CLIENT_KEY}")
    assert not isinstance(caller, str) and caller.name == "team"
    assert compare_digest_calls == [(CLIENT_KEY.encode(), CLIENT_KEY.encode())]
    assert directory.authenticate("Bearer auth-client-kez") == "invalid_key"


def test_no_code_compares_a_revealed_secret_with_equality() -> None:
    """By construction: no ==, != or `in` on a revealed secret; Secret compares with hmac."""
    offenders = []
    for package in ("sheepdog", "proxy", "bridge"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Compare):
                    continue
                sides = [node.left, *node.comparators]
                if any(_reveals(side) for side in sides):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
    source = Path(sheepdog.core.secret.__file__).read_text(encoding="utf-8")
    secret_class = next(
        n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == "Secret"
    )
    for method in ("matches", "__eq__"):
        function = next(
            n for n in secret_class.body if isinstance(n, ast.FunctionDef) and n.name == method
        )
        calls = {ast.unparse(n.func) for n in ast.walk(function) if isinstance(n, ast.Call)}
        assert "hmac.compare_digest" in calls, method


def _reveals(node: ast.AST) -> bool:
    """Whether ``node`` is (or wraps) a ``.reveal()`` call."""
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "reveal"
        for n in ast.walk(node)
    )
