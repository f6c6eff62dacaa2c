from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sloeval.config.slo_file import parse_slo_text
from sloeval.serve.exporter import DaemonMetrics, SnapshotHolder
from sloeval.slo.snapshot import SLOResult, SLOStatus, Snapshot

CONFIG = parse_slo_text(
    """
service: api
period: 1d
slos:
  - name: avail
    slo_type: availability
    objective: 99.9
    labels: {team: core}
    ratio: {bad: b, total: t, group_by: [endpoint]}
  - name: lat
    slo_type: latency
    objective: 95
    latency: {histogram: h, threshold_seconds: 2.5}
""",
    Path("slos.yaml"),
)
AVAIL, LAT = CONFIG.slos


def result(endpoint: str | None, sli: float | None) -> SLOResult:
    windows = AVAIL.window_names
    burn = None if sli is None else (1 - sli) / 0.001
    return SLOResult(
        labels=(("endpoint", endpoint),) if endpoint else (),
        sli=dict.fromkeys(windows, sli),
        burn_rate=dict.fromkeys(windows, burn),
        events={},
        error_budget_remaining=None if burn is None else 1 - burn,
    )


def scrape(holder: SnapshotHolder) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = generate_latest(DaemonMetrics(holder, "samokoder").registry).decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_gauges_follow_the_latest_snapshot() -> None:
    holder = SnapshotHolder()
    holder.publish(
        Snapshot(
            1000.0,
            0.1,
            (
                SLOStatus(AVAIL, (result("/a", 0.9995), result("/gone", 0.99))),
                SLOStatus(LAT, (result(None, None),)),
            ),
        )
    )
    first = scrape(holder)
    budgets = {s[0]["endpoint"]: s[1] for s in first["samokoder_error_budget_remaining_percent"]}
    assert budgets == {"/a": pytest.approx(50.0), "/gone": pytest.approx(-900.0)}  # overspent, not clamped
    labels = first["samokoder_error_budget_remaining_percent"][0][0]
    assert labels == {"slo": "avail", "slo_type": "availability", "service": "api", "team": "core", "endpoint": "/a"}
    assert {s[0]["window"] for s in first["samokoder_slo_sli_ratio"]} == set(AVAIL.window_names)
    assert first["samokoder_availability_slo_target"] == [
        ({"slo": "avail", "slo_type": "availability", "service": "api", "team": "core"}, 0.999)
    ]
    assert first["samokoder_latency_slo_target_seconds"][0][1] == 2.5
    # No data: no SLI, budget or burn series for "lat" at all (never NaN or 1.0).
    assert all(s[0]["slo"] != "lat" for s in first["samokoder_slo_sli_ratio"])
    assert {s[0]["slo"]: s[1] for s in first["sloeval_slo_data_stale"]} == {"avail": 0.0, "lat": 0.0}

    holder.publish(Snapshot(1030.0, 0.1, (SLOStatus(AVAIL, (result("/a", 0.9995),)),)))
    second = scrape(holder)
    assert [s[0]["endpoint"] for s in second["samokoder_error_budget_remaining_percent"]] == ["/a"]
    assert all(s[0]["slo"] != "lat" for s in second["samokoder_slo_objective_ratio"])
    assert second["sloeval_last_evaluation_timestamp_seconds"] == [({}, 1030.0)]


def test_stale_slo_exports_no_values_and_readiness_counts_failures() -> None:
    holder = SnapshotHolder()
    holder.publish(Snapshot(1.0, 0.1, (SLOStatus(AVAIL, (result("/a", 0.999),)),)))
    assert holder.failed_in_a_row == 0
    holder.publish(Snapshot(2.0, 0.1, (SLOStatus(AVAIL, (), error="connection refused"),)))
    metrics = scrape(holder)
    assert metrics["sloeval_slo_data_stale"] == [({"slo": "avail"}, 1.0)]
    assert "samokoder_error_budget_remaining_percent" not in metrics
    assert holder.failed_in_a_row == 1
    assert "sloeval_build_info" in metrics
