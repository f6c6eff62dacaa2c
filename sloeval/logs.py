"""structlog set-up: JSON events (or console lines) on stderr, sloeval's and the libraries' alike.

sloeval's events and the standard library records of the libraries it runs (asyncio,
python-telegram-bot, httpx, aiosmtplib) leave through one ``logging`` handler and one structlog
renderer (``ProcessorFormatter``), so every line on stderr is one JSON object (or one console
line), a traceback included. Python warnings are logged the same way.
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.stdlib import ProcessorFormatter

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_HANDLER_NAME = "sloeval-stderr"


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    numeric = _LEVELS[level]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamped: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *stamped,
            structlog.processors.format_exc_info,
            ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        ProcessorFormatter(
            foreign_pre_chain=[*stamped, structlog.stdlib.add_logger_name, structlog.processors.format_exc_info],
            processors=[ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(previous)
    root.addHandler(handler)
    # Libraries: warnings and errors only. sloeval's own events are filtered by structlog above.
    root.setLevel(max(logging.WARNING, numeric))
    logging.getLogger("sloeval").setLevel(logging.DEBUG)
    # httpx logs every request URL at INFO; URLs can carry credentials, so keep it quiet.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)
