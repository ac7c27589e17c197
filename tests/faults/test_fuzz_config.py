"""Fuzzing the config loader: whatever the file holds, the answer is a config or a ConfigError,
and no error shows a secret (the environment's ``$X`` is the sentinel)."""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sheepdog.config import load_config, parse_config
from sheepdog.core.errors import ConfigError
from tests.faults.conftest import FIGURES
from tests.support.fuzzing import examples
from tests.support.strategies import documents

pytestmark = pytest.mark.fuzz

KNOWN_KEYS = [
    "listen",
    "state_dir",
    "log_format",
    "log_level",
    "auth",
    "bearer_tokens",
    "basic",
    "username",
    "password",
    "proxy",
    "upstream",
    "base_url",
    "api_key",
    "api_key_file",
    "timeout_seconds",
    "connect_timeout_seconds",
    "bearer_tokens_file",
    "password_file",
    "ca_file",
    "template",
    "max_body_bytes",
    "clients",
    "name",
    "key",
    "key_file",
    "monthly_budget_usd",
    "billing",
    "currency",
    "usd_rate",
    "market_usd_rate",
    "pricing",
    "input",
    "output",
    "bridge",
    "timezone",
    "templates_dir",
    "targets",
    "type",
    "url",
    "url_file",
    "mentions",
    "userids",
    "mobiles",
    "rate_per_minute",
    "smtp",
    "host",
    "port",
    "security",
    "from",
    "to",
    "retry",
]
SENTINEL = "fuzz-sentinel-secret-4242"
# Values a path may take that the filesystem refuses, or that come from the environment.
PATHS = [
    "\x00",
    "secret\x00.txt",
    "${X}",
    "${X}/key",
    "/etc/${X}",
    "~nosuchuser-4242/key",
    "~",
    "/",
    "",
    "/dev/null",
    "a" * 300,
]

values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "wechat",
            "slack",
            "email",
            "log",
            "127.0.0.1:8000",
            "${X}",
            "${X:-d}",
            "https://example.com/x",
            SENTINEL,
            "0.0.0.0:1",
            "starttls",
            "json",
            *PATHS,
        ]
    ),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8), st.integers())
trees: st.SearchStrategy[Any] = documents(values, keys=keys, max_size=5, max_leaves=30)


def _error_of(load: Callable[[], object]) -> ConfigError | None:
    """The ConfigError that ``load`` raised, or None; any other exception fails the test."""
    try:
        load()
    except ConfigError as error:
        return error
    return None


SECRET_KEYS = {"api_key", "key", "password", "url", "bearer_tokens"}


def _names_a_secret(path: str) -> bool:
    """Whether the error is about a secret field (other values, e.g. ``listen``, may be echoed)."""
    keys = {part.split("[")[0].removesuffix("_file") for part in path.split(".")}
    return bool(keys & SECRET_KEYS)


def _section_skeleton(tree: Any) -> dict[str, Any]:
    """Put a random tree under a real section, so the fuzzer reaches the deeper validators."""
    return {"proxy": {"clients": [tree]}, "bridge": {"targets": {"t": tree}}}


@settings(max_examples=examples(400))
@given(tree=trees)
# Found by fuzzing: a null byte in a path, and a path from the environment echoed in the error.
@example(tree={"api_key_file": "\x00"})
@example(tree={"api_key_file": "${X}"})
def test_any_yaml_tree_gives_a_config_or_a_config_error(tree: Any) -> None:
    """Wrong types, nulls, nesting and unknown keys raise ConfigError, never another exception,
    and an error about a secret field never echoes the secret."""
    FIGURES.fuzzed["config trees (each under 4 sections)"] += 1
    for candidate in (tree, _section_skeleton(tree), {"auth": tree}, {"proxy": {"upstream": tree}}):
        error = _error_of(lambda raw=candidate: parse_config(raw, env={"X": SENTINEL}))
        if error is not None:
            assert error.path
            if _names_a_secret(error.path):
                assert SENTINEL not in str(error)


def _secret_file_configs(path: str) -> dict[str, dict[str, Any]]:
    """Each secret given as ``<key>_file: path``, where the loader reads it, in a config that
    is valid otherwise: key path of the secret → config."""
    smtp = {"host": "127.0.0.1", "username": "am", "password_file": path}
    email = {"type": "email", "smtp": smtp, "from": "a@example.com", "to": ["b@example.com"]}
    return {
        "proxy.upstream.api_key": {"proxy": {"upstream": {"api_key_file": path}}},
        "proxy.clients[0].key": {"proxy": {"clients": [{"name": "c", "key_file": path}]}},
        "auth.bearer_tokens": {"auth": {"bearer_tokens_file": [path]}},
        "auth.basic.password": {"auth": {"basic": {"username": "am", "password_file": path}}},
        "bridge.targets.t.url": {
            "bridge": {"targets": {"t": {"type": "wechat", "url_file": path}}}
        },
        "bridge.targets.t.smtp.password": {"bridge": {"targets": {"t": email}}},
    }


@settings(max_examples=examples(100))
@given(
    path=st.lists(
        st.sampled_from(PATHS) | st.text(alphabet="/.~$X{}\x00ab-", max_size=6), max_size=4
    ).map("".join)
)
def test_a_secret_file_path_that_cannot_be_read_is_a_config_error_naming_the_key(
    path: str,
) -> None:
    """Every ``_file`` secret: a path that is no readable file (null bytes, ~user, directories,
    names from the environment) is a ConfigError at that key, which never shows the secret."""
    FIGURES.fuzzed["secret file paths (each at 6 keys)"] += 1
    for key, raw in _secret_file_configs(path).items():
        error = _error_of(lambda raw=raw: parse_config(raw, env={"X": SENTINEL}))
        if error is not None:
            assert error.path.startswith(key), (key, str(error))
            assert SENTINEL not in str(error)


@settings(
    max_examples=examples(200),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=300) | st.text(alphabet=string.printable + "：中{}[]", max_size=300))
def test_any_file_content_gives_a_config_or_a_config_error(
    tmp_path: Path, data: bytes | str
) -> None:
    """Invalid UTF-8, broken YAML and arbitrary text in the file are reported as config errors."""
    FIGURES.fuzzed["config files (bytes and text)"] += 1
    path = tmp_path / "sheepdog.yaml"
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    error = _error_of(lambda: load_config(path, {}))
    if error is not None:
        assert error.path
