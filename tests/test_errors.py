"""Every error sloeval raises on purpose is a SloevalError, and errors do not change once made."""

import pytest

from sloeval.alerting.channels import DeliveryError
from sloeval.config.openslo import OpenSLOError
from sloeval.config.selectors import SelectorError
from sloeval.config.settings import SettingsError
from sloeval.config.slo_file import ConfigError
from sloeval.errors import SloevalError
from sloeval.prometheus.results import PrometheusQueryError
from sloeval.state.sqlite import StateStoreError


@pytest.mark.parametrize(
    "error",
    [
        ConfigError('slos.yaml: slo "e": objective: too high'),
        SettingsError("SLOEVAL_HTTP_PORT: too large"),
        OpenSLOError("SLO a", "spec.budgetingMethod", "Timeslices is not supported"),
        SelectorError("expected a metric name"),
        PrometheusQueryError("bad_data: parse error", query="up", error_type="bad_data", status_code=400),
        DeliveryError("SMTP error 550", permanent=True),
        StateStoreError("state directory /x is not writable"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_error_is_a_one_line_sloeval_error(error: SloevalError) -> None:
    assert isinstance(error, SloevalError)
    assert "\n" not in str(error)
    assert str(error) == error.message
    with pytest.raises(AttributeError, match="fixed when the error is made"):
        error.message = "rewritten"  # type: ignore[misc]
    assert str(error) != "rewritten"


def test_a_prometheus_error_learns_its_status_as_a_new_error() -> None:
    original = PrometheusQueryError("unavailable: overloaded", query="up", error_type="unavailable", retryable=True)
    answered = original.answered_with(503, retryable=True)
    assert (original.status_code, answered.status_code) == (None, 503)
    assert answered.retryable
    assert (answered.error_type, answered.query) == ("unavailable", "up")
    with pytest.raises(AttributeError):
        original.status_code = 503  # type: ignore[misc]


def test_python_may_still_chain_and_annotate_errors() -> None:
    try:
        try:
            raise ValueError("inner")
        except ValueError as inner:
            raise DeliveryError("outer") from inner
    except DeliveryError as exc:
        exc.add_note("seen by a test")
        assert isinstance(exc.__cause__, ValueError)
        assert exc.__notes__ == ["seen by a test"]


def test_openslo_errors_keep_their_parts() -> None:
    error = OpenSLOError("SLO a", "spec.objectives", "missing")
    assert (error.where, error.field, error.detail) == ("SLO a", "spec.objectives", "missing")
    assert str(error) == "SLO a: spec.objectives: missing"
