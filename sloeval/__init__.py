"""sloeval: an async SLO evaluation daemon for Prometheus-compatible backends."""

__version__ = "0.1.0"
