# btcl2 — one entry point for setup, tests, the demo and the benchmarks.
# `make demo` and `make test` work on a fresh clone: they run `make setup` when .venv is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed

.PHONY: setup chromium test lint typecheck unit functional demo bench soak clean help

help:
	@echo "make setup      create .venv, install btcl2 with the dev extra, install anvil and solc (npm ci)"
	@echo "make test       ruff, mypy --strict, unit and functional tests (embedded regtest node)"
	@echo "make test-core  the functional suites against a real bitcoind built from source"
	@echo "make demo       start a devnet (Bitcoin, rollup, EVM) and run the narrated deposit/transfer/withdraw/replay/audit scenario"
	@echo "make bench      measured figures (blocks/s, mempool acceptances/s)"
	@echo "make soak       seeded crash/reorg/outage scenario with the audit after every step (SOAK_SEED, SOAK_STEPS)"

setup: $(STAMP) $(NPM_STAMP) contracts chromium

chromium:
	@sh scripts/install-chromium.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

lint: setup
	$(VENV)/bin/ruff check btcl2 tests
	$(VENV)/bin/ruff format --check btcl2

typecheck: setup
	$(VENV)/bin/mypy --strict btcl2

unit: setup
	$(PY) -m pytest tests/unit tests/vectors -q

functional: setup
	$(PY) -m pytest tests/functional -q

test: lint typecheck
	$(PY) -m pytest tests -q

demo: setup
	$(PY) -m btcl2.demo

bench: setup
	$(PY) -m btcl2.bench

SOAK_SEED ?= 1
SOAK_STEPS ?= 60

soak: setup
	$(PY) -m btcl2.soak --seed $(SOAK_SEED) --steps $(SOAK_STEPS) --json bench/soak.json

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache

include mk/core.mk
include mk/contracts.mk
