"""Reloading the SLO file: on SIGHUP and when its content changes (checked every cycle)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from pathlib import Path

import structlog

from sloeval.config.slo_file import ConfigError, SLOConfig, load_slo_file

log = structlog.get_logger("sloeval.config")


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


class ConfigWatcher:
    """Knows the file the running config came from; hands out a new config when it changed.

    An invalid new file is rejected with its reason logged once, and the running config stays.
    A reload request (SIGHUP) is made and taken in the event loop's thread (``request_reload``,
    ``take_reload_request``) and handed to :meth:`poll` as ``forced``: ``poll`` may run in a worker
    thread, and shares no flag with the signal handler, so no request is ever lost between them.
    """

    def __init__(self, config: SLOConfig, *, min_window: float, channels: Collection[str] | None = None) -> None:
        self._path = config.path
        self._min_window = min_window
        self._channels = channels
        self._stat = _fingerprint(self._path)
        self._digest = _digest(self._path)
        self._reload_requested = False  # only touched in the event loop's thread

    def request_reload(self) -> None:
        """Ask for a forced reload (SIGHUP); call in the event loop, like :meth:`take_reload_request`."""
        self._reload_requested = True

    def take_reload_request(self) -> bool:
        """Whether a reload was asked for since the last call; call in the event loop, then pass it to poll."""
        requested, self._reload_requested = self._reload_requested, False
        return requested

    def poll(self, forced: bool = False) -> SLOConfig | None:
        """A new valid config if the file changed (or ``forced``: re-read even an unchanged file), else None."""
        stat = _fingerprint(self._path)
        if not forced and stat == self._stat:
            return None
        self._stat = stat
        digest = _digest(self._path)
        if not forced and digest == self._digest:
            return None
        self._digest = digest
        try:
            config = load_slo_file(self._path, min_window=self._min_window, channels=self._channels)
        except ConfigError as exc:
            log.error("config_reload_rejected", error=str(exc), hint="the previous SLO file stays in use")
            return None
        log.info("config_reloaded", slo_file=str(self._path), slos=len(config.slos), forced=forced)
        return config
