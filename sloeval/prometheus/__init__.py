"""The Prometheus HTTP API: answers read into samples (pure ``results``) and the httpx client (``client``).

May import ``sloeval.config``; only ``client`` does I/O.
"""
