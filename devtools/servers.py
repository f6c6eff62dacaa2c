"""Real Prometheus and VictoriaMetrics processes on 127.0.0.1, for tests and the demo.

Both servers are context managers::

    with PrometheusServer(data_dir) as prom:
        instant_query(prom.url, "up", time.time())
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx
import yaml

from devtools.tsdb import Series, format_labels, format_number

PROMETHEUS_BINARY = "/usr/bin/prometheus"
VICTORIA_METRICS_BINARY = "/usr/bin/victoria-metrics"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
IMPORT_BATCH_LINES = 50_000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def instant_query(url: str, promql: str, at: float, *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Run an instant query at unix time ``at``; return ``data.result``.

    Raises ``RuntimeError`` unless the API answers ``status: success``.
    """
    response = httpx.post(
        f"{url}/api/v1/query",
        data={"query": promql, "time": format_number(at)},
        timeout=timeout,
    )
    try:
        body = response.json()
    except ValueError as exc:
        raise RuntimeError(f"query {promql!r}: HTTP {response.status_code}: {response.text[:500]}") from exc
    if not isinstance(body, dict) or body.get("status") != "success":
        detail = body.get("error", body) if isinstance(body, dict) else body
        raise RuntimeError(f"query {promql!r}: HTTP {response.status_code}: {detail}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


class _ManagedProcess:
    """Start a server binary, wait for its health endpoint, stop it politely."""

    _name = "server"
    _health_path = "/"

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"sloeval-{self._name}-"))
        self.log_path = self.work_dir / f"{self._name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Hook run before each start (e.g. to write a config file)."""

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self._name} is already running at {self.url}")
        self._prepare()
        self._log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError:
            self._close_log()
            raise
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise RuntimeError(f"{self._name} exited with code {code} during start-up:\n{self.log_tail()}")
                try:
                    if client.get(self.url + self._health_path).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self._name} not ready at {self.url} after {START_TIMEOUT:.0f}s:\n{self.log_tail()}"
                    )
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still alive after 15 s. Safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()

    def restart(self) -> None:
        """Stop and start again on the same port and data directory."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def cleanup(self) -> None:
        """Stop and remove the private work dir (config and log); data_dir is left alone."""
        self.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class PrometheusServer(_ManagedProcess):
    """``/usr/bin/prometheus`` serving ``data_dir`` (which may hold backfilled blocks).

    The config file and log live in :attr:`work_dir`; the admin API and
    lifecycle endpoints (``/-/reload``, ``/-/quit``) are enabled.
    """

    _name = "prometheus"
    _health_path = "/-/ready"

    def __init__(
        self,
        data_dir: Path,
        *,
        scrape_configs: list[dict[str, Any]] | None = None,
        scrape_interval: str = "15s",
        evaluation_interval: str = "15s",
        rule_files: list[Path] | None = None,
        extra_args: Sequence[str] = (),
        binary: str = PROMETHEUS_BINARY,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.scrape_configs = list(scrape_configs or [])
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.rule_files = [Path(p) for p in rule_files or []]
        self.extra_args = list(extra_args)
        self.binary = binary
        self.config_path = self.work_dir / "prometheus.yml"

    def config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(p.resolve()) for p in self.rule_files],
            "scrape_configs": self.scrape_configs,
        }

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False), encoding="utf-8")

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            "--storage.tsdb.retention.time=100y",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--web.enable-admin-api",
            *self.extra_args,
        ]

    def reload(self) -> None:
        """Rewrite the config (e.g. after changing rule_files) and POST /-/reload."""
        self._prepare()
        response = httpx.post(f"{self.url}/-/reload", timeout=30.0)
        if response.status_code != 200:
            raise RuntimeError(f"prometheus reload failed: HTTP {response.status_code}: {response.text}")


class VictoriaMetricsServer(_ManagedProcess):
    """Single-node ``/usr/bin/victoria-metrics`` with caching and latency offset disabled.

    ``-search.latencyOffset=0s`` makes the newest samples visible at once (the
    default hides the last 30 s relative to now) and ``-search.disableCache``
    keeps the rollup cache from serving results computed before a backfill.
    """

    _name = "victoria-metrics"
    _health_path = "/health"

    def __init__(
        self,
        data_dir: Path,
        *,
        extra_args: Sequence[str] = (),
        binary: str = VICTORIA_METRICS_BINARY,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args)
        self.binary = binary

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"-storageDataPath={self.data_dir}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",
            "-search.disableCache",
            "-search.latencyOffset=0s",
            *self.extra_args,
        ]

    def import_series(self, series: Sequence[Series], *, batch_lines: int = IMPORT_BATCH_LINES) -> None:
        """Push samples through ``/api/v1/import/prometheus`` and flush them to searchable storage."""
        with httpx.Client(base_url=self.url, timeout=120.0) as client:
            batch: list[str] = []
            for one in series:
                prefix = one.name + format_labels(one.labels) + " "
                for t, v in one.samples:
                    batch.append(f"{prefix}{format_number(v)} {round(t * 1000)}\n")
                    if len(batch) >= batch_lines:
                        self._post_batch(client, batch)
                        batch = []
            if batch:
                self._post_batch(client, batch)
            self.flush(client)

    def flush(self, client: httpx.Client | None = None) -> None:
        """Make recently ingested samples visible to queries (``/internal/force_flush``)."""
        if client is None:
            with httpx.Client(base_url=self.url, timeout=60.0) as own:
                self.flush(own)
            return
        response = client.get("/internal/force_flush")
        if response.status_code != 200:
            raise RuntimeError(f"victoria-metrics force_flush failed: HTTP {response.status_code}: {response.text}")

    @staticmethod
    def _post_batch(client: httpx.Client, lines: list[str]) -> None:
        response = client.post("/api/v1/import/prometheus", content="".join(lines).encode("utf-8"))
        if response.status_code not in (200, 204):
            raise RuntimeError(f"victoria-metrics import failed: HTTP {response.status_code}: {response.text[:500]}")
