"""Deployment safety and admin powers of the EVM contracts, against a real anvil: the regtest-mode light client
stays off public chains, and every admin change waits out the Bridge's timelock in public."""

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import test_contracts
from test_contracts import (
    GUARDIAN,
    OWNER,
    PARAMS,
    _deploy,
)

from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.deploy import REGTEST_GENESIS, BridgeConfig, InsecureDeployment, deploy_bridge_stack
from btcl2.bridge.evm import EvmClient

pytestmark = pytest.mark.functional

# The module's fixtures, shared with test_contracts.
anvil, evm = test_contracts.anvil, test_contracts.evm


@pytest.fixture(scope="module")
def mainnet_like() -> Iterator[Anvil]:
    """An EVM that calls itself chain 1: what a public chain looks like to `btcl2 evm deploy`."""
    with Anvil(hardfork="prague", extra_args=("--chain-id", "1")) as a:
        yield a


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "btcl2", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def test_regtest_light_client_refused_on_a_public_chain(mainnet_like: Anvil) -> None:
    client = EvmClient(mainnet_like.url)
    assert client.chain_id() == 1
    config = BridgeConfig.for_params(PARAMS, REGTEST_GENESIS, GUARDIAN.address, GUARDIAN.address)
    with pytest.raises(InsecureDeployment):
        deploy_bridge_stack(client, OWNER, config)
    refused = _cli("evm", "deploy", "--evm-rpc", mainnet_like.url, "--key", ANVIL_DEV_KEYS[0])
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "regtest" in refused.stderr and "chain id 1" in refused.stderr
    assert client.nonce(OWNER.address) == 0  # nothing was deployed
    forced = _cli(
        "evm", "deploy", "--evm-rpc", mainnet_like.url, "--key", ANVIL_DEV_KEYS[0], "--allow-insecure-regtest"
    )
    assert forced.returncode == 0, forced.stderr
    assert client.nonce(OWNER.address) > 0


def test_regtest_light_client_allowed_on_a_local_chain(evm: EvmClient) -> None:
    assert evm.chain_id() == 31337
    dep = _deploy(evm)
    assert not evm.call(dep.light_client, "retarget")
