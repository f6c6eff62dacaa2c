"""Logging: every line on stderr is one JSON event, sloeval's and the standard library's alike."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import logging, sys, warnings
    import structlog
    from sloeval.logs import configure_logging

    configure_logging(sys.argv[1], sys.argv[2])
    structlog.get_logger("sloeval.daemon").info("started", slos=2)
    structlog.get_logger("sloeval.daemon").debug("chatter")
    logging.getLogger("asyncio").warning("Executing %s took %.3f seconds", "<Task pending>", 0.25)
    logging.getLogger("httpx").info("HTTP Request: GET https://user:pw-secret@prometheus/api/v1/query")
    try:
        {}["missing"]
    except KeyError:
        logging.getLogger("telegram.ext.Application").exception("Error while getting Updates:\\nsecond line")
        structlog.get_logger("sloeval").exception("fatal_error")
    warnings.warn("PTB deprecates this", DeprecationWarning, stacklevel=1)
    """
)


def stderr_of(level: str, fmt: str) -> str:
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", SCRIPT, level, fmt],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    assert result.stdout == ""
    return result.stderr


def test_every_stderr_line_is_one_json_event() -> None:
    lines = stderr_of("info", "json").splitlines()
    events = [json.loads(line) for line in lines]  # a plain-text line fails here
    assert all(isinstance(e, dict) and {"event", "level", "timestamp"} <= e.keys() for e in events), events
    by_event = {e["event"].split(":")[0].split(" took")[0]: e for e in events}
    assert by_event["started"] == {**by_event["started"], "level": "info", "slos": 2}
    assert by_event["Executing <Task pending>"]["level"] == "warning"
    assert by_event["Executing <Task pending>"]["logger"] == "asyncio"
    updates = by_event["Error while getting Updates"]
    assert (updates["level"], updates["logger"]) == ("error", "telegram.ext.Application")
    assert updates["exception"].startswith("Traceback (most recent call last):")
    assert "KeyError: 'missing'" in updates["exception"]
    assert "KeyError: 'missing'" in by_event["fatal_error"]["exception"]
    assert any("DeprecationWarning: PTB deprecates this" in e["event"] for e in events)
    assert "chatter" not in by_event  # below the level
    assert "pw-secret" not in "\n".join(lines)  # httpx request lines stay below WARNING
    assert len(events) == 5


@pytest.mark.parametrize("level", ["debug", "error"])
def test_levels_apply_to_sloeval_and_never_open_httpx(level: str) -> None:
    events = [json.loads(line) for line in stderr_of(level, "json").splitlines()]
    names = [e["event"] for e in events]
    assert ("chatter" in names) is (level == "debug")
    assert ("started" in names) is (level == "debug")
    assert any(n.startswith("Executing <Task pending>") for n in names) is (level == "debug")
    assert "fatal_error" in names
    assert not any("pw-secret" in n for n in names)


def test_console_format_has_no_json_and_no_bare_library_lines() -> None:
    text = stderr_of("info", "console")
    assert not text.lstrip().startswith("{")
    first_lines = [line for line in text.splitlines() if line[:4].isdigit()]  # each event starts with its timestamp
    assert any("[warning  ] Executing <Task pending> took 0.250 seconds" in line for line in first_lines)
    assert not [line for line in text.splitlines() if line.startswith(("WARNING asyncio", "ERROR telegram"))]
