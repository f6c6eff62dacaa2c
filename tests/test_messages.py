from pathlib import Path

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
