"""Smoke test of ``python -m bench.slo_generator_compare``: sloeval and slo-generator 2.6.0 give the
same numbers for the same SLOs against the same Prometheus.

A tiny run (8 SLOs, one day of 3 routes, backfilled blocks served as they are): one run, i.e. one
every-window cycle of each tool and one steady-state run of sloeval's long-lived daemon evaluator.
slo-generator is installed from PyPI into ``.bench-cache/`` on first use and reused after; when
PyPI cannot be reached the test is skipped, except under CI (``CI`` set), where it fails.
Speed is not asserted here: ``make bench`` measures it on the full data set.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench.slo_generator_compare import (
    COMPARED_KINDS,
    FULL,
    MIN_STEADY_CYCLES,
    REL_TOLERANCE,
    SLO_GENERATOR,
    STEADY,
    InstallError,
    ensure_slo_generator,
)
from devtools.servers import PROMETHEUS_BINARY
from devtools.tsdb import PROMTOOL
from sloeval.config.settings import Settings

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (Path(PROMETHEUS_BINARY).exists() and Path(PROMTOOL).exists()),
        reason="needs Debian's prometheus and promtool: scripts/install-system-deps.sh prometheus",
    ),
]

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".bench-cache"


@pytest.fixture(scope="module")
def slo_generator_python() -> Path:
    try:
        return ensure_slo_generator(CACHE, timeout=75)
    except InstallError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"slo-generator must install under CI: {exc}")
        pytest.skip(f"slo-generator 2.6.0 could not be installed (PyPI unreachable?): {exc}")


def test_sloeval_and_slo_generator_agree_on_every_window(slo_generator_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    args = ["--slos", "8", "--routes", "3", "--days", "1", "--runs", "1", "--raw-blocks", "--json", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "bench.slo_generator_compare", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=80,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "| **sloeval daemon, steady state**" in result.stdout
    assert "| sloeval, every window every cycle" in result.stdout
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["equal"] is True

    # The every-window cycle and the last steady-state cycle: both equal to slo-generator's numbers,
    # for every SLO of every kind and every window.
    for key in ("comparison", "steady_comparison"):
        comparison = document[key]
        assert comparison["equal"] is True, (key, comparison["failures"])
        assert comparison["failures"] == []
        assert comparison["pairs"] == 8 * len(document["windows"]) == 64
        assert set(comparison["pairs_by_kind"]) == set(COMPARED_KINDS)
        assert all(n > 0 for n in comparison["pairs_by_kind"].values())
        assert comparison["only_sloeval"] == comparison["only_slo_generator"] == comparison["neither"] == []
        assert comparison["max_sli_difference"] <= REL_TOLERANCE
        assert comparison["max_burn_rate_difference"] <= REL_TOLERANCE
        assert comparison["rounded_agree"] == comparison["pairs"]

    # One measured cycle of each tool's every-window cycle, and each asked Prometheus (through the proxy).
    cycles = document["cycles"]
    assert {c["tool"] for c in cycles} == {FULL, STEADY, SLO_GENERATOR}
    full = {c["tool"]: c for c in cycles if c["tool"] != STEADY}
    assert all(c["wall_seconds"] > 0 and c["requests"] > 0 and c["proxy_errors"] == 0 for c in cycles)
    # slo-generator: one query per window for the uptime SLO (query_sli), two for the others.
    assert full[SLO_GENERATOR]["requests"] == 8 * 8 * 2 - 2 * 8
    assert document["windows"] == ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]

    # The daemon's steady state (default settings: SLOEVAL_EVAL_INTERVAL apart, the long windows refreshed
    # every SLOEVAL_LONG_WINDOW_REFRESH): one refresh period of consecutive cycles, each sending fewer queries.
    interval = Settings.model_fields["eval_interval"].default
    refresh = Settings.model_fields["long_window_refresh"].default
    assert document["eval_interval"] == interval
    assert document["long_window_refresh"] == refresh
    long_windows = document["long_windows"]
    assert "30d" in long_windows
    assert long_windows == document["windows"][-len(long_windows) :]
    steady = [c for c in cycles if c["tool"] == STEADY]
    assert len(steady) == document["steady_cycles_per_run"] == max(MIN_STEADY_CYCLES, math.ceil(refresh / interval))
    assert [c["at"] - steady[0]["at"] for c in steady] == [interval * i for i in range(len(steady))]
    first = document["steady_first_cycle"]
    assert first["terms"] == full[FULL]["terms"]  # the daemon's first cycle asks every expression
    # Long windows go in requests of their own (a slow refresh never holds up the short windows), so a
    # cycle that refreshes them may send more, smaller requests than an every-window cycle packed as one.
    assert first["requests"] >= full[FULL]["requests"]
    # Fewer queries: a steady cycle never asks more than an every-window one, the typical one (median)
    # asks fewer PromQL expressions, and so does the whole refresh period. (A cycle that refreshes a long
    # window may ask as much as a full one; and the 8 SLOs' expressions fit into 3 requests of up to 32
    # either way, so the HTTP requests can only be checked for not being more.)
    terms, full_terms = [c["terms"] for c in steady], full[FULL]["terms"]
    assert max(terms) <= full_terms
    assert statistics.median(terms) < full_terms
    assert sum(terms) < len(terms) * full_terms
    assert all(c["requests"] <= first["requests"] for c in steady)
    # Cycles with a long-window refresh ask more than those without.
    assert min(c["terms"] for c in steady) < max(c["terms"] for c in steady)
    assert len(document["steady_ratios"]) == len(document["ratios"]) == 1
