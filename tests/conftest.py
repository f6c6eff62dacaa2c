"""Fixtures shared by the end-to-end and the image tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from devtools.samokoder_data import samokoder_dataset
from devtools.servers import PrometheusServer
from devtools.tsdb import write_prometheus_blocks


@pytest.fixture(scope="session")
def data_end() -> int:
    """The last sample's time: a whole minute, a little before now."""
    return int(time.time()) // 60 * 60 - 60


@pytest.fixture(scope="session")
def samokoder_prometheus(tmp_path_factory: pytest.TempPathFactory, data_end: int) -> Iterator[PrometheusServer]:
    """Four days of Samokoder-shaped traffic (an outage, a latency incident, two 5xx bursts),
    the metrics `config/slos.yaml` reads, backfilled into a Prometheus on loopback."""
    data_dir = tmp_path_factory.mktemp("samokoder-prometheus-data")
    write_prometheus_blocks(samokoder_dataset(data_end, days=4), data_dir)
    with PrometheusServer(data_dir) as server:
        yield server
