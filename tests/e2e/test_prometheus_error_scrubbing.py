"""A gateway that echoes the request's headers in its 401 page never makes sloeval print the
Prometheus credentials (issue 11, item 10d): ``check --online`` and ``eval`` run as processes
against a real HTTP server on 127.0.0.1, and everything they print is searched for the secret.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import run_sloeval, sloeval_env

pytestmark = pytest.mark.e2e

USER = "sloeval-reader"
PASSWORD = "GwPw-Qz8r/Lm+Xc"
TOKEN = "GwBearer.Ht5Km9Pq3Vw7Zs1"
SLO_FILE = """\
service: shop
slos:
  - name: errors
    objective: 99
    ratio: {bad: 'shop_requests_total{code=~"5.."}', total: shop_requests_total}
  - name: latency
    objective: 95
    latency: {histogram: http_seconds, threshold_seconds: 0.3}
"""


class _EchoHandler(BaseHTTPRequestHandler):
    """401 with the request headers in the body: as an HTML page, or inside Prometheus's JSON."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        # The credentials first, so that they are in the part of a long page that gets reported.
        ordered = sorted(self.headers.items(), key=lambda item: item[0].lower() != "authorization")
        headers = "\n".join(f"{name}: {value}" for name, value in ordered)
        if self.server.json_body:  # type: ignore[attr-defined]
            body = json.dumps({"status": "error", "errorType": "unauthorized", "error": f"denied: {headers}"})
            content_type = "application/json"
        else:
            body = f"<html><body><h1>401 Unauthorized</h1><pre>{headers}</pre></body></html>"
            content_type = "text/html"
        data = body.encode()
        self.send_response(401)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST


@pytest.fixture(params=["html", "json"])
def gateway(request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.json_body = request.param == "json"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def forbidden(secret: str, user: str | None) -> set[str]:
    forms = {secret, secret.lower(), secret.upper()}
    if user is not None:
        forms.add(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return forms


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_echoed_credentials_are_never_printed(gateway: str, auth: str, tmp_path: Path) -> None:
    slo_file = tmp_path / "slos.yaml"
    slo_file.write_text(SLO_FILE, encoding="utf-8")
    if auth == "bearer":
        credentials = {"SLOEVAL_PROMETHEUS_BEARER_TOKEN": TOKEN}
        secrets = forbidden(TOKEN, None)
    else:
        credentials = {"SLOEVAL_PROMETHEUS_USERNAME": USER, "SLOEVAL_PROMETHEUS_PASSWORD": PASSWORD}
        secrets = forbidden(PASSWORD, USER)
    env = sloeval_env(gateway, SLOEVAL_LOG_LEVEL="debug", SLOEVAL_QUERY_ATTEMPTS="1", **credentials)
    for command in (["check", "--online"], ["eval"], ["eval", "--format", "json"]):
        result = run_sloeval([*command, "-c", str(slo_file)], env, timeout=60)
        printed = result.stdout + result.stderr
        assert result.returncode == 1, printed
        assert "unauthorized" in printed.lower(), printed  # the error is reported ...
        assert "Traceback" not in printed
        leaked = sorted(form for form in secrets if form in printed)
        assert not leaked, f"{command}: {leaked} in\n{printed}"  # ... without the credentials
