"""Async client for the Prometheus HTTP query API (Prometheus, VictoriaMetrics, Thanos, Mimir)."""

from __future__ import annotations

import base64
import json
import math
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

import anyio
import httpx
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from sloeval.config.settings import Settings
from sloeval.prometheus.results import PrometheusQueryError, QueryResult, parse_query_response, scrub

log = structlog.get_logger("sloeval.prometheus")

#: HTTP statuses where another attempt can succeed.
_RETRYABLE_STATUS = frozenset({502, 503, 504})


#: How far before the caller's deadline a cancellation still counts as that deadline's doing.
_CLOCK_SLACK = 0.001


def _describe_body(response: httpx.Response, clean: Callable[[str], str]) -> str:
    # Scrubbed whole, then cut: a cut could leave a part of a secret that no longer matches it.
    text = " ".join(clean(response.text).split())[:200]
    return text or "empty body"


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """The Prometheus credentials as they may come back in an error text: the bearer token, the
    password (also from the URL's user:password part), ``user:password`` in base64 as HTTP basic
    auth sends it, and the URL-encoded forms."""
    pairs: list[tuple[str, str]] = []
    secrets: list[str] = []
    if settings.prometheus_bearer_token is not None:
        secrets.append(settings.prometheus_bearer_token.get_secret_value())
    if settings.prometheus_password is not None:
        pairs.append((settings.prometheus_username or "", settings.prometheus_password.get_secret_value()))
    url = urlsplit(settings.prometheus_url)
    if url.password:
        pairs.append((unquote(url.username or ""), unquote(url.password)))
    for user, password in pairs:
        secrets += [password, base64.b64encode(f"{user}:{password}".encode()).decode()]
    forms = {form for secret in secrets if secret for form in (secret, quote(secret, safe=""), quote_plus(secret))}
    return tuple(sorted(forms))


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
        secrets: Sequence[str] = (),
    ) -> None:
        """``on_stats``, when given, asks for ``stats=all`` and receives each answer's ``stats``;
        ``secrets`` (see :func:`secrets_of`) are scrubbed from every error text and warning."""
        self._http = http
        self._secrets = tuple(secrets)
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

    def _clean(self, text: str) -> str:
        return scrub(text, self._secrets)

    async def _query_once(self, promql: str, at: float) -> QueryResult:
        # Prometheus durations take no fractions ("0.5s" is bad_data): send whole milliseconds.
        form = {"query": promql, "time": f"{at:.3f}", "timeout": f"{max(1, round(self._timeout * 1000))}ms"}
        if self._on_stats is not None:
            form["stats"] = "all"
        deadline = anyio.current_effective_deadline()  # the caller's: the cycle deadline, if any
        try:
            with anyio.fail_after(self._timeout + 1.0):
                response = await self._http.post(self._endpoint, data=form, timeout=self._timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._on_attempt("connect_error")
            raise PrometheusQueryError(
                f"cannot connect to Prometheus: {type(exc).__name__}", query=promql, retryable=True
            ) from None
        except anyio.get_cancelled_exc_class():
            # Cut off by the caller's deadline (the cycle's): a timeout. Cancelled otherwise (the
            # daemon shutting down), or before it was sent: no query outcome to count.
            if deadline != -math.inf and anyio.current_time() >= deadline - _CLOCK_SLACK:
                self._on_attempt("timeout")
            raise
        except (httpx.TimeoutException, TimeoutError):
            self._on_attempt("timeout")
            raise PrometheusQueryError(
                f"no answer within the query timeout of {self._timeout:g}s", query=promql, error_type="timeout"
            ) from None
        except httpx.HTTPError as exc:
            self._on_attempt("error")
            raise PrometheusQueryError(f"HTTP error: {type(exc).__name__}", query=promql, retryable=True) from None
        except (httpx.InvalidURL, UnicodeError) as exc:  # a URL settings let through: one line, no retry
            self._on_attempt("error")
            raise PrometheusQueryError(
                f"the Prometheus URL cannot be used: {type(exc).__name__}", query=promql
            ) from None
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._on_attempt("error")
            raise PrometheusQueryError(
                f"HTTP {response.status_code} with a non-JSON body: {_describe_body(response, self._clean)}",
                query=promql,
                status_code=response.status_code,
                retryable=response.status_code in _RETRYABLE_STATUS,
            ) from None
        try:
            result = parse_query_response(payload, promql)
        except PrometheusQueryError as exc:
            self._on_attempt("error")
            raise PrometheusQueryError(
                self._clean(exc.message),
                query=exc.query,
                error_type=self._clean(exc.error_type) if exc.error_type is not None else None,
                status_code=response.status_code,
                retryable=exc.retryable or response.status_code in _RETRYABLE_STATUS,
            ) from None
        self._on_attempt("success")
        if self._on_stats is not None:
            stats = payload.get("data", {}).get("stats")
            if isinstance(stats, dict):
                self._on_stats(stats)
        for warning in result.warnings:
            log.warning("prometheus_warning", warning=self._clean(warning), query=promql)
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
        secrets=secrets_of(settings),
    )
