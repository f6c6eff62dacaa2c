"""PostgreSQL for the state store tests: one throwaway cluster per test session, an empty database per test.

A test module uses these fixtures with ``pytest_plugins = ("tests.pg",)``. ``postgres_url`` is an
empty database for the test (one database, emptied before each test in about 20 ms). A test that
kills the server takes ``killable_postgres``: the shared cluster, started again after the test if
the test left it down, so no test pays for a cluster of its own (initdb, about 1 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from devtools.postgres import PASSWORD, USER, PostgresServer, pg_binary


def database_url(server: PostgresServer, name: str) -> str:
    return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{server.port}/{name}"


def _require_postgres() -> None:
    try:
        pg_binary("initdb")
    except FileNotFoundError as exc:
        pytest.skip(f"{exc} (make system-deps)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    _require_postgres()
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def _postgres_database(postgres_server: PostgresServer) -> str:
    """The tests' database on the shared cluster (CREATE DATABASE takes up to 0.2 s: once, not per test)."""
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute("CREATE DATABASE state_tests")
    return database_url(postgres_server, "state_tests")


#: An empty database again: no session of an earlier test left (nor its advisory locks), no schema.
RESET = (
    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    "DROP SCHEMA public CASCADE",
    "CREATE SCHEMA public",
)


@pytest.fixture
def postgres_url(_postgres_database: str) -> str:
    """The URL (with the password) of an empty database on the shared cluster, for this test alone."""
    with psycopg.connect(_postgres_database, autocommit=True) as db:
        for statement in RESET:
            db.execute(statement)
    return _postgres_database


class KillablePostgres:
    """The shared cluster, for a test that kills it; the test's database is ``url``."""

    def __init__(self, server: PostgresServer, url: str) -> None:
        self.server = server
        self.url = url

    def kill(self) -> None:
        """SIGKILL the server, after a checkpoint: the test cluster runs with ``synchronous_commit=off``,
        and what the test committed must survive as it would on a real one."""
        self.server.psql("CHECKPOINT")
        self.server.stop(kill=True)

    def restart(self) -> None:
        """Start the killed server again (its orphaned backends may take a moment to exit)."""
        for attempt in range(20):
            try:
                self.server.start()
                return
            except RuntimeError:
                if attempt == 19:
                    raise
                self.server.stop()
                time.sleep(0.25)


@pytest.fixture
def killable_postgres(postgres_server: PostgresServer, postgres_url: str) -> Iterator[KillablePostgres]:
    """The shared cluster for a test that kills it: started again after the test if it is down."""
    killable = KillablePostgres(postgres_server, postgres_url)
    yield killable
    if not postgres_server.running:
        killable.restart()
