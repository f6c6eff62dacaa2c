"""A live exporter on loopback: ``shop_requests_total{code}`` growing at rates a test sets.

Prometheus scrapes it like an API replica; a rate of 0 is a quiet endpoint (its counters stay where
they are, as a dead endpoint's do).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devtools.loopback import LoopbackServer


class RequestCounter(LoopbackServer):
    """``shop_requests_total{code}``, growing at rates the test sets (0 = a quiet endpoint)."""

    thread_name = "request-counter"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._counts = {"200": 0.0, "500": 0.0}
        self._rates = {"200": 0.0, "500": 0.0}
        self._since = time.monotonic()

    def set_rates(self, ok_per_second: float, errors_per_second: float) -> None:
        with self._lock:
            self._advance()
            self._rates = {"200": ok_per_second, "500": errors_per_second}

    def _advance(self) -> None:
        now = time.monotonic()
        for code, rate in self._rates.items():
            self._counts[code] += rate * (now - self._since)
        self._since = now

    def exposition(self) -> bytes:
        with self._lock:
            self._advance()
            lines = ["# TYPE shop_requests_total counter"]
            lines += [f'shop_requests_total{{code="{code}"}} {count:.3f}' for code, count in self._counts.items()]
        return ("\n".join(lines) + "\n").encode()

    def _make_server(self) -> ThreadingHTTPServer:
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = counter.exposition()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        return ThreadingHTTPServer((self.host, 0), Handler)
