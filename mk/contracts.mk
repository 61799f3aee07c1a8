# EVM contracts: compile contracts/*.sol (and the test-only contracts/test/*.sol) with the solc pinned in
# package.json into contracts/build/<Name>.json. The artifacts are generated, not committed (build/ is ignored);
# the build is reproducible: the same sources and solc give identical bytes.
# Included by the top-level Makefile; also usable alone: `make -f mk/contracts.mk contracts`.

CONTRACTS_STAMP := contracts/build/.built
CONTRACT_SOURCES := $(wildcard contracts/*.sol contracts/test/*.sol)

.PHONY: contracts contracts-clean

## contracts: build the contract artifacts (needs node and `npm ci`, which `make setup` runs)
contracts: $(CONTRACTS_STAMP)

# $(NPM_STAMP) is the top-level Makefile's "npm ci done" marker (empty when this file is used alone).
$(CONTRACTS_STAMP): $(CONTRACT_SOURCES) contracts/build.js package.json package-lock.json $(NPM_STAMP)
	@test -d node_modules/solc || { echo "node_modules/solc missing: run 'npm ci' (make setup)" >&2; exit 1; }
	node contracts/build.js contracts/build
	touch $@

contracts-clean:
	rm -rf contracts/build
