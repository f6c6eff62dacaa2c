import html
import unicodedata
from pathlib import Path

import pytest

from sloeval.alerting.channels.smtp import email_subject, render_plain
from sloeval.alerting.channels.telegram import TELEGRAM_LIMIT, render_telegram
from sloeval.alerting.grouping import MessageGroup
from sloeval.alerting.model import AlertKey, Facts, Notification
from sloeval.config.slo_file import parse_slo_text

CONFIG = parse_slo_text(
    """
service: api
notify: {dashboard_url: "https://grafana/d/slo?var-slo={slo}", runbook_url: "https://runbooks/{slo}#{alert}"}
slos:
  - name: uptime
    objective: 99.9
    uptime: {selector: up}
  - name: errors
    objective: 99
    ratio: {bad: b, total: t, group_by: [endpoint]}
""",
    Path("slos.yaml"),
)
UPTIME, ERRORS = CONFIG.slos
HOSTILE = '</b><script>alert("x")</script>&amp;\r\nBcc: evil@example.com'


def facts(**overrides: object) -> Facts:
    base: dict[str, object] = {
        "condition": "burn rate > 14.4 over 1h and 5m",
        "burn_rates": (("1h", 20.5), ("5m", 31.0)),
        "factor": 14.4,
        "sli": (("1h", 0.9795), ("5m", 0.969)),
        "objective": 0.999,
        "budget_remaining_percent": 62.5,
        "budget_minutes_left": 27.0,
        "budget_minutes_total": 43.2,
        "exhausted_in_seconds": 3 * 3600 + 20 * 60,
    }
    base.update(overrides)
    return Facts(**base)  # type: ignore[arg-type]


def group(slo: str, labels: tuple[tuple[str, str], ...] = (), status: str = "firing", n: int = 1) -> MessageGroup:
    notes = tuple(
        Notification(AlertKey(slo, f"Alert{i}", labels), "critical", status, facts(), 100.0, 50.0)  # type: ignore[arg-type]
        for i in range(n)
    )
    return MessageGroup("telegram", slo, labels, notes)


def test_message_says_what_a_person_needs() -> None:
    text = render_plain(group("uptime"), UPTIME).text
    first = text.splitlines()[0]
    assert first.startswith("FIRING: uptime")
    assert "[critical]" in first
    assert "burn rate: 1h 20.50x, 5m 31.00x (threshold 14.4x)" in text
    assert "error budget left: 62.5% (27.0 of 43.2 min of downtime)" in text  # time-based SLO: minutes
    assert "runs out in 3h20m" in text
    assert "Dashboard: https://grafana/d/slo?var-slo=uptime" in text
    assert "Runbook: https://runbooks/uptime#Alert0" in text


def test_resolved_status_in_first_line_and_subject() -> None:
    rendered = render_plain(group("errors", (("endpoint", "/a"),), status="resolved"), ERRORS)
    assert rendered.text.splitlines()[0].startswith("RESOLVED: errors {endpoint=/a}")
    assert rendered.subject.startswith("[RESOLVED] errors {endpoint=/a}")


def test_telegram_html_escapes_label_values() -> None:
    rendered = render_telegram(group("errors", (("endpoint", HOSTILE),)), ERRORS)
    assert "<script>" not in rendered.text
    assert "&lt;script&gt;" in rendered.text
    assert "&amp;amp;" in rendered.text
    assert rendered.text.startswith("<b>FIRING: errors")


def test_email_subject_is_one_line_without_injection() -> None:
    subject = email_subject(group("errors", (("endpoint", HOSTILE),)), ERRORS)
    assert "\r" not in subject
    assert "\n" not in subject
    assert subject.startswith("[FIRING] errors")
    html_part = render_plain(group("errors", (("endpoint", HOSTILE),)), ERRORS).html
    assert html_part is not None
    assert "<script>" not in html_part


def test_telegram_message_is_capped_without_breaking_tags() -> None:
    labels = tuple((f"l{i}", "x" * 300) for i in range(5))
    rendered = render_telegram(group("errors", labels, n=80), ERRORS)
    assert len(rendered.text) <= TELEGRAM_LIMIT
    assert rendered.text.endswith("(truncated)")
    assert rendered.text.count("<b>") == rendered.text.count("</b>")


def test_exhausted_budget_is_said_plainly() -> None:
    text = render_plain(
        MessageGroup(
            "email",
            "errors",
            (),
            (
                Notification(
                    AlertKey("errors", "Low"), "warning", "firing", facts(budget_remaining_percent=-12.0), 1, 1
                ),
            ),
        ),
        ERRORS,
    ).text
    assert "budget is exhausted" in text


def test_mixed_label_sets_name_their_labels_per_item() -> None:
    notes = tuple(
        Notification(AlertKey("errors", "Fast", (("endpoint", e),)), "critical", "firing", facts(), 1.0, 1.0)
        for e in ("/a", "/b")
    )
    text = render_plain(MessageGroup("email", "errors", (), notes), ERRORS).text
    assert text.splitlines()[0] == "FIRING: errors [critical] 2 alerts"
    assert "FIRING Fast {endpoint=/a} [critical]" in text
    assert "FIRING Fast {endpoint=/b} [critical]" in text


# Label values that would start a line, or turn the text around, if written as they are.
FORGING = {
    "lf": "x\nBcc: evil@example.com",
    "crlf": HOSTILE,
    "cr": "x\rBcc: evil@example.com",
    "nel": "x\x85Bcc: evil@example.com",
    "vertical-tab": "x\vBcc: evil@example.com",
    "file-separator": "x\x1cBcc: evil@example.com",
    "line-separator": "x\u2028Bcc: evil@example.com",
    "paragraph-separator": "x\u2029Bcc: evil@example.com",
    "right-to-left-override": "\u202emoc.elpmaxe@live",
    "right-to-left-isolate": "a\u2067b\u2069c",
    "escape-sequence": "\x1b[2J\x1b[31mred",
    "nul-and-zero-width": "a\x00b\u200bc",
}
UNSEEN_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def renderings(labels: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Every text a channel makes of a group whose label values are ``labels``, and of mixed label sets."""
    whole = group("errors", labels)
    mixed = MessageGroup(
        "email",
        "errors",
        (),
        tuple(
            Notification(
                AlertKey("errors", "Fast", tuple((k, v + n) for k, v in labels)), "critical", "firing", facts(), 1, 1
            )
            for n in ("", "2")
        ),
    )
    texts: dict[str, str] = {}
    for name, g in (("grouped", whole), ("mixed", mixed)):
        plain = render_plain(g, ERRORS)
        texts[f"{name} email text"] = plain.text
        texts[f"{name} email html"] = plain.html or ""
        texts[f"{name} email subject"] = plain.subject
        texts[f"{name} telegram"] = render_telegram(g, ERRORS).text
    return texts


@pytest.mark.parametrize("value", FORGING.values(), ids=FORGING.keys())
def test_label_values_stay_on_their_line_and_read_as_written(value: str) -> None:
    hostile = renderings((("endpoint", value), ("region", "eu")))
    benign = renderings((("endpoint", "x Bcc: evil@example.com"), ("region", "eu")))
    for where, text in hostile.items():
        assert len(text.splitlines()) == len(benign[where].splitlines()), where  # no line forged
        assert not any(line.lstrip(" <>bph3").startswith("Bcc:") for line in text.splitlines()), where
        unseen = {c for c in text if unicodedata.category(c) in UNSEEN_CATEGORIES and c != "\n"}
        assert unseen == set(), f"{where}: {sorted(map(ascii, unseen))}"
        written_out = value.encode("unicode_escape").decode("ascii").replace("\\\\", "\\")
        if where != "mixed email subject":  # a subject of mixed label sets names no labels
            assert any(form in text for form in (written_out, html.escape(written_out))), where


def test_unseen_characters_are_written_out_the_way_code_writes_them() -> None:
    text = render_plain(group("errors", (("endpoint", "a\nb\u2028c\u202ed\x1be"),)), ERRORS).text
    assert "endpoint=a\\nb\\u2028c\\u202ed\\x1be" in text.splitlines()[0]
    long = render_plain(group("errors", (("endpoint", "\u202e" * 60),)), ERRORS).text.splitlines()[0]
    assert "endpoint=" + "\\u202e" * 16 + "…" in long  # capped at 100 characters as shown, never inside an escape
