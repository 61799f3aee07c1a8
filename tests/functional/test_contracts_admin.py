"""Deployment safety and admin powers of the EVM contracts, against a real anvil: the regtest-mode light client
stays off public chains, and every admin change waits out the Bridge's timelock in public."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_contracts
from test_contracts import (
    GUARDIAN,
    OWNER,
    PARAMS,
    STRANGER,
    USER,
    _deploy,
    assert_reverts,
)

from btcl2.bridge.abi import encode_call
from btcl2.bridge.admin import cancel_admin, execute_admin, queue_admin
from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.artifacts import load_artifact
from btcl2.bridge.attest import g1_eip2537
from btcl2.bridge.deploy import REGTEST_GENESIS, BridgeConfig, InsecureDeployment, deploy_bridge_stack
from btcl2.bridge.evm import Contract, ContractRevert, EvmClient, events_of
from btcl2.secretfile import write_secret_file

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


def test_regtest_light_client_refused_on_a_public_chain(mainnet_like: Anvil, tmp_path: Path) -> None:
    client = EvmClient(mainnet_like.url)
    key = tmp_path / "deployer.key"
    write_secret_file(key, ANVIL_DEV_KEYS[0] + "\n")  # --key takes a private file, never the secret itself
    assert client.chain_id() == 1
    config = BridgeConfig.for_params(PARAMS, REGTEST_GENESIS, GUARDIAN.address, GUARDIAN.address)
    with pytest.raises(InsecureDeployment):
        deploy_bridge_stack(client, OWNER, config)
    refused = _cli("evm", "deploy", "--evm-rpc", mainnet_like.url, "--key", str(key))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "regtest" in refused.stderr and "chain id 1" in refused.stderr
    assert client.nonce(OWNER.address) == 0  # nothing was deployed
    forced = _cli(
        "evm", "deploy", "--evm-rpc", mainnet_like.url, "--key", str(key),
        "--allow-insecure-regtest", "--admin-delay", "7200", "--json",
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    deployed = json.loads(forced.stdout)
    bridge = Contract(deployed["Bridge"], load_artifact("Bridge"))
    assert client.call(bridge, "adminDelay") == deployed["admin_delay"] == 7200
    assert client.call(bridge, "attestationVerifier") == deployed["AttestationVerifier"]


def test_regtest_light_client_allowed_on_a_local_chain(evm: EvmClient) -> None:
    assert evm.chain_id() == 31337
    dep = _deploy(evm)
    assert not evm.call(dep.light_client, "retarget")


def _now(evm: EvmClient) -> int:
    latest: dict[str, Any] = evm.rpc("eth_getBlockByNumber", "latest", False)
    return int(latest["timestamp"], 16)


def _rogue_verifier(evm: EvmClient) -> str:
    """Another AttestationVerifier: what a stolen owner key would wire in (its keys are beside the point)."""
    keys = [g1_eip2537(pk) for pk in PARAMS.attestation_pubkeys]
    return evm.deploy(load_artifact("AttestationVerifier"), [PARAMS.l2_chain_id, keys, 1], STRANGER).address


def test_verifier_is_set_at_deploy_and_only_the_timelock_changes_it(evm: EvmClient) -> None:
    dep = _deploy(evm)
    assert dep.attestation_verifier is not None
    assert evm.call(dep.bridge, "attestationVerifier") == dep.attestation_verifier.address
    rogue = _rogue_verifier(evm)
    # The owner key alone changes nothing at once: every admin setter is for the timelock only.
    direct = [
        ("setAttestationVerifier", rogue),
        ("setGuardian", STRANGER.address),
        ("setPayoutConfirmer", STRANGER.address),
        ("setMintCap", 1, 1),
        ("transferOwnership", STRANGER.address),
    ]
    for fn, *args in direct:
        assert_reverts("NotTimelock", evm.transact, dep.bridge, fn, *args, sender=OWNER)
    assert evm.call(dep.bridge, "attestationVerifier") == dep.attestation_verifier.address
    receipt = queue_admin(evm, dep.bridge, OWNER, "setAttestationVerifier", rogue)
    (queued,) = events_of(dep.bridge, receipt)
    delay = evm.call(dep.bridge, "adminDelay")
    assert queued.name == "AdminActionQueued" and queued.args["eta"] >= _now(evm) + delay - 1
    e = assert_reverts(
        "AdminActionNotReady", execute_admin, evm, dep.bridge, OWNER, "setAttestationVerifier", rogue
    )
    assert e.reason.args[1] == queued.args["eta"]
    evm.rpc("evm_increaseTime", delay)
    evm.rpc("evm_mine")
    receipt = execute_admin(evm, dep.bridge, OWNER, "setAttestationVerifier", rogue)
    names = [ev.name for ev in events_of(dep.bridge, receipt)]
    assert names == ["AttestationVerifierSet", "AdminActionExecuted"]
    assert evm.call(dep.bridge, "attestationVerifier") == rogue
    # Executed once: the same call must be queued again.
    assert_reverts(
        "AdminActionNotQueued", execute_admin, evm, dep.bridge, OWNER, "setAttestationVerifier", rogue
    )


def test_timelock_roles_cancel_and_expiry(evm: EvmClient) -> None:
    dep = _deploy(evm)
    bridge = dep.bridge
    assert_reverts("NotOwner", queue_admin, evm, bridge, STRANGER, "setGuardian", STRANGER.address)
    call = encode_call(bridge.abi, "pause", [])
    assert_reverts("NotATimelockedAction", evm.transact, bridge, "queueAdminAction", call, sender=OWNER)
    queue_admin(evm, bridge, OWNER, "setGuardian", STRANGER.address)
    assert_reverts(
        "AdminActionAlreadyQueued", queue_admin, evm, bridge, OWNER, "setGuardian", STRANGER.address
    )
    assert_reverts("NotOwner", cancel_admin, evm, bridge, STRANGER, "setGuardian", STRANGER.address)
    receipt = cancel_admin(evm, bridge, OWNER, "setGuardian", STRANGER.address)
    assert [ev.name for ev in events_of(bridge, receipt)] == ["AdminActionCancelled"]
    delay = evm.call(bridge, "adminDelay")
    evm.rpc("evm_increaseTime", delay)
    evm.rpc("evm_mine")
    assert_reverts("AdminActionNotQueued", execute_admin, evm, bridge, OWNER, "setGuardian", STRANGER.address)
    assert evm.call(bridge, "guardian") == GUARDIAN.address
    # A queued action not executed within the grace period lapses.
    queue_admin(evm, bridge, OWNER, "setMintCap", 5, 0)
    evm.rpc("evm_increaseTime", delay + evm.call(bridge, "ADMIN_GRACE_PERIOD") + 1)
    evm.rpc("evm_mine")
    assert_reverts("AdminActionExpired", execute_admin, evm, bridge, OWNER, "setMintCap", 5, 0)
    # Ownership: queued, executed after the delay, then accepted by the new owner.
    queue_admin(evm, bridge, OWNER, "transferOwnership", USER.address)
    evm.rpc("evm_increaseTime", delay)
    evm.rpc("evm_mine")
    execute_admin(evm, bridge, OWNER, "transferOwnership", USER.address)
    evm.transact(bridge, "acceptOwnership", sender=USER)
    assert evm.call(bridge, "owner") == USER.address


def test_deploy_rejects_a_short_admin_delay(evm: EvmClient) -> None:
    with pytest.raises(ContractRevert) as e:
        _deploy(evm, admin_delay=60)
    assert e.value.name == "InvalidConfiguration"
