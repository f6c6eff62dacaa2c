"""SLO numbers: SLI, burn-rate and budget math, the snapshot of a cycle, the evaluator and its renderings.

May import ``sloeval.config``, ``sloeval.promql`` and ``sloeval.prometheus.results``; never an I/O library
(the evaluator asks Prometheus through a ``QueryClient`` it is given).
"""
