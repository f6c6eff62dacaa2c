"""A throwaway PostgreSQL cluster on loopback for the tests, the demo and the benchmarks.

``initdb`` makes a cluster in a temporary directory and ``postgres`` serves it on 127.0.0.1 at a
free port, with password (SCRAM) authentication for the ``sloeval`` superuser. PostgreSQL refuses
to run as root, so when the tests run as root (CI does) the cluster belongs to, and the server
runs as, the ``postgres`` system user that Debian's package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from devtools.servers import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT = 60.0
USER = "sloeval"
PASSWORD = "pg-test-secret-4f1c"
DATABASE = "sloeval"


def pg_binary(name: str) -> str:
    """A PostgreSQL server binary: Debian's versioned directory, else the PATH."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install Debian's postgresql package")
    return found


def _run_as() -> str | None:
    """PostgreSQL will not run as root: run it as ``postgres`` then."""
    return "postgres" if os.geteuid() == 0 else None


class PostgresServer:
    """``initdb`` + ``postgres`` on 127.0.0.1; :attr:`url` is a libpq URL with the password."""

    def __init__(self, *, settings: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.work_dir = Path(tempfile.mkdtemp(prefix="sloeval-postgres-"))
        self.data_dir = self.work_dir / "data"
        self.socket_dir = self.work_dir / "socket"
        self.log_path = self.work_dir / "postgres.log"
        self.settings = dict(settings or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._initialized = False
        user = _run_as()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.work_dir, entry.pw_uid, entry.pw_gid)
        self._user = user

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def url_for(self, port: int) -> str:
        """The same database through another port (a proxy in front of this server)."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _initdb(self) -> None:
        password_file = self.work_dir / "pwfile"
        password_file.write_text(PASSWORD + "\n")
        self.socket_dir.mkdir()
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            for path in (password_file, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                pg_binary("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                USER,
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            user=self._user,
        )
        password_file.unlink()
        self._initialized = True

    def start(self) -> None:
        if self.running:
            raise RuntimeError("postgres is already running")
        if not self._initialized:
            self._initdb()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            **self.settings,
        }
        command = [pg_binary("postgres"), "-D", str(self.data_dir)]
        for name, value in options.items():
            command += ["-c", f"{name}={value}"]
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=self._user,
        )
        self._wait_ready()
        self._create_database()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited during start-up:\n{self.log_tail()}")
            ready = subprocess.run(
                [pg_binary("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"], check=False
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready after {START_TIMEOUT:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def psql(self, sql: str, *, database: str = DATABASE) -> str:
        """Run SQL through psql; returns its unaligned output."""
        result = subprocess.run(
            [
                pg_binary("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database,
                "-XAtq",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": PASSWORD},
        )
        return result.stdout.strip()

    def _create_database(self) -> None:
        if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", database="postgres") != "1":
            self.psql(f"CREATE DATABASE {DATABASE}", database="postgres")

    def stop(self, *, kill: bool = False) -> None:
        """Fast shutdown (SIGINT), or SIGKILL with ``kill``. Safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

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
