"""Turning a payload into the text of a message: Jinja2 templates, their filters and context.

Templates are looked up, for each file name, as ``templates_dir/<target template prefix><name>``,
then ``templates_dir/<name>``, then the built-in file shipped in the channel's package
(``bridge/channels/<type>/templates``). A template can extend or include a built-in one as
``builtin/<name>``.

Each channel has its own environment, because escaping differs: the channel gives its options
and filters (HTML autoescapes for email; every ``{{ … }}`` of the Slack template is escaped for
a JSON string and for mrkdwn; WeChat's cannot start a mention, tag or link). The filters here
are the ones every channel shares.

Words come from ``bridge.language`` (``_("Firing for")``, durations, "still firing"), in the
language of ``bridge.language``; the payload's ``notification_reason`` (Alertmanager 0.32 and
later) is in the context as ``reason`` and, worded for a reader, ``reason_text``; ``reminder`` is
true when Alertmanager sends a still-firing group again.
"""

from __future__ import annotations

import copy
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import jinja2

from bridge.language import (
    REMINDER_REASON,
    as_language,
    gettext_for,
    humanize_seconds,
    ngettext_for,
    reason_words,
)
from bridge.payload import Payload, parse_time, validate_payload
from bridge.sample import SAMPLE_PAYLOAD
from sheepdog.core.errors import ConfigError

if TYPE_CHECKING:
    from bridge.channels.base import Channel, TargetConfig
    from bridge.config import BridgeConfig

__all__ = [
    "Digest",
    "Part",
    "Renderer",
    "TemplateFailure",
    "humanize_seconds",
    "severity_colorizer",
    "silence_url",
    "sort_alerts",
]

SEVERITY_RANK: Final = {
    "critical": 0,
    "page": 0,
    "error": 1,
    "high": 1,
    "warning": 2,
    "warn": 2,
    "medium": 2,
    "info": 3,
    "low": 3,
    "none": 4,
}

# Colours by severity, and one for "resolved"; a channel with other colours has its own.
_HEX_COLORS: Final = {
    "critical": "#E01E5A",
    "error": "#E01E5A",
    "warning": "#ECB22E",
    "info": "#36C5F0",
    "resolved": "#2EB67D",
    "other": "#9E9E9E",
}

# Labels that say nothing to whoever reads the message.
NOISE_LABELS: Final = frozenset({"__name__", "prometheus", "prometheus_replica", "replica"})
SHOWN_ELSEWHERE: Final = frozenset({"alertname", "severity"})


@dataclass(frozen=True, slots=True)
class Part:
    """This message is part ``number`` of ``total``."""

    number: int
    total: int


@dataclass(frozen=True, slots=True)
class Digest:
    """This message merges ``notifications`` notifications that waited for the rate limit."""

    notifications: int
    groups: int


class TemplateFailure(Exception):
    """A template could not be loaded or rendered; the message says which and where."""


class Renderer:
    """The templates of one bridge config, ready to render for any of its targets.

    Each template is compiled once, the first time it is needed, and kept (Jinja's cache).
    """

    def __init__(self, config: BridgeConfig, channels: Mapping[str, Channel]) -> None:
        self.config = config
        self.zone = zoneinfo.ZoneInfo(config.timezone)
        self.language = config.language
        self._gettext = gettext_for(config.language)
        builtin = jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(str(channel.template_dir)) for channel in channels.values()]
        )
        self._channels = channels
        self._environments = {
            name: self._environment(channel, builtin, config.templates_dir)
            for name, channel in channels.items()
        }
        self._builtin = {
            name: self._environment(channel, builtin, None) for name, channel in channels.items()
        }

    def gettext(self, message: str) -> str:
        """``message`` (English) in the configured language, for words a notifier writes itself."""
        return self._gettext(message)

    def render(
        self,
        target: TargetConfig,
        name: str,
        context: Mapping[str, Any],
        *,
        builtin: bool = False,
    ) -> str:
        """Render template ``name`` for ``target``; ``builtin`` ignores every override."""
        template = self.template(target, name, builtin=builtin)
        try:
            return template.render(context)
        except jinja2.TemplateError as exc:
            raise TemplateFailure(f"{template.name}: {exc}") from exc
        except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as exc:
            raise TemplateFailure(f"{template.name}: {type(exc).__name__}: {exc}") from exc

    def template(
        self, target: TargetConfig, name: str, *, builtin: bool = False
    ) -> jinja2.Template:
        channel = target.type
        environment = (self._builtin if builtin else self._environments)[channel]
        candidates = [name]
        if target.template and not builtin:
            candidates.insert(0, f"{target.template}{name}")
        try:
            return environment.select_template(candidates)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFailure(
                f"{exc.filename or exc.name}: line {exc.lineno}: {exc.message}"
            ) from exc
        except jinja2.TemplateError as exc:
            raise TemplateFailure(f"{name}: {exc}") from exc

    def check(self, target: TargetConfig, path: str) -> None:
        """Raise :class:`ConfigError` (at ``path``) if a template of ``target`` cannot load."""
        channel = self._channels[target.type]
        names = channel.templates
        if target.template is not None:
            directory = self.config.templates_dir
            if directory is None:
                raise ConfigError(path, "needs bridge.templates_dir, where the files are")
            if not any((directory / f"{target.template}{name}").is_file() for name in names):
                wanted = ", ".join(f"{target.template}{name}" for name in names)
                raise ConfigError(path, f"no template {wanted} in {directory}")
        for name in names:
            try:
                self.template(target, name)
            except TemplateFailure as exc:
                raise ConfigError(path, f"template does not compile: {exc}") from None
        # Compiling is not enough: try each template on a realistic payload.
        payload = validate_payload(copy.deepcopy(SAMPLE_PAYLOAD))
        context = self.context(
            target,
            payload,
            payload["alerts"],
            now=datetime.now(UTC),
            mentions={"userids": ["sample"], "mobiles": [], "all": False},
        )
        for name in names:
            try:
                channel.check_rendered(name, self.render(target, name, context))
            except (TemplateFailure, ValueError) as exc:
                where = self.template(target, name).filename or name
                raise ConfigError(
                    path, f"template fails on the sample payload: {where}: {exc}"
                ) from None

    def context(
        self,
        target: TargetConfig,
        payload: Payload,
        alerts: Sequence[Mapping[str, Any]],
        *,
        now: datetime,
        part: Part | None = None,
        digest: Digest | None = None,
        mentions: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What a template sees: the payload as it came (``alerts`` being this part's), plus
        ``target``, ``now`` and helpers (``firing``, ``resolved``, ``total``, ``part``, …)."""
        firing = [alert for alert in alerts if alert["status"] == "firing"]
        resolved = [alert for alert in alerts if alert["status"] != "firing"]
        every = payload["alerts"]
        reason = payload.get("notification_reason")
        reason = reason if isinstance(reason, str) else ""
        context = dict(payload)
        context.update(
            alerts=list(alerts),
            firing=firing,
            resolved=resolved,
            total={
                "alerts": len(every),
                "firing": sum(1 for alert in every if alert["status"] == "firing"),
                "resolved": sum(1 for alert in every if alert["status"] != "firing"),
            },
            target=target.name,
            channel=target.type,
            now=now,
            timezone=self.config.timezone,
            part=part,
            digest=digest,
            mentions=dict(mentions or {}),
            language=self.language,
            reason=reason,
            reason_text=reason_words(reason, self.language),
            reminder=reason.strip().lower() == REMINDER_REASON,
        )
        return context

    # ----------------------------------------------------------------------------------------

    def _environment(
        self, channel: Channel, builtin: jinja2.BaseLoader, templates_dir: Path | None
    ) -> jinja2.Environment:
        loaders: list[jinja2.BaseLoader] = [jinja2.PrefixLoader({"builtin": builtin})]
        if templates_dir is not None:
            loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
        loaders.append(builtin)
        environment = jinja2.Environment(  # noqa: S701 - escaping is the channel's (jinja_options)
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.ChainableUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do", "jinja2.ext.i18n"],
            **channel.jinja_options(),
        )
        # Old-style gettext: ``_()`` gives a plain string, which the channel escapes as it
        # escapes any other value.
        environment.install_gettext_callables(  # type: ignore[attr-defined]
            self._gettext, ngettext_for(self.language), newstyle=False
        )
        environment.filters.update(
            localtime=self._localtime,
            duration=_duration,
            severity_color=severity_colorizer(_HEX_COLORS),
            silence_url=silence_url,
            distinct_labels=distinct_labels,
            sort_alerts=sort_alerts,
            group_by_name=group_by_name,
            summary=summary_of,
        )
        environment.filters.update(channel.filters())
        return environment

    def _localtime(self, value: Any, fmt: str = "%Y-%m-%d %H:%M:%S %Z") -> str:
        """An RFC 3339 time (or datetime) in the configured zone; the zero time is
        "still firing"."""
        moment = value if isinstance(value, datetime) else parse_time(str(value))
        if moment is None:
            return self._gettext("still firing")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(self.zone).strftime(fmt)


@jinja2.pass_context
def _duration(context: Any, value: Any, end: Any = None) -> str:
    """Humanised length: of ``value`` seconds, or from time ``value`` to ``end`` (default now,
    also when ``end`` is the zero time of a still-firing alert), in the template's language."""
    language = as_language(context.get("language"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return humanize_seconds(float(value), language)
    if isinstance(value, timedelta):
        return humanize_seconds(value.total_seconds(), language)
    start = value if isinstance(value, datetime) else parse_time(str(value))
    if start is None:
        return ""
    stop = end if isinstance(end, datetime) else parse_time(str(end)) if end else None
    if stop is None:
        now = context.get("now")
        stop = now if isinstance(now, datetime) else datetime.now(UTC)
    return humanize_seconds((stop - start).total_seconds(), language)


def severity_colorizer(palette: Mapping[str, str]) -> Callable[..., str]:
    """A ``severity_color`` filter choosing from ``palette`` (keys: critical, error, warning,
    info, resolved, other)."""

    def severity_color(severity: Any, status: str = "firing") -> str:
        """The colour of an alert: green once resolved, else by severity."""
        if status == "resolved":
            return palette["resolved"]
        rank = SEVERITY_RANK.get(str(severity or "").lower(), 5)
        key = {0: "critical", 1: "error", 2: "warning", 3: "info"}.get(rank, "other")
        return palette[key]

    return severity_color


def silence_url(labels: Mapping[str, str], external_url: str) -> str:
    """A link to Alertmanager's "new silence" form, its matchers filled in from ``labels``."""
    if not external_url:
        return ""
    matchers = ",".join(
        f'{name}="{_matcher_value(value)}"'
        for name, value in sorted(labels.items())
        if not name.startswith("__")
    )
    query = quote("{" + matchers + "}", safe="")
    return f"{external_url.rstrip('/')}/#/silences/new?filter={query}"


def _matcher_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def distinct_labels(
    labels: Mapping[str, str], common: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """The labels worth showing: not noise, not shown elsewhere, not already in ``common``."""
    common = common or {}
    return [
        (name, value)
        for name, value in sorted(labels.items())
        if name not in NOISE_LABELS
        and name not in SHOWN_ELSEWHERE
        and not name.startswith("__")
        and common.get(name) != value
    ]


def sort_alerts(alerts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Firing before resolved, most severe first, then by name and start."""

    def key(alert: Mapping[str, Any]) -> tuple[int, int, str, str]:
        severity = str(alert["labels"].get("severity", "")).lower()
        return (
            0 if alert["status"] == "firing" else 1,
            SEVERITY_RANK.get(severity, 5),
            alert["labels"].get("alertname", ""),
            alert["startsAt"],
        )

    return sorted(alerts, key=key)


def group_by_name(alerts: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """``[(alertname, [alerts…]), …]`` in order of first appearance."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for alert in alerts:
        groups.setdefault(alert["labels"].get("alertname", "(no alertname)"), []).append(alert)
    return list(groups.items())


def summary_of(alert: Mapping[str, Any]) -> str:
    """The alert's one-line summary: ``summary``, else ``message``, else ``description``."""
    annotations = alert.get("annotations", {})
    for key in ("summary", "message", "description"):
        if annotations.get(key):
            return str(annotations[key])
    return ""
