"""Async client for the Prometheus HTTP query API (Prometheus, VictoriaMetrics, Thanos, Mimir)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from sloeval.config.settings import Settings
from sloeval.prometheus.results import PrometheusQueryError, QueryResult, parse_query_response

log = structlog.get_logger("sloeval.prometheus")

#: HTTP statuses where another attempt can succeed.
_RETRYABLE_STATUS = frozenset({502, 503, 504})


def _describe_body(response: httpx.Response) -> str:
    text = " ".join(response.text[:200].split())
    return text or "empty body"


class PrometheusClient:
    """Instant queries with per-query timeout and retries where they can help."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        timeout: float,
        attempts: int = 3,
        backoff_initial: float = 0.2,
        backoff_max: float = 2.0,
        on_attempt: Callable[[str], None] | None = None,
        on_stats: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        """``on_stats``, when given, asks for ``stats=all`` and receives each answer's ``stats``."""
        self._http = http
        self._on_stats = on_stats
        self._endpoint = base_url.rstrip("/") + "/api/v1/query"
        self._timeout = timeout
        self._attempts = attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._on_attempt = on_attempt or (lambda outcome: None)

    async def query(self, promql: str, at: float) -> QueryResult:
        """Evaluate ``promql`` at unix time ``at``."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(
                initial=self._backoff_initial, max=self._backoff_max, jitter=self._backoff_initial
            ),
            retry=retry_if_exception(lambda exc: isinstance(exc, PrometheusQueryError) and exc.retryable),
            sleep=anyio.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._query_once(promql, at)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _query_once(self, promql: str, at: float) -> QueryResult:
        # Prometheus durations take no fractions ("0.5s" is bad_data): send whole milliseconds.
        form = {"query": promql, "time": f"{at:.3f}", "timeout": f"{max(1, round(self._timeout * 1000))}ms"}
        if self._on_stats is not None:
            form["stats"] = "all"
        try:
            with anyio.fail_after(self._timeout + 1.0):
                response = await self._http.post(self._endpoint, data=form, timeout=self._timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._on_attempt("connect_error")
            raise PrometheusQueryError(
                f"cannot connect to Prometheus: {type(exc).__name__}", query=promql, retryable=True
            ) from None
        except anyio.get_cancelled_exc_class():
            self._on_attempt("timeout")  # cut off by the cycle deadline (or shutdown): still a timeout
            raise
        except (httpx.TimeoutException, TimeoutError):
            self._on_attempt("timeout")
            raise PrometheusQueryError(
                f"no answer within the query timeout of {self._timeout:g}s", query=promql, error_type="timeout"
            ) from None
        except httpx.HTTPError as exc:
            self._on_attempt("error")
            raise PrometheusQueryError(f"HTTP error: {type(exc).__name__}", query=promql, retryable=True) from None
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._on_attempt("error")
            raise PrometheusQueryError(
                f"HTTP {response.status_code} with a non-JSON body: {_describe_body(response)}",
                query=promql,
                status_code=response.status_code,
                retryable=response.status_code in _RETRYABLE_STATUS,
            ) from None
        try:
            result = parse_query_response(payload, promql)
        except PrometheusQueryError as exc:
            self._on_attempt("error")
            raise exc.answered_with(response.status_code, retryable=response.status_code in _RETRYABLE_STATUS) from None
        self._on_attempt("success")
        if self._on_stats is not None:
            stats = payload.get("data", {}).get("stats")
            if isinstance(stats, dict):
                self._on_stats(stats)
        for warning in result.warnings:
            log.warning("prometheus_warning", warning=warning, query=promql)
        return result


def make_http_client(
    *,
    username: str | None = None,
    password: str | None = None,
    bearer_token: str | None = None,
    ca_file: str | None = None,
    tls_verify: bool = True,
    max_connections: int = 16,
) -> httpx.AsyncClient:
    """An httpx client with the configured authentication and TLS settings."""
    verify: ssl.SSLContext | bool = tls_verify
    if tls_verify and ca_file:
        verify = ssl.create_default_context(cafile=ca_file)
    auth = httpx.BasicAuth(username, password or "") if username else None
    headers = {"User-Agent": "sloeval"}
    if bearer_token:
        headers["Authorization"] = f"Bearer {bearer_token}"
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(auth=auth, headers=headers, verify=verify, limits=limits)


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
