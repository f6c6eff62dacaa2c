"""What the Prometheus query API answers, read into samples or a query error (pure: no I/O)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sloeval.errors import SloevalError

#: Prometheus ``errorType`` values where another attempt can succeed.
RETRYABLE_ERROR_TYPES = frozenset({"timeout", "unavailable"})


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class QueryResult:
    samples: tuple[Sample, ...]
    warnings: tuple[str, ...] = field(default=())


class PrometheusQueryError(SloevalError):
    """A query failed; ``retryable`` says whether asking again can help."""

    query: str
    error_type: str | None
    status_code: int | None
    retryable: bool

    def __init__(
        self,
        message: str,
        *,
        query: str,
        error_type: str | None = None,
        status_code: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, query=query, error_type=error_type, status_code=status_code, retryable=retryable)

    def answered_with(self, status_code: int, *, retryable: bool) -> PrometheusQueryError:
        """The same error, known to have come with an HTTP status (a new error: errors do not change)."""
        return PrometheusQueryError(
            self.message,
            query=self.query,
            error_type=self.error_type,
            status_code=status_code,
            retryable=self.retryable or retryable,
        )


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, in any case, replaced by ``<secret>``: a gateway may echo the
    request's ``Authorization`` header in its error page, and error texts reach logs and stdout."""
    secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
    if secrets and "&" in text:  # an HTML page may write the echoed header with entities (&#43; for +)
        text = html.unescape(text)
    for secret in secrets:
        text = re.sub(re.escape(secret), "<secret>", text, flags=re.IGNORECASE)
    return text


def parse_value(text: object) -> float:
    """Prometheus sends numbers as strings, including ``NaN``, ``+Inf`` and ``-Inf``."""
    if not isinstance(text, str):
        raise ValueError(f"sample value must be a string, got {type(text).__name__}")
    return float(text)


def parse_query_response(payload: Any, query: str) -> QueryResult:
    """Turn a decoded ``/api/v1/query`` body into samples, or raise PrometheusQueryError."""
    if not isinstance(payload, dict):
        raise PrometheusQueryError("response is not a JSON object", query=query)
    warnings = tuple(str(w) for w in payload.get("warnings") or () if isinstance(w, str))
    if payload.get("status") != "success":
        error_type = payload.get("errorType")
        error_type = error_type if isinstance(error_type, str) else None
        message = payload.get("error")
        raise PrometheusQueryError(
            f"{error_type or 'error'}: {message if isinstance(message, str) else 'query failed'}",
            query=query,
            error_type=error_type,
            retryable=error_type in RETRYABLE_ERROR_TYPES,
        )
    data = payload.get("data")
    if not isinstance(data, dict):
        raise PrometheusQueryError("response has no 'data' object", query=query)
    result_type = data.get("resultType")
    result = data.get("result")
    try:
        if result_type == "vector" and isinstance(result, list):
            samples = []
            for item in result:
                metric = item.get("metric", {}) if isinstance(item, dict) else None
                value = item.get("value") if isinstance(item, dict) else None
                if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
                    raise ValueError("malformed vector element")
                labels = {str(k): str(v) for k, v in metric.items()}
                samples.append(Sample(labels, parse_value(value[1])))
            return QueryResult(tuple(samples), warnings)
        if result_type == "scalar" and isinstance(result, list) and len(result) == 2:
            return QueryResult((Sample({}, parse_value(result[1])),), warnings)
    except (ValueError, TypeError, AttributeError) as exc:
        raise PrometheusQueryError(f"malformed query result: {exc}", query=query) from None
    raise PrometheusQueryError(f"unexpected result type {result_type!r} (expected a vector)", query=query)
