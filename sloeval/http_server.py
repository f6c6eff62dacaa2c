"""The HTTP endpoints: ``/metrics``, ``/healthz`` and ``/readyz`` on a threaded WSGI server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Access logs are not wanted: scrapes every few seconds would drown the events."""


def build_app(registry: CollectorRegistry, readiness: Callable[[], tuple[bool, str]]) -> WSGIApp:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            ready, reason = readiness()
            return _text(start_response, "200 OK" if ready else "503 Service Unavailable", reason + "\n")
        if path == "/":
            body = "sloeval: see /metrics, /healthz, /readyz\n"
            return _text(start_response, "200 OK", body)
        return _text(start_response, "404 Not Found", "not found\n")

    return app


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


class MetricsServer:
    """Serves the WSGI app in background threads; ``close`` stops it."""

    def __init__(self, host: str, port: int, app: WSGIApp) -> None:
        self._server = make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="sloeval-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
