"""Build the Prometheus client from settings (shared by the daemon and the CLI)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from sloeval.prometheus_api import PrometheusClient, make_http_client
from sloeval.settings import Settings


def http_client_for(settings: Settings) -> httpx.AsyncClient:
    return make_http_client(
        username=settings.prometheus_username,
        password=settings.prometheus_password.get_secret_value() if settings.prometheus_password else None,
        bearer_token=settings.prometheus_bearer_token.get_secret_value() if settings.prometheus_bearer_token else None,
        ca_file=str(settings.prometheus_ca_file) if settings.prometheus_ca_file else None,
        tls_verify=settings.prometheus_tls_verify,
        max_connections=settings.query_concurrency,
    )


def prometheus_client_for(
    settings: Settings, http: httpx.AsyncClient, on_attempt: Callable[[str], None] | None = None
) -> PrometheusClient:
    return PrometheusClient(
        http,
        settings.prometheus_url,
        timeout=settings.query_timeout,
        attempts=settings.query_attempts,
        on_attempt=on_attempt,
    )
