"""Times slo-generator's own ``compute()`` for a set of SLOs; run with slo-generator's venv Python.

Started by :mod:`bench.slo_generator_compare` as
``<venv>/bin/python bench/_slo_generator_runner.py --slo-dir DIR --config FILE --at T``. It imports
nothing from this repository (only the standard library and slo-generator), loads the configs with
slo-generator's own loader, prints one ``{"event": "ready", ...}`` JSON line, and then, for every
``cycle`` line on stdin, runs ``compute(slo, config, timestamp=T, do_export=False)`` for every SLO,
one after another as ``slo-generator compute`` does, and prints one ``{"event": "cycle", ...}`` line:
the wall and CPU seconds of that loop, then every SLO's report per error budget policy step.

slo-generator rounds the SLI it reports to 6 decimals and the burn rate to 1. To compare exactly,
the backend methods are wrapped (outside the timed code's logic: a dict store per call) so the
values they hand to the report, ``(good, bad)`` or the SLI itself, are printed as well.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

BACKEND_METHODS = ("good_bad_ratio", "distribution_cut", "query_sli")


def _emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def _record_backend_values(backend_class: Any, store: dict[tuple[str, int], Any]) -> None:
    """Wrap the backend methods so each call's return value lands in ``store[(slo, window)]``."""
    for name in BACKEND_METHODS:
        original: Callable[..., Any] = getattr(backend_class, name)

        @functools.wraps(original)
        def wrapper(
            self: Any, timestamp: Any, window: Any, slo_config: Any, _original: Callable[..., Any] = original
        ) -> Any:
            value = _original(self, timestamp, window, slo_config)
            store[(slo_config["metadata"]["name"], int(window))] = value
            return value

        setattr(backend_class, name, wrapper)


def _raw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [float(v) for v in value]
    if isinstance(value, int | float):
        return float(value)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slo-dir", required=True, help="folder of ServiceLevelObjective YAML files")
    parser.add_argument("--config", required=True, help="slo-generator shared config (backends, policies)")
    parser.add_argument("--at", type=float, required=True, help="timestamp handed to compute()")
    args = parser.parse_args()

    started = time.perf_counter()
    from slo_generator import utils
    from slo_generator.backends.prometheus import PrometheusBackend
    from slo_generator.compute import compute

    import_seconds = time.perf_counter() - started
    # The CLI logs every step at INFO; WARNING keeps log formatting out of the measured cycle.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    backend_values: dict[tuple[str, int], Any] = {}
    _record_backend_values(PrometheusBackend, backend_values)
    config = utils.load_config(args.config)
    slo_configs = utils.load_configs(args.slo_dir, kind="ServiceLevelObjective")
    _emit({"event": "ready", "import_seconds": import_seconds, "slos": len(slo_configs)})

    for line in sys.stdin:
        if line.strip() != "cycle":
            continue
        backend_values.clear()
        wall_started, cpu_started = time.perf_counter(), time.process_time()
        reports = {
            slo["metadata"]["name"]: compute(slo, config, timestamp=args.at, do_export=False) for slo in slo_configs
        }
        wall, cpu = time.perf_counter() - wall_started, time.process_time() - cpu_started

        results: dict[str, dict[str, Any]] = {}
        for name, steps in reports.items():
            per_step: dict[str, Any] = {}
            for report in steps:
                step = report["error_budget_policy_step_name"]
                entry: dict[str, Any] = {"valid": bool(report.get("valid")), "errors": report.get("errors", [])}
                if entry["valid"]:
                    entry.update(
                        window=report["window"],
                        sli=report["sli_measurement"],
                        burn_rate=report["error_budget_burn_rate"],
                        goal=report["goal"],
                        raw=_raw(backend_values.get((name, int(report["window"])))),
                    )
                per_step[step] = entry
            results[name] = per_step
        _emit({"event": "cycle", "wall_seconds": wall, "cpu_seconds": cpu, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
