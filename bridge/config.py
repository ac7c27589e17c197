"""The bridge's section of the config (``bridge:``): time zone, templates, retries, targets,
the watchdog.

A target's keys are its channel's (``bridge/channels/<type>/config.py``): ``targets`` is a
union of the registered channels' models, told apart by ``type``.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Union

from pydantic import BeforeValidator, Field, field_validator, model_validator

from bridge.channels.base import TargetConfig as TargetConfig
from bridge.channels.registry import CHANNELS
from bridge.language import Language
from sheepdog.core.config import (
    NAME_PATTERN,
    ConfigModel,
    ConfigPath,
    PositiveNumber,
    Text,
    config_error,
    section,
    whole_number,
)

__all__ = ["WATCHDOG_TARGET", "BridgeConfig", "RetryConfig", "TargetConfig", "WatchdogConfig"]

_MIB: Final = 1024 * 1024

WATCHDOG_TARGET: Final = "watchdog"
"""The reserved target name: ``POST /alerts/watchdog`` is the watchdog's heartbeat."""

if TYPE_CHECKING:
    AnyTarget = TargetConfig
else:
    AnyTarget = Annotated[
        Union[tuple(channel.config for channel in CHANNELS.values())],  # noqa: UP007
        Field(discriminator="type"),
    ]


class RetryConfig(ConfigModel):
    initial_seconds: PositiveNumber = 1.0
    max_seconds: PositiveNumber = 300.0
    give_up_after_seconds: PositiveNumber = 24 * 3600.0
    timeout_seconds: PositiveNumber = 10.0
    """One delivery attempt, connection included."""


class WatchdogConfig(ConfigModel):
    """The dead man's switch: what to do when Alertmanager's Watchdog heartbeat stops."""

    target: Text
    """Where "monitoring is silent" (and the recovery) goes: a target of ``bridge.targets``."""
    silence_seconds: PositiveNumber = 600.0
    """How long sheepdog listens without a heartbeat before it says so. Alertmanager sends one
    every ``repeat_interval`` of its watchdog route (1m as shipped): keep this several times
    that, so that one late or lost heartbeat is not taken for silence (docs/bridge.md)."""

    @field_validator("silence_seconds")
    @classmethod
    def _at_least_a_second(cls, seconds: float) -> float:
        if seconds < 1:
            raise config_error(
                f"must be at least 1 (seconds), got {seconds:g}: Alertmanager sends a heartbeat "
                "once per repeat_interval of its watchdog route (1m as shipped), and this should "
                "be several times that (600 by default)"
            )
        return seconds


def _named_targets(targets: Any) -> Any:
    """Each target gets its name (its key); names become label values and URL segments."""
    if not isinstance(targets, dict):
        return targets
    named = {}
    for name, target in targets.items():
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise config_error(
                "target names use letters, digits, '_', '.', '-' (at most 64)", str(name)
            )
        if name == WATCHDOG_TARGET:
            raise config_error(
                f"the name {WATCHDOG_TARGET!r} is reserved: /alerts/{WATCHDOG_TARGET} is the "
                "watchdog's heartbeat; give the target another name, and name it in "
                "bridge.watchdog.target to receive the watchdog's messages",
                name,
            )
        if isinstance(target, dict):
            if "name" in target:
                raise config_error("unknown key", name, "name")
            target = {**target, "name": name}
        named[name] = target
    return named


class BridgeConfig(ConfigModel):
    timezone: Text = "Asia/Shanghai"
    """Times in messages are shown in this zone."""
    language: Language = "en"
    """The words of the built-in templates: ``en`` or ``zh`` (``bridge/language.py``)."""
    templates_dir: ConfigPath | None = None
    """Files here override built-in templates by name."""
    targets: Annotated[Mapping[str, AnyTarget], BeforeValidator(_named_targets)] = Field(
        default_factory=lambda: {"default": {"type": "log"}}, validate_default=True
    )
    retry: RetryConfig = section()
    max_body_bytes: Annotated[int, whole_number(minimum=1024)] = 4 * _MIB
    watchdog: WatchdogConfig | None = None
    """Optional: without it, heartbeats are still recorded, and nothing is sent."""

    @model_validator(mode="after")
    def _watchdog_target_is_configured(self) -> BridgeConfig:
        if self.watchdog is not None and self.watchdog.target not in self.targets:
            known = ", ".join(sorted(self.targets))
            raise config_error(
                f"{self.watchdog.target!r} is not a target of bridge.targets (configured: {known})",
                "watchdog",
                "target",
            )
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, timezone: str) -> str:
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise config_error(
                f"unknown time zone {timezone!r} (e.g. Asia/Shanghai, UTC)"
            ) from None
        return timezone

    @field_validator("templates_dir")
    @classmethod
    def _is_directory(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_dir():
            raise config_error(f"{path} is not a directory")
        return path
