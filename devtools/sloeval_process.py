"""``python -m sloeval run`` as a child process on 127.0.0.1, for the benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from devtools.servers import free_port

REPO = Path(__file__).resolve().parents[1]


class SloevalProcess:
    """The daemon with ``settings`` (``SLOEVAL_*``) on a free loopback port, its log in ``log_path``.

    The caller's own ``SLOEVAL_*`` variables are dropped, except those named in ``inherit``.
    """

    def __init__(self, settings: Mapping[str, str], log_path: Path, *, inherit: Iterable[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        kept = set(inherit)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SLOEVAL_") or k in kept}
        self.env.update({"SLOEVAL_HTTP_HOST": "127.0.0.1", "SLOEVAL_LOG_LEVEL": "info", **settings})
        self.env["SLOEVAL_HTTP_PORT"] = str(self.port)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sloeval", "run"], env=self.env, cwd=REPO, stderr=log, stdin=subprocess.DEVNULL
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sloeval exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"sloeval not ready after {timeout:.0f}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line being written right now
        return out

    def stop(self) -> int:
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
