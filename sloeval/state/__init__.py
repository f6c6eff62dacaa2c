"""Durable alert state and outbox: the backends of :class:`sloeval.alerting.store.StateStore`.

May import ``sloeval.config`` and ``sloeval.alerting`` (the protocol and the types it stores); the
alert code never imports this package, so a backend is a new module here and a line in
:func:`open_state_store`, not an edit of the alert code.

- ``sqlite``: one process, ``SLOEVAL_STATE_DIR`` (the default); it always leads.
- ``postgres``: several replicas on one database (``SLOEVAL_DATABASE_URL``); one leads at a time.
"""

from __future__ import annotations

from collections.abc import Callable

from sloeval.alerting.store import Leadership, SoleLeader, StateStore
from sloeval.config.settings import Settings


async def open_state_store(
    settings: Settings, *, on_problem: Callable[[str], None] | None = None
) -> tuple[StateStore, Leadership]:
    """The store the settings name, and who leads: PostgreSQL when ``SLOEVAL_DATABASE_URL`` is set,
    else SQLite in ``SLOEVAL_STATE_DIR``, locked for this process.

    Raises StateStoreError (also when another sloeval holds the SQLite state). ``on_problem(kind)`` is
    told of trouble the store recovers from by itself, e.g. ``"file_missing"``, for a metric.
    """
    if settings.database_url is not None:
        from sloeval.state.postgres import AdvisoryLockLeadership, PostgresStateStore

        url = settings.database_url.get_secret_value()
        store = await PostgresStateStore.open(url)
        return store, AdvisoryLockLeadership(url, store)

    import anyio

    from sloeval.state.sqlite import SQLiteStateStore, ThreadedSQLiteStore

    sqlite = await anyio.to_thread.run_sync(lambda: SQLiteStateStore.open(settings.state_dir, on_problem=on_problem))
    return ThreadedSQLiteStore(sqlite), SoleLeader()
