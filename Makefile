# sloeval: `make demo` runs the main job on a local Prometheus, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: all venv system-deps demo test lint typecheck unit nightly bench image image-test clean

all: test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

system-deps:
	scripts/install-system-deps.sh

demo: venv
	scripts/install-system-deps.sh prometheus
	$(BIN)/python -m devtools.demo

lint: venv
	$(BIN)/ruff check sloeval devtools tests bench
	$(BIN)/ruff format --check sloeval devtools tests bench

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -m "not e2e and not image"

test: venv system-deps lint typecheck
	$(BIN)/pytest -m "not image"

# The model-based alert lifecycle test with many more random programs than make test runs.
nightly: venv
	SLOEVAL_MODEL_EXAMPLES=5000 $(BIN)/pytest -q tests/test_alert_state_machine.py

image: venv
	scripts/install-system-deps.sh buildah podman debootstrap
	scripts/build-image.sh localhost/sloeval:test

image-test: image system-deps
	$(BIN)/pytest -m image

# Every benchmark of BENCHMARKS.md, one after another (about 30 minutes; the first run also
# builds and caches 30 days of data in .bench-cache/).
bench: venv system-deps
	$(BIN)/python -m bench.cycle_cost --json .bench-cache/cycle-cost.json
	$(BIN)/python -m bench.slo_generator_compare --json .bench-cache/slo-generator-compare.json
	$(BIN)/python -m bench.detection_latency --json .bench-cache/detection-latency.json
	$(BIN)/python -m bench.metrics_load --clients 200 --seconds 10
	$(BIN)/python -m bench.replica_soak --json .bench-cache/replica-soak.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo build *.egg-info
