"""`make bench`'s cycle-cost and memory benchmark in a tiny size, so that it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO

pytestmark = pytest.mark.e2e


def test_cycle_cost_benchmark_runs_in_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "cycle.json"
    args = ["--slos", "24", "--routes", "4", "--days", "1", "--runs", "1", "--memory-cycles", "5"]
    args += ["--memory-slos", "24", "--memory-interval", "0.5", "--no-compact", "--json", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "bench.cycle_cost", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| 24 | steady (daemon, every 20 s) |" in result.stdout
    (size,) = json.loads(out.read_text())["sizes"]
    previous, (full,), steady = size["previous"], size["full"], size["steady"]
    assert full["requests"] < previous["requests"]  # expressions shared and packed
    assert full["samples"] < previous["samples"]
    assert max(c["samples"] for c in steady) <= full["samples"]
    assert min(c["samples"] for c in steady) < full["samples"]  # the 30d window is not asked every cycle
    assert all(c["wall"] > 0 and c["alone_wall"] > 0 and c["cpu"] > 0 for c in [full, *steady])
    assert size["accuracy"]["compared"] > 0
    memory = json.loads(out.read_text())["memory"]
    assert memory["cycles"] >= 5
    assert 20 < memory["rss_after_first_mb"] < 500
