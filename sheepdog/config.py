"""The configuration: typed, validated, with complete defaults (an empty file is a valid config).

Loading goes: YAML → ``${VAR}`` expansion → validation into frozen dataclasses. Every error is a
:class:`ConfigError` that names the key path and never echoes a secret.
"""

from __future__ import annotations

import ipaddress
import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from sheepdog.core.config_reader import Section, check_http_url
from sheepdog.core.envsubst import expand_tree
from sheepdog.core.errors import ConfigError
from sheepdog.core.secret import Secret
from sheepdog.pricing_table import DEFAULT_PRICING

__all__ = [
    "AuthConfig",
    "BasicAuth",
    "BillingConfig",
    "BridgeConfig",
    "ClientConfig",
    "Config",
    "ConfigError",
    "ModelPrice",
    "ProxyConfig",
    "RetryConfig",
    "SmtpConfig",
    "TargetConfig",
    "UpstreamConfig",
    "discover_config_path",
    "load_config",
    "parse_config",
    "secrets_of",
]

TargetType = Literal["wechat", "slack", "email", "log"]
SmtpSecurity = Literal["starttls", "tls", "none"]
LogFormat = Literal["text", "json"]

_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MIB: Final = 1024 * 1024

# Messages per minute a target may be sent when its config says nothing (0 means no limit).
DEFAULT_RATE_PER_MINUTE: Final[dict[str, float]] = {
    "wechat": 20.0,
    "slack": 60.0,
    "email": 60.0,
    "log": 0.0,
}
DEFAULT_SMTP_PORT: Final[dict[str, int]] = {"starttls": 587, "tls": 465, "none": 25}


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: Secret


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Credentials that ``POST /alerts/*`` and ``POST /-/reload`` accept."""

    bearer_tokens: tuple[Secret, ...] = ()
    basic: BasicAuth | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.bearer_tokens) or self.basic is not None


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    base_url: str = "https://api.holysheep.ai/v1"
    api_key: Secret | None = None
    timeout_seconds: float = 120.0
    connect_timeout_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class ClientConfig:
    name: str
    key: Secret
    monthly_budget_usd: float | None = None


@dataclass(frozen=True, slots=True)
class BillingConfig:
    currency: str = "CNY"
    usd_rate: float = 1.0
    market_usd_rate: float = 7.3


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1M tokens."""

    input: float
    output: float


def _default_pricing() -> dict[str, ModelPrice]:
    return {model: ModelPrice(*prices) for model, prices in DEFAULT_PRICING.items()}


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    clients: tuple[ClientConfig, ...] = ()
    billing: BillingConfig = field(default_factory=BillingConfig)
    pricing: Mapping[str, ModelPrice] = field(default_factory=_default_pricing)
    max_body_bytes: int = 20 * _MIB


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    security: SmtpSecurity = "starttls"
    username: str | None = None
    password: Secret | None = None
    timeout_seconds: float = 30.0
    ca_file: Path | None = None
    """CA certificates to trust instead of the system's (a private relay's own CA)."""


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One place alerts go. ``url`` carries the robot key or webhook token, so it is a secret."""

    name: str
    type: TargetType
    rate_per_minute: float
    url: Secret | None = None
    template: str | None = None
    mention_userids: tuple[str, ...] = ()
    mention_mobiles: tuple[str, ...] = ()
    smtp: SmtpConfig | None = None
    from_address: str | None = None
    to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RetryConfig:
    initial_seconds: float = 1.0
    max_seconds: float = 300.0
    give_up_after_seconds: float = 24 * 3600.0
    timeout_seconds: float = 10.0


def _default_targets() -> dict[str, TargetConfig]:
    return {"default": TargetConfig(name="default", type="log", rate_per_minute=0.0)}


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    timezone: str = "Asia/Shanghai"
    templates_dir: Path | None = None
    targets: Mapping[str, TargetConfig] = field(default_factory=_default_targets)
    retry: RetryConfig = field(default_factory=RetryConfig)
    max_body_bytes: int = 4 * _MIB


@dataclass(frozen=True, slots=True)
class Config:
    listen: ListenAddress = field(default_factory=lambda: ListenAddress("127.0.0.1", 8000))
    state_dir: Path = Path("./var")
    log_format: LogFormat = "text"
    log_level: str = "info"
    auth: AuthConfig = field(default_factory=AuthConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    source: Path | None = None


# --------------------------------------------------------------------------------------------
# Loading


def discover_config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """``--config``, else ``$SHEEPDOG_CONFIG``, else ``./sheepdog.yaml`` if present, else None."""
    if explicit:
        return Path(explicit)
    if env.get("SHEEPDOG_CONFIG"):
        return Path(env["SHEEPDOG_CONFIG"])
    local = Path("sheepdog.yaml")
    return local if local.is_file() else None


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate the config at ``path`` (built-in defaults when None)."""
    env = os.environ if env is None else env
    if path is None:
        return parse_config({}, env=env)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "not valid UTF-8") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(str(path), f"invalid YAML at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(str(path), "invalid YAML: nested too deeply") from None
    config = parse_config(raw, env=env, base_dir=path.parent)
    return _with_source(config, path)


def parse_config(
    raw: Any, *, env: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> Config:
    """Validate an already parsed YAML document (None or a mapping) into a :class:`Config`."""
    env = os.environ if env is None else env
    root = Section(expand_tree(raw, env) if raw is not None else {}, "", base_dir)
    config = Config(
        listen=_listen(root.string("listen", "127.0.0.1:8000"), "listen"),
        state_dir=root.path("state_dir", "./var"),
        log_format=root.choice("log_format", "text", ("text", "json")),  # type: ignore[arg-type]
        log_level=root.choice("log_level", "info", ("debug", "info", "warning", "error")),
        auth=_auth(root.section("auth")),
        proxy=_proxy(root.section("proxy"), env),
        bridge=_bridge(root.section("bridge")),
    )
    root.finish()
    _check_exposure(config)
    return config


def _with_source(config: Config, source: Path) -> Config:
    return Config(
        listen=config.listen,
        state_dir=config.state_dir,
        log_format=config.log_format,
        log_level=config.log_level,
        auth=config.auth,
        proxy=config.proxy,
        bridge=config.bridge,
        source=source,
    )


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


# --------------------------------------------------------------------------------------------
# Sections


def _auth(section: Section) -> AuthConfig:
    tokens = section.secret_list("bearer_tokens")
    basic_section = section.optional_section("basic")
    basic = None
    if basic_section is not None:
        username = basic_section.string("username", required=True)
        password = basic_section.secret("password", required=True)
        assert password is not None
        basic_section.finish()
        basic = BasicAuth(username=username, password=password)
    section.finish()
    return AuthConfig(bearer_tokens=tuple(tokens), basic=basic)


def _proxy(section: Section, env: Mapping[str, str]) -> ProxyConfig:
    upstream_section = section.section("upstream")
    base_url = upstream_section.url("base_url", "https://api.holysheep.ai/v1").rstrip("/")
    api_key = upstream_section.secret("api_key", required=False, allow_empty=True)
    if api_key is None and "api_key" not in upstream_section.given:
        # Built-in default: the HolySheep key from the environment, if there is one.
        default_key = env.get("HOLYSHEEP_API_KEY")
        api_key = Secret(default_key) if default_key else None
    upstream = UpstreamConfig(
        base_url=base_url,
        api_key=api_key,
        timeout_seconds=upstream_section.number("timeout_seconds", 120.0, positive=True),
        connect_timeout_seconds=upstream_section.number(
            "connect_timeout_seconds", 10.0, positive=True
        ),
    )
    upstream_section.finish()

    clients = _clients(section)
    billing_section = section.section("billing")
    billing = BillingConfig(
        currency=billing_section.string("currency", "CNY"),
        usd_rate=billing_section.number("usd_rate", 1.0, positive=True),
        market_usd_rate=billing_section.number("market_usd_rate", 7.3, positive=True),
    )
    billing_section.finish()

    pricing = _default_pricing()
    pricing_section = section.section("pricing")
    for model in pricing_section.names():
        model_section = pricing_section.section(model)
        pricing[model] = ModelPrice(
            input=model_section.number("input", required=True, minimum=0.0),
            output=model_section.number("output", required=True, minimum=0.0),
        )
        model_section.finish()
    pricing_section.finish()

    config = ProxyConfig(
        upstream=upstream,
        clients=clients,
        billing=billing,
        pricing=pricing,
        max_body_bytes=section.integer("max_body_bytes", 20 * _MIB, minimum=1024),
    )
    section.finish()
    return config


def _clients(section: Section) -> tuple[ClientConfig, ...]:
    clients: list[ClientConfig] = []
    names: set[str] = set()
    keys: set[Secret] = set()
    for item in section.section_list("clients"):
        name = item.string("name", required=True)
        if not _NAME_PATTERN.match(name) or name == "anonymous":
            raise ConfigError(
                item.child("name"),
                f"{name!r} is not a valid client name (letters, digits, '_', '.', '-'; "
                "not 'anonymous')",
            )
        if name in names:
            raise ConfigError(item.child("name"), f"duplicate client name {name!r}")
        key = item.secret("key", required=True)
        assert key is not None
        if key in keys:
            raise ConfigError(item.child("key"), "the same key is given to two clients")
        budget_given = "monthly_budget_usd" in item.given
        budget = item.number("monthly_budget_usd", 0.0, minimum=0.0) if budget_given else None
        item.finish()
        names.add(name)
        keys.add(key)
        clients.append(ClientConfig(name=name, key=key, monthly_budget_usd=budget))
    return tuple(clients)


def _bridge(section: Section) -> BridgeConfig:
    timezone = section.string("timezone", "Asia/Shanghai")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            section.child("timezone"), f"unknown time zone {timezone!r} (e.g. Asia/Shanghai, UTC)"
        ) from None
    templates_dir = None
    if "templates_dir" in section.given:
        templates_dir = section.path("templates_dir", None)
    if templates_dir is not None and not templates_dir.is_dir():
        raise ConfigError(section.child("templates_dir"), f"{templates_dir} is not a directory")

    targets_section = section.optional_section("targets")
    targets = _default_targets()
    if targets_section is not None:
        targets = {}
        for name in targets_section.names():
            if not _NAME_PATTERN.match(name):
                raise ConfigError(
                    targets_section.child(name),
                    "target names use letters, digits, '_', '.', '-' (at most 64)",
                )
            targets[name] = _target(name, targets_section.section(name))
        targets_section.finish()

    retry_section = section.section("retry")
    retry = RetryConfig(
        initial_seconds=retry_section.number("initial_seconds", 1.0, positive=True),
        max_seconds=retry_section.number("max_seconds", 300.0, positive=True),
        give_up_after_seconds=retry_section.number(
            "give_up_after_seconds", 24 * 3600.0, positive=True
        ),
        timeout_seconds=retry_section.number("timeout_seconds", 10.0, positive=True),
    )
    retry_section.finish()
    config = BridgeConfig(
        timezone=timezone,
        templates_dir=templates_dir,
        targets=targets,
        retry=retry,
        max_body_bytes=section.integer("max_body_bytes", 4 * _MIB, minimum=1024),
    )
    section.finish()
    return config


def _target(name: str, section: Section) -> TargetConfig:
    kind: TargetType = section.choice(  # type: ignore[assignment]
        "type", None, ("wechat", "slack", "email", "log"), required=True
    )
    rate = section.number("rate_per_minute", DEFAULT_RATE_PER_MINUTE[kind], minimum=0.0)
    template = section.string("template", None) if "template" in section.given else None
    target = TargetConfig(name=name, type=kind, rate_per_minute=rate, template=template)
    if kind in ("wechat", "slack"):
        url = section.secret("url", required=True)
        assert url is not None
        check_http_url(url.reveal(), section.child("url"))
        userids: tuple[str, ...] = ()
        mobiles: tuple[str, ...] = ()
        if kind == "wechat":
            mentions = section.section("mentions")
            userids = tuple(mentions.string_list("userids"))
            mobiles = tuple(mentions.string_list("mobiles"))
            mentions.finish()
        target = TargetConfig(
            name=name,
            type=kind,
            rate_per_minute=rate,
            url=url,
            template=template,
            mention_userids=userids,
            mention_mobiles=mobiles,
        )
    elif kind == "email":
        target = TargetConfig(
            name=name,
            type=kind,
            rate_per_minute=rate,
            template=template,
            smtp=_smtp(section.section("smtp", required=True)),
            from_address=_address(section, "from"),
            to=tuple(_address_list(section, "to")),
        )
    section.finish()
    return target


def _smtp(section: Section) -> SmtpConfig:
    host = section.string("host", required=True)
    security: SmtpSecurity = section.choice(  # type: ignore[assignment]
        "security", "starttls", ("starttls", "tls", "none")
    )
    port = section.integer("port", DEFAULT_SMTP_PORT[security], minimum=1, maximum=65535)
    username = section.string("username", None) if "username" in section.given else None
    password = section.secret("password", required=False)
    if password is not None and username is None:
        raise ConfigError(section.child("username"), "required when a password is given")
    config = SmtpConfig(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        timeout_seconds=section.number("timeout_seconds", 30.0, positive=True),
        ca_file=_ca_file(section),
    )
    if security == "none" and config.ca_file is not None:
        raise ConfigError(section.child("ca_file"), "applies only to security starttls or tls")
    section.finish()
    return config


def _ca_file(section: Section) -> Path | None:
    if "ca_file" not in section.given:
        return None
    path = section.path("ca_file", None)
    if not path.is_file():
        raise ConfigError(section.child("ca_file"), f"{path}: no such file")
    return path


def _address(section: Section, key: str) -> str:
    value = section.string(key, required=True)
    if "@" not in value:
        raise ConfigError(section.child(key), f"{value!r} is not an email address")
    return value


def _address_list(section: Section, key: str) -> list[str]:
    values = section.string_list(key, required=True)
    if not values:
        raise ConfigError(section.child(key), "needs at least one address")
    for index, value in enumerate(values):
        if "@" not in value:
            where = f"{section.child(key)}[{index}]"
            raise ConfigError(where, f"{value!r} is not an email address")
    return values


def _listen(value: str, path: str) -> ListenAddress:
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ConfigError(path, f"{value!r} is not host:port (e.g. 127.0.0.1:8000)")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(path, f"port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return ListenAddress(host=host, port=port)


def _check_exposure(config: Config) -> None:
    """Refuse an open proxy or an open alert endpoint on an address others can reach."""
    if config.listen.is_loopback:
        return
    if not config.proxy.clients:
        raise ConfigError(
            "proxy.clients",
            f"required when listen ({config.listen}) is not a loopback address: without client "
            "keys anyone who reaches sheepdog spends the upstream key",
        )
    if not config.auth.enabled:
        raise ConfigError(
            "auth",
            f"bearer_tokens or basic required when listen ({config.listen}) is not a loopback "
            "address: without them anyone can post alerts and reload the config",
        )


def secrets_of(config: Config) -> list[Secret]:
    """Every secret in ``config``, so that tests can prove none of them is ever printed."""
    secrets: list[Secret] = list(config.auth.bearer_tokens)
    if config.auth.basic is not None:
        secrets.append(config.auth.basic.password)
    if config.proxy.upstream.api_key is not None:
        secrets.append(config.proxy.upstream.api_key)
    secrets.extend(client.key for client in config.proxy.clients)
    for target in config.bridge.targets.values():
        if target.url is not None:
            secrets.append(target.url)
        if target.smtp is not None and target.smtp.password is not None:
            secrets.append(target.smtp.password)
    return secrets
