"""What sloeval serves: the ``/metrics`` exporter and the HTTP endpoints.

May import ``sloeval.config``, ``sloeval.slo`` and ``sloeval.alerting``.
"""
