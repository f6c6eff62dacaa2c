from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.servers import PrometheusServer, VictoriaMetricsServer
from devtools.tsdb import Series, write_prometheus_blocks
from tests.e2e import dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def data_end() -> int:
    """The last sample's time: a whole minute, a little before now."""
    return int(time.time()) // 60 * 60 - 60


@pytest.fixture(scope="session")
def series(data_end: int) -> list[Series]:
    return dataset.build(data_end)


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory, series: list[Series]) -> Iterator[PrometheusServer]:
    data_dir = tmp_path_factory.mktemp("prometheus-data")
    write_prometheus_blocks(series, data_dir)
    with PrometheusServer(data_dir) as server:
        yield server


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory, series: list[Series]) -> Iterator[VictoriaMetricsServer]:
    with VictoriaMetricsServer(tmp_path_factory.mktemp("vm-data")) as server:
        server.import_series(series)
        yield server


@pytest.fixture(scope="session")
def slo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "slos.yaml"
    path.write_text(dataset.SLO_FILE, encoding="utf-8")
    return path


def sloeval_env(prometheus_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOEVAL_")}
    env.update({"SLOEVAL_PROMETHEUS_URL": prometheus_url, "SLOEVAL_LOG_LEVEL": "warning"})
    env.update(extra)
    return env


def run_sloeval(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sloeval", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
