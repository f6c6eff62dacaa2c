"""A socket server on 127.0.0.1 served from a daemon thread: ``start``/``stop``, or ``with``.

Subclasses say how to build their server (``_make_server``); the thread, shutdown and context
manager are here once.
"""

from __future__ import annotations

import socketserver
import threading
from types import TracebackType
from typing import Self


class LoopbackServer:
    """Base of the small HTTP servers of the tests and benchmarks (stand-ins, proxies, replays)."""

    thread_name = "loopback-server"
    poll_interval = 0.5
    host = "127.0.0.1"

    def __init__(self) -> None:
        self._server: socketserver.BaseServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _make_server(self) -> socketserver.TCPServer:
        """The server, bound to 127.0.0.1 (port 0 for a free one)."""
        raise NotImplementedError

    def start(self) -> None:
        server = self._make_server()
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self.poll_interval},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
