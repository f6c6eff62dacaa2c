"""Synthetic series and Prometheus TSDB backfill through ``promtool``.

``promtool tsdb create-blocks-from openmetrics`` re-reads its whole input once
for every 2-hour block it produces, so a month of data in one file takes minutes.
:func:`write_prometheus_blocks` therefore cuts the samples into time-aligned
chunk files and converts them with several promtool processes at once.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

PROMTOOL = "/usr/bin/promtool"
BLOCK_SECONDS = 7200
"""Length of the blocks promtool writes; chunk files must align to it."""
DEFAULT_CHUNK_SECONDS = 43200
"""Half-day chunk files: measured fastest on a 2-core box for both 7 and 31 days of data
(one day per file is as fast for a month but leaves cores idle on short ranges)."""

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class Series:
    """One time series: metric name, labels and ``(unix seconds, value)`` samples in time order."""

    name: str
    labels: Mapping[str, str]
    samples: Sequence[tuple[float, float]]

    def __post_init__(self) -> None:
        if not _METRIC_NAME.fullmatch(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        for label in self.labels:
            if not _LABEL_NAME.fullmatch(label) or label == "__name__":
                raise ValueError(f"invalid label name {label!r} on {self.name}")

    @property
    def selector(self) -> str:
        """``name{label="value",...}`` in exposition syntax."""
        return self.name + format_labels(self.labels)


def escape_label_value(value: str) -> str:
    """Escape a label value for the text formats: backslash, double quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_labels(labels: Mapping[str, str]) -> str:
    """``{a="1",b="2"}``, or the empty string when there are no labels."""
    if not labels:
        return ""
    body = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels.items())
    return "{" + body + "}"


def format_number(value: float) -> str:
    """A float as OpenMetrics / Prometheus text writes it (``+Inf``, ``NaN``, ints without ``.0``)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def to_openmetrics_lines(
    series: Iterable[Series], *, start: float | None = None, end: float | None = None
) -> Iterator[str]:
    """Sample lines (no trailing newline), series by series, timestamps in seconds.

    Only samples with ``start <= t < end`` are emitted when bounds are given.
    No ``# TYPE`` lines and no ``# EOF``; see :func:`write_openmetrics_file`.
    """
    for one in series:
        prefix = one.selector + " "
        for t, v in _window(one.samples, start, end):
            yield f"{prefix}{format_number(v)} {format_number(t)}"


def write_openmetrics_file(
    series: Iterable[Series], path: Path, *, start: float | None = None, end: float | None = None
) -> int:
    """Write an OpenMetrics file promtool can backfill from; returns the number of samples."""
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for line in to_openmetrics_lines(series, start=start, end=end):
            out.write(line)
            out.write("\n")
            count += 1
        out.write("# EOF\n")
    return count


def write_prometheus_blocks(
    series: Sequence[Series],
    out_dir: Path,
    *,
    chunk_seconds: int = DEFAULT_CHUNK_SECONDS,
    promtool: str = PROMTOOL,
    workers: int | None = None,
) -> None:
    """Turn ``series`` into TSDB blocks in ``out_dir`` (Prometheus' ``--storage.tsdb.path``).

    Samples are cut into files covering ``[k*chunk_seconds, (k+1)*chunk_seconds)``
    and each file is converted by its own ``promtool`` run, ``workers`` at a time
    (default: one per CPU). Files are written while earlier ones convert.
    Raises ``RuntimeError`` with promtool's stderr if a conversion fails.
    """
    if chunk_seconds <= 0 or chunk_seconds % BLOCK_SECONDS:
        raise ValueError(f"chunk_seconds must be a positive multiple of {BLOCK_SECONDS}, got {chunk_seconds}")
    out_dir.mkdir(parents=True, exist_ok=True)
    times = [[t for t, _ in one.samples] for one in series]
    for one, ts in zip(series, times, strict=True):
        if any(later <= earlier for earlier, later in pairwise(ts)):
            raise ValueError(f"samples of {one.selector} are not in strictly ascending time order")
    bounds = [(ts[0], ts[-1]) for ts in times if ts]
    if not bounds:
        return
    first = math.floor(min(lo for lo, _ in bounds) / chunk_seconds)
    last = math.floor(max(hi for _, hi in bounds) / chunk_seconds)

    def chunks() -> Iterator[tuple[int, list[str]]]:
        for k in range(first, last + 1):
            yield k, _chunk_lines(series, times, k * chunk_seconds, (k + 1) * chunk_seconds)

    write_blocks_from_chunks(chunks(), out_dir, promtool=promtool, workers=workers)


def write_blocks_from_chunks(
    chunks: Iterable[tuple[int, Iterable[str]]],
    out_dir: Path,
    *,
    promtool: str = PROMTOOL,
    workers: int | None = None,
) -> None:
    """Backfill ``(chunk number, OpenMetrics sample lines)`` pairs, chunk by chunk as they come.

    Each chunk must hold samples of one time-aligned range only (a multiple of the 2-hour
    block), every series' samples together and in time order. Generators that stream chunks
    keep memory flat however long the history is.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="sloeval-backfill-") as tmp, ThreadPoolExecutor(workers) as pool:
        pending: list[Future[None]] = []
        try:
            for k, lines in chunks:
                path = Path(tmp) / f"chunk-{k}.om"
                if _write_chunk_file(lines, path):
                    pending.append(pool.submit(_run_promtool, promtool, path, out_dir))
                # Do not run far ahead of promtool: bounds disk use and keeps errors prompt.
                while sum(not f.done() for f in pending) > 2 * workers:
                    time.sleep(0.01)
                _raise_first_error(pending)
            for future in pending:
                future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _window(
    samples: Sequence[tuple[float, float]], start: float | None, end: float | None
) -> Sequence[tuple[float, float]]:
    if start is None and end is None:
        return samples
    times = [t for t, _ in samples]
    lo = 0 if start is None else bisect_left(times, start)
    hi = len(samples) if end is None else bisect_left(times, end)
    return samples[lo:hi]


def _chunk_lines(series: Sequence[Series], times: Sequence[Sequence[float]], start: float, end: float) -> list[str]:
    lines: list[str] = []
    for one, ts in zip(series, times, strict=True):
        lo, hi = bisect_left(ts, start), bisect_left(ts, end)
        if lo == hi:
            continue
        prefix = one.selector + " "
        lines.extend(f"{prefix}{format_number(v)} {format_number(t)}\n" for t, v in one.samples[lo:hi])
    return lines


def _write_chunk_file(lines: Iterable[str], path: Path) -> bool:
    written = False
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for line in lines:
            out.write(line)
            written = True
        out.write("# EOF\n")
    if not written:
        path.unlink()
    return written


def _run_promtool(promtool: str, path: Path, out_dir: Path) -> None:
    try:
        proc = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(path), str(out_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise RuntimeError(f"promtool not found at {promtool}") from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"promtool failed (exit {proc.returncode}) on {path.name}:\n{proc.stderr.strip() or proc.stdout.strip()}"
        )
    path.unlink(missing_ok=True)


def _raise_first_error(futures: Sequence[Future[None]]) -> None:
    for future in futures:
        if future.done() and not future.cancelled():
            error = future.exception()
            if error is not None:
                raise error
