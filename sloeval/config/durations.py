"""Prometheus-style durations (``30d``, ``1h30m``) as whole seconds."""

from __future__ import annotations

import re
from functools import cache

_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([wdhms])")
_WHOLE = re.compile(r"(?:\d+[wdhms])+")


def parse_duration(text: str) -> int:
    """Parse ``"30d"``, ``"1h30m"`` or ``"90s"`` into seconds.

    Units must appear from largest to smallest, each at most once, as in PromQL.
    Raises ``ValueError`` with a message fit for a config error.
    """
    if not isinstance(text, str) or not _WHOLE.fullmatch(text):
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h30m, 7d, 4w")
    seconds = 0
    order = list(_UNIT_SECONDS)
    last_index = -1
    for amount, unit in _PART.findall(text):
        index = order.index(unit)
        if index <= last_index:
            raise ValueError(f"invalid duration {text!r}: units must go from largest to smallest")
        last_index = index
        seconds += int(amount) * _UNIT_SECONDS[unit]
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be longer than 0s")
    return seconds


@cache
def format_duration(seconds: int) -> str:
    """Render seconds in the shortest PromQL form: 2592000 -> ``"30d"``, 5400 -> ``"1h30m"``."""
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {seconds}")
    parts = []
    remaining = seconds
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if remaining >= size:
            count, remaining = divmod(remaining, size)
            parts.append(f"{count}{unit}")
    return "".join(parts)


def duration_from_config(value: object) -> int:
    """A duration from a config file: it must be a string (``30`` alone is ambiguous)."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError("must be a duration string such as 5m, 1h or 30d")
    return parse_duration(value)
