import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloeval.slo import sli_math


def test_bad_total() -> None:
    assert sli_math.sli_from_bad(5, 1000).value == pytest.approx(0.995)


def test_missing_bad_series_means_zero_bad_events() -> None:
    assert sli_math.sli_from_bad(None, 1000).value == 1.0


def test_missing_good_series_means_zero_good_events() -> None:
    assert sli_math.sli_from_good(None, 1000).value == 0.0


@pytest.mark.parametrize("total", [None, 0.0, -1.0, math.nan, math.inf])
def test_no_traffic_has_no_sli(total: float | None) -> None:
    assert sli_math.sli_from_bad(0.0, total).value is None
    assert sli_math.sli_from_good(0.0, total).value is None


def test_good_above_total_is_clamped_and_flagged() -> None:
    result = sli_math.sli_from_good(1010, 1000)
    assert result.value == 1.0
    assert result.clamped


def test_bad_above_total_is_clamped_and_flagged() -> None:
    result = sli_math.sli_from_bad(1010, 1000)
    assert result.value == 0.0
    assert result.clamped


def test_burn_rate_and_budget() -> None:
    # 0.2 % errors against a 99.9 % objective burns the budget twice as fast as allowed.
    burn = sli_math.burn_rate(0.998, 0.999)
    assert burn == pytest.approx(2.0)
    remaining = sli_math.budget_remaining(burn)
    assert remaining == pytest.approx(-1.0)  # overspent, not clamped to 0


def test_no_data_propagates() -> None:
    assert sli_math.burn_rate(None, 0.99) is None
    assert sli_math.budget_remaining(None) is None
    assert sli_math.sli_from_error_ratio(math.nan).value is None


def test_budget_minutes_of_the_seed_slo() -> None:
    assert sli_math.budget_minutes(0.999, 30 * 86400) == pytest.approx(43.2)


@pytest.mark.parametrize("objective", [0.0, 1.0, 1.5, -0.1])
def test_burn_rate_rejects_impossible_objective(objective: float) -> None:
    with pytest.raises(ValueError, match="objective"):
        sli_math.burn_rate(0.9, objective)


@given(
    bad=st.floats(min_value=0, max_value=1e12),
    total=st.floats(min_value=1e-9, max_value=1e12),
    objective=st.floats(min_value=0.5, max_value=0.99999),
)
def test_sli_always_a_ratio_and_burn_consistent(bad: float, total: float, objective: float) -> None:
    sli = sli_math.sli_from_bad(bad, total).value
    assert sli is not None
    assert 0.0 <= sli <= 1.0
    burn = sli_math.burn_rate(sli, objective)
    assert burn is not None
    assert burn >= 0
    assert math.isfinite(burn)
