"""What every message says, whatever the channel: headline, facts, item titles, links (pure).

Each channel module renders these parts in its own markup (``alerting.channels``); every value
that comes from config or from label values is escaped there, and messages are capped to what
the channel accepts.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Protocol

from sloeval.alerting.grouping import MessageGroup
from sloeval.alerting.model import Facts, Notification
from sloeval.config.durations import format_duration


class SLODescription(Protocol):
    """What a message says about its SLO: an ``SLODefinition``, or the ``SLOSummary`` stored with an
    alert when a reload removed the SLO."""

    @property
    def name(self) -> str: ...
    @property
    def slo_type(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def objective(self) -> float: ...
    @property
    def period_name(self) -> str: ...
    @property
    def dashboard_url(self) -> str | None: ...
    @property
    def runbook_url(self) -> str | None: ...


@dataclass(frozen=True)
class RenderedMessage:
    subject: str  # one line, also the first line of the text
    text: str  # plain text (email body) or Telegram HTML
    html: str | None = None  # email HTML part


def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}%"


def _rate(value: float | None) -> str:
    return "no data" if value is None else f"{value:.2f}x"


def _duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    return format_duration(int(seconds // 60 * 60))


# Characters that do not read as themselves: controls (CR, LF, ESC ...), format characters (bidi
# overrides and isolates, zero-width ones), line and paragraph separators, lone surrogates.
_UNSEEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def visible(text: str, limit: int) -> str:
    """``text`` on one line as it reads: every unseen character written out (``\\n``, ``\\u2028``,
    ``\\u202e``), so it can neither start a line nor turn the text around; cut after ``limit`` characters."""
    shown: list[str] = []
    size = 0
    for char in text:
        part = char.encode("unicode_escape").decode("ascii") if unicodedata.category(char) in _UNSEEN else char
        if size + len(part) > limit:
            shown.append("…")
            break
        shown.append(part)
        size += len(part)
    return "".join(shown)


def _format_labels(labels: tuple[tuple[str, str], ...]) -> str:
    """Label values come from the monitored system: one line, unseen characters written out, and
    capped so one value cannot flood a message."""
    text = ", ".join(f"{visible(k, 100)}={visible(v, 100)}" for k, v in labels)
    return text if len(text) <= 500 else text[:500] + "…"


def labels_text(group: MessageGroup) -> str:
    return _format_labels(group.labels)


def headline(group: MessageGroup, slo: SLODescription) -> str:
    count = len(group.notifications)
    status = group.status.upper()
    labels = labels_text(group)
    where = f" {{{labels}}}" if labels else ""
    return f"{status}: {slo.name}{where} [{group.severity}] {count} alert{'s' if count != 1 else ''}"


def fact_lines(facts: Facts) -> list[str]:
    lines = [facts.note] if facts.note else []
    if facts.factor is None and not facts.sli and facts.budget_remaining_percent is None:
        return lines  # a meta alert, or an end without numbers: the condition and the note say it all
    if facts.factor is not None:
        rates = ", ".join(f"{w} {_rate(v)}" for w, v in facts.burn_rates)
        lines.append(f"burn rate: {rates} (threshold {facts.factor:g}x)")
    elif facts.sli:
        slis = ", ".join(f"{w} {_pct(None if v is None else 100 * v, 3)}" for w, v in facts.sli)
        lines.append(f"SLI: {slis} (objective {100 * facts.objective:g}%); burn rate {_rate(facts.burn_rates[0][1])}")
    budget = f"error budget left: {_pct(facts.budget_remaining_percent, 1)}"
    if facts.budget_minutes_left is not None and facts.budget_minutes_total is not None:
        if facts.budget_minutes_left >= 0:
            budget += f" ({facts.budget_minutes_left:.1f} of {facts.budget_minutes_total:.1f} min of downtime)"
        else:
            budget += f" ({-facts.budget_minutes_left:.1f} min over the {facts.budget_minutes_total:.1f} min allowed)"
    lines.append(budget)
    if facts.budget_remaining_percent is not None and facts.budget_remaining_percent <= 0:
        lines.append("budget is exhausted")
    elif facts.exhausted_in_seconds is not None:
        lines.append(f"at the current burn rate the budget runs out in {_duration_text(facts.exhausted_in_seconds)}")
    return lines


def item_title(notification: Notification, group: MessageGroup) -> str:
    state = (
        "RESOLVED" if notification.status == "resolved" else ("FIRING (repeat)" if notification.repeat else "FIRING")
    )
    where = ""
    if notification.key.labels and not group.labels:  # mixed label sets: each item names its own
        where = " {" + _format_labels(notification.key.labels) + "}"
    return f"{state} {notification.key.alert}{where} [{notification.severity}]: {notification.facts.condition}"


def links_of(slo: SLODescription, alert: str | None) -> list[tuple[str, str]]:
    links = []
    if slo.dashboard_url:
        links.append(("Dashboard", slo.dashboard_url))
    if slo.runbook_url:
        links.append(("Runbook", slo.runbook_url.replace("{alert}", alert or "")))
    return links


def fit_lines(lines: list[str], limit: int) -> str:
    """Join lines, dropping whole lines from the end (never cutting a tag or entity) to fit."""
    suffix = "\n… (truncated)"
    kept: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        rest = len(suffix) if index < len(lines) - 1 else 0
        if size + len(line) + rest > limit:
            return "\n".join(kept) + suffix
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)


TEST_SUBJECT = "[TEST] sloeval notification test"


def test_message_text(channel: str) -> str:
    """The text of ``sloeval notify-test`` (plain; a channel with markup escapes it)."""
    return f"{TEST_SUBJECT}\n\nThis is a test message from sloeval through the {channel} channel. No action needed."
