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
    """

    def __init__(self, config: SLOConfig, *, min_window: float, channels: Collection[str] | None = None) -> None:
        self._path = config.path
        self._min_window = min_window
        self._channels = channels
        self._stat = _fingerprint(self._path)
        self._digest = _digest(self._path)
        self.reload_requested = False

    def poll(self) -> SLOConfig | None:
        """A new valid config if the file changed (or a reload was requested), else None."""
        forced, self.reload_requested = self.reload_requested, False
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
