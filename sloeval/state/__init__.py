"""Durable alert state, outbox and delivery log: backends of ``sloeval.alerting.store.StateStore``.

May import ``sloeval.config`` and ``sloeval.alerting`` (for the types it stores).
"""
