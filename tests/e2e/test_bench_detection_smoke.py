"""End to end: ``python -m bench.detection_latency`` in a tiny mode, so the benchmark cannot rot.

Two bursts picked among 8 endpoints, every interval shortened (scrapes, rule evaluation and
sloeval every 1 s, Alertmanager ``group_wait`` 1 s, sloeval ``group_wait`` 0 s): the run takes
about 15 s. Only the structure is checked (both paths deliver a message naming each burst's
endpoint, nothing names an endpoint that did not burst or comes before its burst, latencies
are positive and bounded); the figures come from the full benchmark. The second test checks
the phase planning alone, at the default intervals.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.detection_latency import ALERTMANAGER_BINARY, burst_lead, plan_bursts
from devtools.servers import PROMETHEUS_BINARY

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (Path(PROMETHEUS_BINARY).exists() and Path(ALERTMANAGER_BINARY).exists()),
        reason="needs prometheus and prometheus-alertmanager: scripts/install-system-deps.sh",
    ),
]

REPO = Path(__file__).resolve().parents[2]
TRIALS = 2
BOUND = 30.0  # seconds; the expected latencies here are 1-4 s


def test_detection_latency_benchmark_runs_in_a_tiny_mode(tmp_path: Path) -> None:
    figures_path = tmp_path / "figures.json"
    command = [
        sys.executable,
        "-m",
        "bench.detection_latency",
        "--trials",
        str(TRIALS),
        "--scrape-interval",
        "1s",
        "--rule-interval",
        "1s",
        "--sloeval-interval",
        "1",
        "--sloeval-group-wait",
        "0s",
        "--alertmanager-group-wait",
        "1s",
        "--warmup-scrapes",
        "3",
        "--max-wait",
        "40",
        "--json",
        str(figures_path),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=85, check=False)
    output = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, output
    assert "| **burst -> message** |" in done.stdout, output

    figures = json.loads(figures_path.read_text(encoding="utf-8"))
    assert figures["complete"] is True, output
    assert figures["false_alarms"] == [], output
    assert figures["effective"]["sloeval_interval_s"] == 1.0, output
    assert figures["effective"]["rule_interval_s"] == 1.0, output
    trials = figures["trials"]
    assert [t["number"] for t in trials] == [1, 2], output
    assert len({t["endpoint"] for t in trials}) == TRIALS, output
    for trial in trials:
        for path in ("sloeval", "alertmanager"):
            latency = trial[f"{path}_latency_s"]
            assert latency is not None, (path, trial, output)
            assert 0 < latency < BOUND, (path, trial, output)
        # Each path fired after the burst and no later than its message arrived.
        assert 0 < trial["sloeval_fired_at"] - trial["burst_at"] <= trial["sloeval_latency_s"] + 0.5, output
        assert 0 < trial["prometheus_fired_at"] - trial["burst_at"] <= trial["alertmanager_latency_s"] + 0.5, output
        # The condition became true on a scrape after the burst (the data path both share).
        stages = trial["stages_s"]
        assert stages["burst_to_condition"] is not None, output
        assert 0 <= stages["burst_to_condition"] < BOUND, output
    for key in ("sloeval_s", "prometheus_alertmanager_s"):
        spread = figures[key]
        assert spread["n"] == TRIALS, output
        assert 0 < spread["min"] <= spread["median"] <= spread["max"] < BOUND, output
    assert figures["ratio_of_medians"] > 0, output
    assert set(figures["targets"]) == {"ratio_at_least_3x", "sloeval_median_below_interval_plus_3s"}, output


def test_bursts_cover_both_evaluation_grids_evenly() -> None:
    """The planning alone (no processes): 12 trials at the default intervals, arbitrary grid phases."""
    now = 1_800_000_000.0
    last = {f"e{i:02d}": now - (i * 7.3) % 15 for i in range(48)}
    plans = plan_bursts(
        trials=12,
        last_scrape=last,
        scrape_s=15,
        rule_eval_at=now - 41.7,
        rule_s=60,
        sloeval_cycle_at=now - 3.1,
        sloeval_s=30,
        earliest=now + 20,
    )
    assert len({p.endpoint for p in plans}) == 12
    assert all(p.scrape_at - p.burst_at == pytest.approx(burst_lead(15)) for p in plans)
    # One trial in each twelfth (5 s) of the rule grid, one in each 2.5 s of sloeval's grid.
    assert sorted(int(p.rule_wait // 5) for p in plans) == list(range(12))
    assert sorted(int(p.sloeval_wait // 2.5) for p in plans) == list(range(12))
