"""Rendering notifications for people: Telegram HTML and email (plain text + HTML). Pure.

Every value that comes from config or from label values is escaped; messages are capped
to what the channel accepts; email headers never carry CR/LF from label values.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from sloeval.alerting.grouping import MessageGroup
from sloeval.alerting.model import Facts, Notification
from sloeval.config.durations import format_duration
from sloeval.config.slo_file import SLODefinition

TELEGRAM_LIMIT = 4096
SUBJECT_LIMIT = 200


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


def _format_labels(labels: tuple[tuple[str, str], ...]) -> str:
    """Label values come from the monitored system: capped so one value cannot flood a message."""
    text = ", ".join(f"{k}={v if len(v) <= 100 else v[:100] + '…'}" for k, v in labels)
    return text if len(text) <= 500 else text[:500] + "…"


def _labels_text(group: MessageGroup) -> str:
    return _format_labels(group.labels)


def headline(group: MessageGroup, slo: SLODefinition) -> str:
    count = len(group.notifications)
    status = group.status.upper()
    labels = _labels_text(group)
    where = f" {{{labels}}}" if labels else ""
    return f"{status}: {slo.name}{where} [{group.severity}] {count} alert{'s' if count != 1 else ''}"


def fact_lines(facts: Facts) -> list[str]:
    if facts.factor is None and not facts.sli and facts.budget_remaining_percent is None:
        return []  # a meta alert (no data): its condition says it all
    lines = []
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


def _item_title(notification: Notification, group: MessageGroup) -> str:
    state = (
        "RESOLVED" if notification.status == "resolved" else ("FIRING (repeat)" if notification.repeat else "FIRING")
    )
    where = ""
    if notification.key.labels and not group.labels:  # mixed label sets: each item names its own
        where = " {" + _format_labels(notification.key.labels) + "}"
    return f"{state} {notification.key.alert}{where} [{notification.severity}]: {notification.facts.condition}"


def _links(slo: SLODefinition, alert: str | None) -> list[tuple[str, str]]:
    links = []
    if slo.dashboard_url:
        links.append(("Dashboard", slo.dashboard_url))
    if slo.runbook_url:
        links.append(("Runbook", slo.runbook_url.replace("{alert}", alert or "")))
    return links


def render_plain(group: MessageGroup, slo: SLODefinition) -> RenderedMessage:
    lines = [
        headline(group, slo),
        "",
        f"SLO: {slo.name} ({slo.slo_type}, objective {100 * slo.objective:g}% over {slo.period_name})",
    ]
    lines.append(f"Service: {slo.service}")
    if group.labels:
        lines.append(f"Labels: {_labels_text(group)}")
    for notification in group.notifications:
        lines += ["", _item_title(notification, group)]
        lines += [f"  {line}" for line in fact_lines(notification.facts)]
    links = _links(slo, group.notifications[0].key.alert)
    if links:
        lines.append("")
        lines += [f"{name}: {url}" for name, url in links]
    return RenderedMessage(subject=email_subject(group, slo), text="\n".join(lines), html=render_email_html(group, slo))


def email_subject(group: MessageGroup, slo: SLODefinition) -> str:
    """One line: status first, no CR/LF or other control characters from label values."""
    text = f"[{group.status.upper()}] " + headline(group, slo).split(": ", 1)[1]
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return cleaned[:SUBJECT_LIMIT]


def render_email_html(group: MessageGroup, slo: SLODefinition) -> str:
    e = html.escape
    parts = [f"<h3>{e(headline(group, slo))}</h3>", "<p>"]
    objective = f"objective {100 * slo.objective:g}% over {slo.period_name}"
    parts.append(f"SLO <b>{e(slo.name)}</b> ({e(slo.slo_type)}, {e(objective)})<br>")
    parts.append(f"Service {e(slo.service)}")
    if group.labels:
        parts.append(f"<br>Labels {e(_labels_text(group))}")
    parts.append("</p>")
    for notification in group.notifications:
        parts.append(f"<p><b>{e(_item_title(notification, group))}</b><br>")
        parts.append("<br>".join(e(line) for line in fact_lines(notification.facts)))
        parts.append("</p>")
    links = _links(slo, group.notifications[0].key.alert)
    if links:
        parts.append("<p>" + " | ".join(f'<a href="{e(url)}">{e(name)}</a>' for name, url in links) + "</p>")
    return "".join(parts)


def render_telegram(group: MessageGroup, slo: SLODefinition) -> RenderedMessage:
    """Telegram HTML (parse_mode=HTML), every value escaped, at most 4096 characters."""
    e = html.escape
    lines = [f"<b>{e(headline(group, slo))}</b>"]
    objective = f"{100 * slo.objective:g}% / {slo.period_name}"
    lines.append(f"SLO <b>{e(slo.name)}</b> ({e(slo.slo_type)}, {e(objective)}), service {e(slo.service)}")
    if group.labels:
        lines.append(f"labels: <code>{e(_labels_text(group))}</code>")
    for notification in group.notifications:
        lines.append("")
        lines.append(f"<b>{e(_item_title(notification, group))}</b>")
        lines += [e(line) for line in fact_lines(notification.facts)]
    links = _links(slo, group.notifications[0].key.alert)
    if links:
        lines.append("")
        lines.append(" | ".join(f'<a href="{e(url)}">{e(name)}</a>' for name, url in links))
    return RenderedMessage(subject=headline(group, slo), text=fit_lines(lines, TELEGRAM_LIMIT))


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


def render_test_message(channel: str) -> RenderedMessage:
    subject = "[TEST] sloeval notification test"
    text = f"{subject}\n\nThis is a test message from sloeval through the {channel} channel. No action needed."
    return RenderedMessage(subject=subject, text=html.escape(text) if channel == "telegram" else text, html=None)
