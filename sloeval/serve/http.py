"""The HTTP endpoints: ``/metrics``, ``/healthz`` and ``/readyz`` on a threaded WSGI server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Access logs are not wanted: scrapes every few seconds would drown the events."""


class ExpositionCache:
    """The /metrics page, rendered at most once per ``max_age`` seconds.

    A burst of scrapes then costs one rendering, not one per request: rendering holds the
    interpreter lock, which the evaluation loop needs too. Prometheus scrapes every few
    seconds, so a page up to ``max_age`` old is as good as a fresh one.
    """

    def __init__(self, registry: CollectorRegistry, max_age: float = 1.0) -> None:
        self._registry = registry
        self._max_age = max_age
        self._lock = threading.Lock()
        self._page = b""
        self._rendered_at = -float("inf")

    def page(self) -> bytes:
        with self._lock:
            now = time.monotonic()
            if now - self._rendered_at >= self._max_age:
                self._page = generate_latest(self._registry)
                self._rendered_at = now
            return self._page


class RequestPacer:
    """Spaces requests at least ``1 / max_per_second`` apart; waiting threads sleep, not spin.

    Serving competes with the evaluation loop for CPU and the interpreter lock. Scrapers need a
    few requests per second; a flood is answered, only later, instead of starving the loop.
    """

    def __init__(self, max_per_second: float) -> None:
        self._gap = 1.0 / max_per_second if max_per_second > 0 else 0.0
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def wait_turn(self) -> None:
        if not self._gap:
            return
        with self._lock:
            now = time.monotonic()
            turn = max(now, self._next)
            self._next = turn + self._gap
        if turn > now:
            time.sleep(turn - now)


def build_app(
    registry: CollectorRegistry,
    readiness: Callable[[], tuple[bool, str]],
    *,
    max_age: float = 1.0,
    max_requests_per_second: float = 0.0,
) -> WSGIApp:
    cache = ExpositionCache(registry, max_age)
    pacer = RequestPacer(max_requests_per_second)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            pacer.wait_turn()  # health probes are never paced: a flood must not fail them
            page = cache.page()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(page)))])
            return [page]
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


class _Server(ThreadingWSGIServer):
    # socketserver's default backlog of 5 makes a scrape burst wait seconds for a connection.
    request_queue_size = 1024


class MetricsServer:
    """Serves the WSGI app in background threads; ``close`` stops it."""

    def __init__(self, host: str, port: int, app: WSGIApp) -> None:
        self._server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
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
