from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.servers import PrometheusServer, VictoriaMetricsServer, free_port
from devtools.tsdb import Series, write_prometheus_blocks
from tests.e2e import dataset

REPO = Path(__file__).resolve().parents[2]


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


def eval_json(url: str, slo_file: Path, at: int) -> dict[str, Any]:
    """``sloeval eval --format json`` at ``at``; it must succeed for every SLO."""
    result = run_sloeval(["eval", "--format", "json", "--at", str(at), "-c", str(slo_file)], sloeval_env(url))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.2 s until it is true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition text -> {sample name: [(labels, value), ...]}."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


class Daemon:
    def __init__(self, prometheus_url: str, slo_file: Path, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = tmp_path / f"sloeval-{self.port}.log"
        settings = {
            "SLOEVAL_HTTP_HOST": "127.0.0.1",
            "SLOEVAL_HTTP_PORT": str(self.port),
            "SLOEVAL_EVAL_INTERVAL": "1",
            "SLOEVAL_LOG_LEVEL": "info",
            "SLOEVAL_SLO_FILE": str(slo_file),
            "SLOEVAL_STATE_DIR": str(tmp_path / f"state-{self.port}"),
        }
        self.env = sloeval_env(prometheus_url, **{**settings, **env})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sloeval", "run"], env=self.env, cwd=REPO, stderr=stderr
            )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)

    def wait_for(self, path: str, status: int, timeout: float = 30) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.process is not None
            assert self.process.poll() is None, self.log()
            try:
                last = self.get(path)
                if last.status_code == status:
                    return last
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.2)
        raise AssertionError(f"{path} never answered {status}; last: {last}\n{self.log()}")

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(prometheus_url: str, slo_file: Path, **env: str) -> Daemon:
        daemon = Daemon(prometheus_url, slo_file, tmp_path, **env)
        daemon.start()
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()
