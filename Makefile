# rfmcube-cdc: `make test` runs every check; `make demo` runs the main job.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck tools pytest docs demo bench kafka-start kafka-stop clean

# Three distributions, all editable: the service, the API emulator, and the
# test support (testkit/), the last two kept out of the service's wheel and image.
$(STAMP): pyproject.toml emulator/pyproject.toml testkit/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' -e ./emulator -e ./testkit
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check consumer schemas emulator testkit tests bench
	$(VENV)/bin/ruff format --check consumer schemas emulator testkit tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The Go tools the deploy tests run (tests/system/deploy), built once into .cache/
# from the Go module proxy: kustomize in about a minute, promtool in about 8 on two
# cores. Before pytest, so that a fresh machine builds them once, in the open, and
# not inside a test's timeout; a later run finds them and goes on at once.
tools:
	scripts/kustomize version >/dev/null
	scripts/promtool --version >/dev/null

# Starts the broker if none is running, runs pytest on PYTEST_WORKERS xdist workers
# (most tests wait on timeouts, not on a CPU), and stops the broker again only if this
# run started it. The other services of scripts/ start once per run, when a test first
# needs one, and stop at its end if it started them (tests/conftest.py); a test marked
# serial runs with no other beside it. PYTEST_WORKERS=0: one process, no xdist.
PYTEST_WORKERS ?= 2
pytest: $(STAMP) tools
	@started=0; \
	if [ -z "$$KAFKA_BOOTSTRAP_SERVERS" ] && ! scripts/kafka status >/dev/null 2>&1; then \
	  scripts/kafka start >/dev/null || exit 1; started=1; \
	fi; \
	export KAFKA_BOOTSTRAP_SERVERS=$${KAFKA_BOOTSTRAP_SERVERS:-$$(scripts/kafka status)}; \
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS); rc=$$?; \
	if [ $$started = 1 ]; then scripts/kafka stop; fi; \
	exit $$rc

test: lint typecheck pytest

# The configuration reference (docs/configuration.md) and README.md's sample, made
# from the settings model; a test fails when they are stale.
docs: $(STAMP)
	$(PY) -m consumer.cli.reference --write

demo: $(STAMP)
	$(PY) -m testkit.demo

# Benchmarks (see bench/README.md): about 30 minutes; they start the broker.
bench: $(STAMP)
	$(PY) -m bench.decode
	$(PY) -m bench.pipeline throughput
	$(PY) -m bench.pipeline steady
	$(PY) -m bench.outage
	$(PY) -m bench.resync
	$(PY) -m bench.firstsync

kafka-start:
	scripts/kafka start

kafka-stop:
	scripts/kafka stop

clean:
	scripts/connect stop || true
	scripts/postgres stop || true
	scripts/mariadb stop || true
	scripts/registry stop || true
	scripts/kafka stop || true
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache .hypothesis

# --- the image's lock (requirements.lock.txt, installed by the Dockerfile) ---
# Regenerates it from pyproject.toml with uv; ARGS=--upgrade moves every pin.
.PHONY: lock
lock:
	scripts/lock $(ARGS)
