from pathlib import Path

import pytest

from sloeval.alerting.channels import channel_names
from sloeval.config.alert_rules import BudgetCondition, BurnRateCondition, SLIBelowCondition
from sloeval.config.slo_file import ConfigError, load_slo_file, parse_slo_text

PATH = Path("slos.yaml")
REPO = Path(__file__).resolve().parent.parent


def one(body: str, period: str = "30d", head: str = "", interval: float = 30.0):  # type: ignore[no-untyped-def]
    text = f"service: api\nperiod: {period}\n{head}slos:\n" + "".join(f"  {line}\n" for line in body.splitlines())
    return parse_slo_text(text, PATH, min_window=interval, channels=channel_names())


RATIO = "- name: e\n  objective: 99\n  ratio: {bad: b, total: t}"


def test_default_alerts_for_30d_are_the_workbook_tiers() -> None:
    (slo,) = one(RATIO).slos
    assert slo.default_alerts
    tiers = [(r.name, r.severity, r.condition) for r in slo.alerts]
    assert tiers == [
        ("BurnRateCritical1h", "critical", BurnRateCondition(3600, 300, 14.4)),
        ("BurnRateCritical6h", "critical", BurnRateCondition(21600, 1800, 6.0)),
        ("BurnRateWarning1d", "warning", BurnRateCondition(86400, 7200, 3.0)),
        ("BurnRateWarning3d", "warning", BurnRateCondition(259200, 21600, 1.0)),
        ("ErrorBudgetLow", "warning", BudgetCondition(25.0)),
        ("ErrorBudgetCritical", "critical", BudgetCondition(10.0)),
    ]


def test_default_windows_scale_with_the_period_but_not_below_one_interval() -> None:
    (slo,) = one(RATIO, period="7d", interval=60).slos
    fast = slo.alerts[0].condition
    assert fast == BurnRateCondition(840, 70, 14.4)  # 1h and 5m times 7/30
    (tiny,) = one(RATIO, period="1h", interval=30).slos
    for rule in tiny.alerts:
        for window in rule.windows:
            assert window >= 30
    # The scaled windows are evaluated too.
    assert set(slo.windows) >= {w for r in slo.alerts for w in r.windows}


def test_listed_alerts_replace_defaults_unless_asked() -> None:
    body = RATIO + "\n  alerts:\n    - {name: X, severity: info, sli_below: {window: 10m, threshold: 95, for: 5m}}"
    (slo,) = one(body).slos
    assert [r.name for r in slo.alerts] == ["X"]
    assert slo.alerts[0].condition == SLIBelowCondition(600, 0.95)
    assert slo.alerts[0].for_seconds == 300
    assert 600 in slo.windows
    (both,) = one(body + "\n  include_default_alerts: true").slos
    assert [r.name for r in both.alerts][-1] == "X"
    assert len(both.alerts) == 7


@pytest.mark.parametrize(
    ("alerts", "fragment"),
    [
        ("[{name: X, severity: page, budget_remaining_below: 10}]", "severity"),
        ("[{name: X, severity: info}]", "exactly one condition"),
        (
            "[{name: X, severity: info, budget_remaining_below: 1, burn_rate: {long: 1h, short: 5m, factor: 2}}]",
            "exactly one",
        ),
        ("[{name: X, severity: info, burn_rate: {long: 5m, short: 1h, factor: 2}}]", "shorter"),
        ("[{name: X, severity: info, burn_rate: {long: 1h, short: 5m, factor: 0}}]", "factor"),
        ("[{name: X, severity: info, burn_rate: {long: 1h, short: 5x, factor: 2}}]", "5x"),
        ("[{name: X, severity: info, sli_below: {window: 5m, threshold: 95, for: 40d}}]", "longer than the period"),
        ("[{name: X, severity: info, burn_rate: {long: 31d, short: 5m, factor: 2}}]", "longer than the period"),
        (
            "[{name: X, severity: info, budget_remaining_below: 5},"
            " {name: X, severity: info, budget_remaining_below: 9}]",
            "used twice",
        ),
        ("[{name: 'bad name', severity: info, budget_remaining_below: 5}]", "name"),
        ("[{name: SLODataMissing, severity: info, budget_remaining_below: 5}]", "sloeval's own alert"),
    ],
)
def test_bad_alerts_name_the_slo_and_field(alerts: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        one(RATIO + f"\n  alerts: {alerts}")
    message = str(info.value)
    assert message.startswith('slos.yaml: slo "e"')
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("head", "fragment"),
    [
        ("notify: {routes: [{severity: [critical], channels: [pager]}]}\n", "channels"),
        ("notify: {repeat_interval: soon}\n", "repeat_interval"),
        ("notify: {bogus: 1}\n", 'unknown key "bogus"'),
        (
            "silences: [{matchers: [{name: slo, value: e}], start: 2026-01-02T00:00:00Z, end: 2026-01-01T00:00:00Z}]\n",
            "end must be after start",
        ),
        (
            "silences: [{matchers: [{name: slo, value: '(', regex: true}],"
            " start: 2026-01-01T00:00:00Z, end: 2026-01-02T00:00:00Z}]\n",
            "regular expression",
        ),
    ],
)
def test_bad_notify_and_silences(head: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        one(RATIO, head=head)
    assert fragment in str(info.value)


def test_shipped_config_has_the_platform_alert_names() -> None:
    config = load_slo_file(REPO / "config" / "slos.yaml")
    names = {rule.name for slo in config.slos for rule in slo.alerts}
    assert {
        "LatencySLOViolation",
        "HighLatency",
        "HighErrorRate",
        "ErrorBudgetLow",
        "ErrorBudgetCritical",
        "AvailabilitySLOViolation",
        "BurnRateCritical1h",
        "BurnRateWarning3d",
    } <= names
    assert config.notify.channels_for("critical") == ("telegram", "email")
    assert config.notify.channels_for("warning") == ("email",)
    assert config.notify.repeat_interval == 4 * 3600


def test_histogram_with_suffix_and_le_matcher_is_rejected() -> None:
    with pytest.raises(ConfigError, match="le"):
        one("- name: l\n  objective: 95\n  latency: {histogram: 'h_bucket{le=\"0.5\"}', threshold_seconds: 2}")
