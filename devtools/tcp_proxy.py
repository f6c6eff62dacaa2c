"""A TCP proxy on loopback that can cut a client off from its server, for partition tests.

``cut()`` stops forwarding in both directions: the client's connections stay open but nothing
reaches the server and no answer comes back, as when a node is partitioned from the database.
A real server notices a partitioned client only when its TCP keepalive probes go unanswered; on
loopback the proxy's own socket would answer them, so after ``server_gives_up_after`` seconds the
proxy closes its connections to the server, as the server's keepalive timeout would. ``heal()``
forwards again (new connections only: a cut connection stays dead, as after a real partition).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from types import TracebackType
from typing import Self


class TcpProxy:
    def __init__(self, upstream_port: int, *, server_gives_up_after: float = 10.0) -> None:
        self.upstream_port = upstream_port
        self.server_gives_up_after = server_gives_up_after
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cut(self) -> None:
        """Partition: nothing passes either way; the server drops its side after a while."""
        with self._lock:
            self._cut.set()
            doomed = [(client, upstream, dead) for client, upstream, dead in self._pairs]
        timer = threading.Timer(self.server_gives_up_after, self._server_gives_up, args=(doomed,))
        timer.daemon = True
        timer.start()

    def heal(self) -> None:
        self._cut.clear()

    def _server_gives_up(self, doomed: list[tuple[socket.socket, socket.socket, threading.Event]]) -> None:
        for _, upstream, dead in doomed:
            dead.set()
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                upstream.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            dead = threading.Event()
            if self._cut.is_set():  # a connection made during the partition never reaches the server
                with self._lock:
                    self._pairs.append((client, client, dead))
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream, dead))
            threading.Thread(target=self._pump, args=(client, upstream, dead), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket, dead: threading.Event) -> None:
        sockets = [client, upstream]
        try:
            while not self._closed.is_set() and not dead.is_set():
                if self._cut.is_set():  # partitioned: hold everything, forward nothing
                    dead.wait(0.1)
                    continue
                readable, _, _ = select.select(sockets, [], [], 0.1)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is client else client).sendall(data)
        except OSError:
            return
        finally:
            # Partitioned, the client's side stays open and silent (it learns nothing); otherwise both close.
            for sock in [upstream] if self._cut.is_set() else sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream, dead in pairs:
            dead.set()
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
