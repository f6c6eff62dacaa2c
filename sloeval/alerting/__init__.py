"""Alerting: rules on a snapshot, the state machine, grouping, message rendering, the engine and the outbox worker.

May import ``sloeval.config`` and ``sloeval.slo``. Only ``alerting.channels`` talks to the outside world;
the rest never imports an I/O library, and reaches storage through the ``StateStore`` protocol.
"""
