"""Developer tooling for sloeval: synthetic metric data and real TSDB servers on loopback.

Used by the test-suite and by ``make demo``; not part of the installed daemon.
"""
