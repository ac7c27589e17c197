"""The words of the built-in templates in each language of ``bridge.language`` (``en``, ``zh``).

Templates write their words in English as ``{{ _("Firing for") }}`` (Jinja's i18n extension,
old-style gettext: the result is a plain string, escaped like any other value of the channel)
and :func:`gettext` looks them up in the language's catalog; English is the catalog's keys, so
``en`` prints the templates as they are written. A phrase with a number in it is written with a
named placeholder and the ``format`` filter: ``_("%(count)s more") | format(count=n)``, so each
language puts the number where its grammar wants it.

Durations (``2h 5m`` / ``2 小时 5 分``) and the reason Alertmanager gives for a notification
(``notification_reason``, Alertmanager 0.32 and later) are worded here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Literal

__all__ = [
    "CODE_MESSAGES",
    "LANGUAGES",
    "REMINDER_REASON",
    "WATCHDOG_MESSAGES",
    "Language",
    "as_language",
    "catalog",
    "gettext_for",
    "humanize_seconds",
    "ngettext_for",
    "reason_words",
]

Language = Literal["en", "zh"]
LANGUAGES: Final[tuple[Language, ...]] = ("en", "zh")

REMINDER_REASON: Final = "repeat interval elapsed"
"""Alertmanager's ``notification_reason`` when it sends a still-firing group again."""

# Alertmanager's reasons (notify/notify.go, NotifyReason.String) in words a reader needs. "none"
# is never sent and "unknown" says nothing: neither is shown.
_REASONS: Final[dict[str, str]] = {
    "first notification": "First notification",
    "new alerts added": "New alerts in this group",
    "some alerts resolved": "Some alerts resolved",
    "all alerts resolved": "All alerts resolved",
    REMINDER_REASON: "Reminder: still firing",
}
_SILENT_REASONS: Final = frozenset({"", "none", "unknown"})

_ZH: Final[dict[str, str]] = {
    # Status words and titles
    "FIRING": "告警触发",
    "RESOLVED": "已恢复",
    "DIGEST": "告警汇总",
    "Digest": "告警汇总",
    "Firing": "告警中",
    "Resolved": "已恢复",
    "Reminder": "提醒",
    # When, and for how long
    "Started": "开始于",
    ", firing for": "，已持续",
    " after": "，持续",
    "Firing for": "持续",
    "firing for": "已持续",
    "lasted": "持续了",
    "still firing": "仍在告警",
    "Started %(time)s, firing for %(duration)s": "开始于 %(time)s，已持续 %(duration)s",
    "Resolved %(time)s, after %(duration)s": "恢复于 %(time)s，持续了 %(duration)s",
    "after %(duration)s": "持续了 %(duration)s",
    "lasted %(duration)s": "持续了 %(duration)s",
    "since %(time)s": "开始于 %(time)s",
    "resolved %(time)s": "恢复于 %(time)s",
    "firing for %(duration)s": "已持续 %(duration)s",
    # Counts
    "%(count)s firing": "%(count)s 条告警中",
    "%(count)s resolved": "%(count)s 条已恢复",
    "%(count)s alert(s)": "%(count)s 条告警",
    "%(firing)s firing, %(resolved)s resolved": "%(firing)s 条告警中，%(resolved)s 条已恢复",
    "%(count)s firing: %(names)s": "%(count)s 条告警中：%(names)s",
    "%(count)s notifications": "%(count)s 条通知",
    "%(count)s notifications merged to stay within the rate limit": (
        "为不超过发送频率限制，合并了 %(count)s 条通知"
    ),
    "%(firing)s firing, %(resolved)s resolved, from %(count)s notifications merged to stay "
    "within the rate limit.": (
        "%(firing)s 条告警中，%(resolved)s 条已恢复，由 %(count)s 条通知合并而成，"
        "以免超过发送频率限制。"
    ),
    "Alertmanager left out %(count)s more alert(s) of this group (max_alerts)": (
        "Alertmanager 省略了本组另外 %(count)s 条告警（max_alerts）"
    ),
    "Alertmanager left out %(count)s more alert(s) of this group (max_alerts).": (
        "Alertmanager 省略了本组另外 %(count)s 条告警（max_alerts）。"
    ),
    "… and %(count)s more left out by Alertmanager": "…… 另有 %(count)s 条被 Alertmanager 省略",
    # Links and fields
    "Graph": "图表",
    "Runbook": "处理手册",
    "Silence": "静默",
    "silence": "静默",
    "Alert": "告警",
    "Summary": "摘要",
    "Description": "描述",
    "Labels": "标签",
    "Duration": "持续时间",
    "Common labels": "共同标签",
    "for %(labels)s": "（%(labels)s）",
    "(no group labels)": "（无分组标签）",
    "target %(target)s": "目标 %(target)s",
    # The watchdog's own messages (bridge/watchdog.py)
    "Monitoring is silent: no Watchdog heartbeat for %(duration)s": (
        "监控静默：已 %(duration)s 未收到 Watchdog 心跳"
    ),
    "Alertmanager's Watchdog heartbeat has not reached sheepdog (/alerts/watchdog) for "
    "%(duration)s: Prometheus or Alertmanager is down, or cannot reach sheepdog. Until it is "
    "back, no alert is delivered.": (
        "Alertmanager 的 Watchdog 心跳已 %(duration)s 未到达 sheepdog（/alerts/watchdog）："
        "Prometheus 或 Alertmanager 已停止，或无法连接 sheepdog。心跳恢复之前，不会有任何告警送达。"
    ),
    "Monitoring is back: the Watchdog heartbeat arrives again": (
        "监控已恢复：Watchdog 心跳重新到达"
    ),
    "Alertmanager's Watchdog heartbeat reaches sheepdog again. Alerts whose condition still "
    "holds are raised now; the dashboards show what happened during the silence.": (
        "Alertmanager 的 Watchdog 心跳重新到达 sheepdog。条件仍然成立的告警现在会发出；"
        "静默期间发生了什么，请查看仪表盘。"
    ),
    # notification_reason
    "First notification": "首次通知",
    "New alerts in this group": "本组有新告警",
    "Some alerts resolved": "部分告警已恢复",
    "All alerts resolved": "全部告警已恢复",
    "Reminder: still firing": "提醒：仍在告警",
}

WATCHDOG_MESSAGES: Final = (
    "Monitoring is silent: no Watchdog heartbeat for %(duration)s",
    "Alertmanager's Watchdog heartbeat has not reached sheepdog (/alerts/watchdog) for "
    "%(duration)s: Prometheus or Alertmanager is down, or cannot reach sheepdog. Until it is "
    "back, no alert is delivered.",
    "Monitoring is back: the Watchdog heartbeat arrives again",
    "Alertmanager's Watchdog heartbeat reaches sheepdog again. Alerts whose condition still "
    "holds are raised now; the dashboards show what happened during the silence.",
)
"""The summary and description of the watchdog's "monitoring is silent" alert, then of its
recovery (``%(duration)s``: ``bridge.watchdog.silence_seconds``, humanised)."""

CODE_MESSAGES: Final = (
    "still firing",
    "%(count)s firing: %(names)s",
    *_REASONS.values(),
    *WATCHDOG_MESSAGES,
)
"""Phrases sheepdog writes itself, not a template (the zero end time, the WeChat mention text,
the reasons, the watchdog's messages)."""

_CATALOGS: Final[Mapping[Language, Mapping[str, str]]] = {"en": {}, "zh": _ZH}

# The two largest units of a duration, rounded down: 2h 5m, 3d 4h, 45s.
_UNITS: Final[Mapping[Language, tuple[tuple[str, int], ...]]] = {
    "en": (("{}d", 86400), ("{}h", 3600), ("{}m", 60), ("{}s", 1)),
    "zh": (("{} 天", 86400), ("{} 小时", 3600), ("{} 分", 60), ("{} 秒", 1)),
}


def as_language(value: object) -> Language:
    """``value`` if it is a language of :data:`LANGUAGES`, else English."""
    return next((language for language in LANGUAGES if language == value), "en")


def catalog(language: Language) -> Mapping[str, str]:
    """The phrases of ``language`` by their English words (empty for English)."""
    return _CATALOGS[language]


def gettext_for(language: Language) -> Callable[[str], str]:
    """The ``gettext`` of templates in ``language``: a phrase it has no words for stays English."""
    words = _CATALOGS[language]

    def gettext(message: str) -> str:
        return words.get(message, message)

    return gettext


def ngettext_for(language: Language) -> Callable[[str, str, int], str]:
    """The ``ngettext`` of templates in ``language`` (Chinese has one form for every number)."""
    gettext = gettext_for(language)

    def ngettext(singular: str, plural: str, count: int) -> str:
        return gettext(singular if count == 1 else plural)

    return ngettext


def humanize_seconds(seconds: float, language: Language = "en") -> str:
    """``2h 5m`` / ``2 小时 5 分``: the two largest units, rounded down."""
    total = max(0, int(seconds))
    parts: list[tuple[int, str]] = []
    for unit, size in _UNITS[language]:
        amount, total = divmod(total, size)
        if amount or parts:
            parts.append((amount, unit))
        if len(parts) == 2:
            break
    shown = [unit.format(amount) for amount, unit in parts if amount]
    return " ".join(shown) or _UNITS[language][-1][0].format(0)


def reason_words(reason: object, language: Language = "en") -> str:
    """What Alertmanager's ``notification_reason`` means, in ``language``; empty when there is
    none to show (absent, ``unknown``). A reason this version does not know is shown as sent."""
    if not isinstance(reason, str) or reason.strip().lower() in _SILENT_REASONS:
        return ""
    phrase = _REASONS.get(reason.strip().lower())
    if phrase is None:
        return reason.strip()
    return gettext_for(language)(phrase)
