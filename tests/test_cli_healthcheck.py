"""``sloeval healthcheck``: the container HEALTHCHECK asks the daemon's own endpoints on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from devtools.servers import free_port
from sloeval.cli import main


class _Endpoints(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, int]] = {"/healthz": 200, "/readyz": 503}
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(self.answers.get(self.path, 404))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def endpoints() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoints)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Endpoints.seen.clear()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_healthy_daemon(endpoints: int, host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOEVAL_HTTP_HOST", host)
    monkeypatch.setenv("SLOEVAL_HTTP_PORT", str(endpoints))
    assert main(["healthcheck"]) == 0
    assert _Endpoints.seen == ["/healthz"]


def test_not_ready_is_unhealthy_for_ready_probe(
    endpoints: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLOEVAL_HTTP_PORT", str(endpoints))
    assert main(["healthcheck", "--ready"]) == 1
    assert _Endpoints.seen == ["/readyz"]
    assert capsys.readouterr().err.strip() == f"sloeval: http://127.0.0.1:{endpoints}/readyz: HTTP 503"


def test_nothing_listening(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    monkeypatch.setenv("SLOEVAL_HTTP_PORT", str(port))
    assert main(["healthcheck"]) == 1
    assert capsys.readouterr().err.strip() == f"sloeval: http://127.0.0.1:{port}/healthz: ConnectError"


def test_needs_no_slo_file(endpoints: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOEVAL_HTTP_PORT", str(endpoints))
    monkeypatch.setenv("SLOEVAL_SLO_FILE", "/nonexistent/slos.yaml")
    assert main(["healthcheck"]) == 0
