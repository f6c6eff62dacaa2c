import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloeval.config.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("30d", 2592000), ("1w", 604800), ("2w3d", 1468800)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "5", "5x", "1m1h", "5m5m", "-5m", " 5m", "1.5h", "0d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_duration_shortest() -> None:
    assert format_duration(2592000) == "30d"
    assert format_duration(5400) == "1h30m"
    assert format_duration(259200) == "3d"
    assert format_duration(61) == "1m1s"


@given(st.integers(min_value=1, max_value=10**9))
def test_format_parse_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
