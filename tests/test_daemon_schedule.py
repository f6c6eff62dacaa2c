import pytest

from sloeval.daemon import next_tick


def test_ticks_stay_on_the_grid() -> None:
    assert next_tick(100.0, 30.0, 100.4) == 130.0
    assert next_tick(130.0, 30.0, 131.9) == 160.0


def test_overrun_skips_missed_ticks_without_drift() -> None:
    # A cycle that took 75 s of a 30 s interval: the next slot is the grid point after now.
    assert next_tick(100.0, 30.0, 175.0) == 190.0


@pytest.mark.parametrize("now", [100.0, 129.999, 130.0])
def test_next_tick_is_always_in_the_future(now: float) -> None:
    tick = next_tick(100.0, 30.0, now)
    assert tick > now
    assert (tick - 100.0) % 30.0 == 0
