"""A fault-injecting HTTP proxy for Prometheus's query API, for tests.

Forwards ``GET``/``POST /api/v1/*`` to an upstream Prometheus and can be switched at run
time, from any thread, into a fault mode::

    with FaultProxy(prometheus.url) as proxy:
        ...  # point the client at proxy.url
        proxy.set_status(503, '{"status":"error","errorType":"timeout","error":"query timed out"}')
        proxy.refuse()          # nothing listens on the port any more: connection refused
        proxy.accept()          # listening again, on the same port, passing through

Modes:

* ``pass``: forward to the upstream; an unreachable upstream gets a 502 with an HTML body
  (as nginx would send), an upstream timeout a 504.
* ``refuse``: the listening socket is closed, so connections are refused by the kernel (and
  therefore not counted). Any ``set_*`` call, or ``accept()``, listens again on the same port.
* ``hang``: accept the request and answer nothing for ``seconds``; then forward it (a very slow
  Prometheus). A mode change or ``close()`` drops the hanging connections without an answer.
* ``status``: answer a scripted status, body and content type.
* ``warnings``: forward, and add ``"warnings": [...]`` to the JSON answer.
* ``odd``: answer ``{"status": "success", "data": <scripted data>}`` without asking the upstream.

Every fault except ``refuse`` takes ``match``: when given, only requests whose ``query``
parameter contains that text get the fault; the others are forwarded (and counted as ``pass``).
Each request is counted under the mode it was served in (:attr:`counts`) and recorded with its
parameters (:attr:`recorded`), so tests can tell cycles apart by the ``time`` parameter.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit

import httpx

Mode = Literal["pass", "refuse", "hang", "status", "warnings", "odd"]
MODES: tuple[Mode, ...] = ("pass", "refuse", "hang", "status", "warnings", "odd")

BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n"
)
GATEWAY_TIMEOUT_HTML = BAD_GATEWAY_HTML.replace("502 Bad Gateway", "504 Gateway Time-out")
_FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "authorization", "user-agent")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the proxy received, and the mode it was served in."""

    mode: Mode
    method: str
    path: str
    params: dict[str, str]
    received_at: float

    @property
    def query(self) -> str | None:
        return self.params.get("query")

    @property
    def time(self) -> str | None:
        return self.params.get("time")


@dataclass(frozen=True)
class _Fault:
    mode: Mode = "pass"
    match: str | None = None
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    hang_seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    data: dict[str, Any] | Callable[[str], dict[str, Any]] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)

    def applies_to(self, params: dict[str, str]) -> bool:
        return self.match is None or self.match in params.get("query", "")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # the default backlog of 5 drops SYNs when a client opens many connections at once

    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (a cancelled query) is normal here: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: refuse() leaves no live keep-alive
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """No access log."""

    def do_GET(self) -> None:
        self.server.proxy._handle(self, b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.proxy._handle(self, self.rfile.read(length) if length > 0 else b"")


class FaultProxy:
    """Threaded proxy on 127.0.0.1 in front of ``upstream``; see the module docstring."""

    def __init__(
        self, upstream: str, *, host: str = "127.0.0.1", port: int = 0, upstream_timeout: float = 60.0
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self._requested_port = port
        self.port = 0
        self._lock = threading.Lock()
        self._fault = _Fault()
        self._counts: dict[Mode, int] = dict.fromkeys(MODES, 0)
        self._recorded: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=upstream_timeout)

    # --- life cycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        with self._lock:
            self._listen()

    def close(self) -> None:
        with self._lock:
            self._fault.release.set()
            self._stop_listening()
        self._client.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _listen(self) -> None:
        """Bind (again) and serve; the first bind picks the port, later ones reuse it. Lock held."""
        if self._server is not None:
            return
        port = self.port or self._requested_port
        deadline = time.monotonic() + 5.0
        while True:
            try:
                server = _Server((self.host, port), self)
                break
            except OSError:
                if not self.port or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # the old socket is still being torn down
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fault-proxy-{self.port}", daemon=True
        )
        self._thread.start()

    def _stop_listening(self) -> None:
        """Close the listening socket. Lock held."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    # --- switching modes --------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        with self._lock:
            return self._fault.mode

    def _switch(self, fault: _Fault) -> None:
        with self._lock:
            self._fault.release.set()  # wake requests hanging in the previous mode
            self._fault = fault
            if fault.mode == "refuse":
                self._stop_listening()
            else:
                self._listen()

    def set_pass(self) -> None:
        """Forward everything (and listen again if refused)."""
        self._switch(_Fault())

    def accept(self) -> None:
        """Listen again on the same port, in ``pass`` mode."""
        self.set_pass()

    def refuse(self) -> None:
        """Close the listening socket: new connections are refused."""
        self._switch(_Fault(mode="refuse"))

    def set_status(
        self, code: int, body: str, content_type: str = "application/json", *, match: str | None = None
    ) -> None:
        """Answer ``code`` with ``body`` instead of asking the upstream."""
        self._switch(
            _Fault(mode="status", match=match, status=code, body=body.encode("utf-8"), content_type=content_type)
        )

    def set_hang(self, seconds: float, *, match: str | None = None) -> None:
        """Say nothing for ``seconds``, then forward."""
        self._switch(_Fault(mode="hang", match=match, hang_seconds=seconds))

    def set_warnings(self, warnings: list[str], *, match: str | None = None) -> None:
        """Forward, adding these ``warnings`` to the JSON answer."""
        self._switch(_Fault(mode="warnings", match=match, warnings=tuple(warnings)))

    def set_odd(self, data: dict[str, Any] | Callable[[str], dict[str, Any]], *, match: str | None = None) -> None:
        """Answer ``{"status": "success", "data": data}``; ``data`` may be made from the query text."""
        self._switch(_Fault(mode="odd", match=match, data=data))

    # --- counting ---------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """Requests received since the last ``reset_counts``, in any mode."""
        with self._lock:
            return sum(self._counts.values())

    @property
    def counts(self) -> dict[Mode, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def recorded(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._recorded)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(MODES, 0)
            self._recorded = []

    def wait_for_requests(self, count: int, timeout: float) -> int:
        """Wait until at least ``count`` requests arrived; return how many did."""
        deadline = time.monotonic() + timeout
        while self.requests < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.requests

    # --- serving ----------------------------------------------------------------------------

    def _handle(self, handler: _Handler, body: bytes) -> None:
        split = urlsplit(handler.path)
        if not split.path.startswith("/api/v1/"):
            self._reply(handler, 404, b"404 page not found\n", "text/plain; charset=utf-8")
            return
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        if body and handler.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        with self._lock:
            fault = self._fault
            mode: Mode = fault.mode if fault.mode != "refuse" and fault.applies_to(params) else "pass"
            self._counts[mode] += 1
            self._recorded.append(RecordedRequest(mode, handler.command, split.path, params, time.time()))
        if mode == "status":
            self._reply(handler, fault.status, fault.body, fault.content_type)
        elif mode == "odd":
            data = fault.data(params.get("query", "")) if callable(fault.data) else fault.data
            self._reply(handler, 200, json.dumps({"status": "success", "data": data}).encode(), "application/json")
        elif mode == "hang":
            if fault.release.wait(fault.hang_seconds):
                handler.close_connection = True  # released early: drop the connection, answer nothing
                return
            self._forward(handler, body)
        elif mode == "warnings":
            self._forward(handler, body, warnings=fault.warnings)
        else:
            self._forward(handler, body)

    def _forward(self, handler: _Handler, body: bytes, *, warnings: tuple[str, ...] = ()) -> None:
        headers = {k: v for k, v in handler.headers.items() if k.lower() in _FORWARDED_REQUEST_HEADERS}
        try:
            response = self._client.request(
                handler.command, self.upstream + handler.path, content=body or None, headers=headers
            )
        except httpx.TimeoutException:
            self._reply(handler, 504, GATEWAY_TIMEOUT_HTML.encode(), "text/html")
            return
        except httpx.HTTPError:
            self._reply(handler, 502, BAD_GATEWAY_HTML.encode(), "text/html")
            return
        content = response.content
        content_type = response.headers.get("Content-Type", "application/octet-stream")
        if warnings:
            try:
                payload = response.json()
            except ValueError:
                payload = None
            if isinstance(payload, dict):
                payload["warnings"] = [*(payload.get("warnings") or []), *warnings]
                content = json.dumps(payload).encode()
        self._reply(handler, response.status_code, content, content_type)

    @staticmethod
    def _reply(handler: _Handler, status: int, body: bytes, content_type: str) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            handler.close_connection = True  # the client gave up (e.g. its query timeout)
