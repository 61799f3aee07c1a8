# Real Bitcoin Core tier: build bitcoind from the py-bitcoinkernel sdist and run the functional suites
# against it. Included by the top-level Makefile; also usable alone: `make -f mk/core.mk bitcoind`.

VENV ?= .venv
PY ?= $(VENV)/bin/python
BTCL2_CACHE ?= $(HOME)/.cache/btcl2
CORE_VERSION_TAG ?= 0.1.0a5
BITCOIND ?= $(BTCL2_CACHE)/bitcoin-core-$(CORE_VERSION_TAG)/bin/bitcoind
FUNCTIONAL_ARGS ?= -q

.PHONY: bitcoind test-core

## bitcoind: build (once, cached) Bitcoin Core's bitcoind and bitcoin-cli
bitcoind:
	BTCL2_CACHE="$(BTCL2_CACHE)" scripts/build-bitcoind.sh

## test-core: run tests/functional against a real bitcoind instead of the embedded node
# $(STAMP) is the top-level Makefile's "venv installed" marker (empty when this file is used alone).
test-core: bitcoind $(STAMP)
	@test -x "$(PY)" || { echo "no $(PY): run 'make setup' first" >&2; exit 1; }
	BTCL2_NODE=core BTCL2_BITCOIND="$(BITCOIND)" $(PY) -m pytest tests/functional $(FUNCTIONAL_ARGS)
