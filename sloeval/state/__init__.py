"""Durable alert state and outbox: the backends of :class:`sloeval.alerting.store.StateStore`.

May import ``sloeval.config`` and ``sloeval.alerting`` (the protocol and the types it stores); the
alert code never imports this package, so a backend is a new module here and a line in
:func:`open_state_store`, not an edit of the alert code.
"""

from __future__ import annotations

from sloeval.alerting.store import StateStore
from sloeval.config.settings import Settings


def open_state_store(settings: Settings) -> StateStore:
    """The store the settings name: SQLite in ``SLOEVAL_STATE_DIR``. Raises StateStoreError."""
    from sloeval.state.sqlite import SQLiteStateStore

    return SQLiteStateStore.open(settings.state_dir)
