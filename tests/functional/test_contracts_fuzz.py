"""Random call sequences against the Bridge on a real anvil, checked step by step against a small model.

Hypothesis drives deposits (synthetic blocks mined here on the light client's tip: their SPV proofs are
real), mints (each outpoint once), burns, WBTC transfers, pause and unpause, and mint cap changes through the
admin timelock. After every step the chain must agree with the model: balances, total supply = minted -
burnt, the mint cap's bucket, the pause flag, the minted outpoints. Each example starts from one anvil
snapshot of a fresh deployment (evm_snapshot / evm_revert), so examples are independent and cheap.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import test_contracts
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from test_contracts import FED, GUARDIAN, OWNER, STRANGER, USER, K, _deploy
from test_contracts import assert_reverts as reverts

from btcl2.bitcoin.block import Block, BlockHeader, merkle_root
from btcl2.bitcoin.hashes import sha256d
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bridge.admin import execute_admin, queue_admin
from btcl2.bridge.deploy import REGTEST_GENESIS, Deployment
from btcl2.bridge.evm import EvmClient
from btcl2.bridge.spv import MintProof, mint_proof
from btcl2.core.deposits import DepositKind, deposit_tag_script

pytestmark = pytest.mark.functional

anvil, evm = test_contracts.anvil, test_contracts.evm

CAPACITY = 3_000_000
MIN_SATS = 10_000
HOLDERS = (USER, STRANGER)
BTC_SCRIPT = p2wpkh(b"\x05" * 20)


@dataclass
class Model:
    """What the chain must show."""

    balances: dict[str, int] = field(default_factory=lambda: {h.address: 0 for h in HOLDERS})
    minted: set[bytes] = field(default_factory=set)
    burnt: int = 0
    bucket: int = CAPACITY
    capacity: int = CAPACITY
    paused: bool = False


@pytest.fixture(scope="module")
def fresh(evm: EvmClient) -> Iterator[tuple[Deployment, str]]:
    """A deployment with a refill-free mint cap (the model needs no clock) and its snapshot id."""
    dep = _deploy(evm, mint_cap_capacity=CAPACITY, mint_cap_refill_per_second=0)
    yield dep, evm.rpc("evm_snapshot")


def _mined(h: BlockHeader) -> BlockHeader:
    target = 0x7FFFFF << (8 * (0x20 - 3))
    while int.from_bytes(h.hash, "little") > target:
        h = replace(h, nonce=h.nonce + 1)
    return h


class BridgeMachine(RuleBasedStateMachine):
    evm: EvmClient
    dep: Deployment
    snapshot: str

    def __init__(self) -> None:
        super().__init__()
        ok = self.evm.rpc("evm_revert", self.snapshot)
        assert ok
        type(self).snapshot = self.evm.rpc("evm_snapshot")  # a snapshot is used up by its revert
        self.model = Model()
        self.tip = BlockHeader.decode(REGTEST_GENESIS.header)
        self.proofs: list[tuple[MintProof, str, int]] = []
        self.serial = 0

    def _send(self, fn: str, *args: Any, sender: LocalAccount, error: str | None = None) -> None:
        if error is None:
            self.evm.transact(self.dep.bridge, fn, *args, sender=sender)
        else:
            reverts(error, self.evm.transact, self.dep.bridge, fn, *args, sender=sender)

    @initialize(amount=st.integers(MIN_SATS, 2_000_000), to=st.sampled_from(HOLDERS))
    def first_deposit(self, amount: int, to: LocalAccount) -> None:
        self.deposit(amount, to, True)

    @rule(
        amount=st.integers(MIN_SATS - 1_000, 2_000_000), to=st.sampled_from(HOLDERS), mint_now=st.booleans()
    )
    def deposit(self, amount: int, to: LocalAccount, mint_now: bool) -> None:
        """A deposit mined in a block of its own, buried K deep on the light client (and minted at once)."""
        self.serial += 1
        tag = deposit_tag_script(DepositKind.EVM, bytes.fromhex(to.address[2:]))
        tx = Tx(
            2, (TxIn(OutPoint(self.serial.to_bytes(32, "little"), 0)),), (TxOut(amount, FED), TxOut(0, tag))
        )
        sig = bytes([3]) + self.serial.to_bytes(3, "little")
        coinbase = Tx(1, (TxIn(OutPoint(b"\x00" * 32, 0xFFFFFFFF), script_sig=sig),), (TxOut(0, BTC_SCRIPT),))
        txs = (coinbase, tx)
        headers = []
        root = merkle_root([t.txid for t in txs])
        for i in range(K):
            prev = headers[-1] if headers else self.tip
            headers.append(_mined(BlockHeader(0x20000000, prev.hash, root, prev.time + 1, 0x207FFFFF, i)))
            root = bytes(32)
        self.evm.transact(
            self.dep.light_client, "submitHeaders", b"".join(h.encode() for h in headers), sender=OWNER
        )
        self.tip = headers[-1]
        self.proofs.append((mint_proof(Block(headers[0], txs), tx.txid, 0), to.address, amount))
        if mint_now:
            self.mint(len(self.proofs) - 1)

    @rule(pick=st.integers(0, 1_000))
    def mint(self, pick: int) -> None:
        if not self.proofs:
            return
        proof, to, amount = self.proofs[pick % len(self.proofs)]
        m = self.model
        error = (
            "BridgePaused"
            if m.paused
            else "BelowMinimumDeposit"
            if amount < MIN_SATS
            else "AlreadyMinted"
            if proof.raw_tx_no_witness in m.minted
            else "MintCapExceeded"
            if amount > m.bucket
            else None
        )
        self._send("mintWithProof", *proof.args(), sender=STRANGER, error=error)
        if error is None:
            m.minted.add(proof.raw_tx_no_witness)
            m.balances[to] += amount
            m.bucket -= amount

    @rule(who=st.sampled_from(HOLDERS), amount=st.integers(MIN_SATS - 1_000, 2_000_000))
    def burn(self, who: LocalAccount, amount: int) -> None:
        m = self.model
        error = (
            "BridgePaused"
            if m.paused
            else "BelowMinimumWithdrawal"
            if amount < MIN_SATS
            else "InsufficientBalance"
            if amount > m.balances[who.address]
            else None
        )
        self._send("burn", amount, BTC_SCRIPT, sender=who, error=error)
        if error is None:
            m.balances[who.address] -= amount
            m.burnt += amount

    @rule(who=st.sampled_from(HOLDERS), amount=st.integers(0, 2_000_000))
    def transfer(self, who: LocalAccount, amount: int) -> None:
        other = HOLDERS[1] if who is HOLDERS[0] else HOLDERS[0]
        if amount > self.model.balances[who.address]:
            return
        self.evm.transact(self.dep.wbtc, "transfer", other.address, amount, sender=who)
        self.model.balances[who.address] -= amount
        self.model.balances[other.address] += amount

    @rule()
    def pause(self) -> None:
        self._send("pause", sender=GUARDIAN, error="PauseStateUnchanged" if self.model.paused else None)
        self.model.paused = True

    @rule()
    def unpause(self) -> None:
        self._send("unpause", sender=OWNER, error=None if self.model.paused else "PauseStateUnchanged")
        self.model.paused = False

    @rule(capacity=st.integers(0, 2 * CAPACITY))
    def set_mint_cap(self, capacity: int) -> None:
        queue_admin(self.evm, self.dep.bridge, OWNER, "setMintCap", capacity, 0)
        self.evm.rpc("evm_increaseTime", self.evm.call(self.dep.bridge, "adminDelay"))
        self.evm.rpc("evm_mine")
        execute_admin(self.evm, self.dep.bridge, OWNER, "setMintCap", capacity, 0)
        self.model.capacity = capacity
        self.model.bucket = min(self.model.bucket, capacity)

    @invariant()
    def chain_agrees(self) -> None:
        m, evm, dep = self.model, self.evm, self.dep
        for who, balance in m.balances.items():
            assert evm.call(dep.wbtc, "balanceOf", who) == balance
        assert evm.call(dep.wbtc, "totalSupply") == sum(m.balances.values())
        assert (
            sum(m.balances.values())
            == sum(a for p, _, a in self.proofs if p.raw_tx_no_witness in m.minted) - m.burnt
        )
        assert evm.call(dep.bridge, "availableToMint") == m.bucket
        assert evm.call(dep.bridge, "paused") == m.paused
        for proof, _, _ in self.proofs:
            minted = proof.raw_tx_no_witness in m.minted
            assert evm.call(dep.bridge, "minted", sha256d(proof.raw_tx_no_witness), 0) == minted


def test_bridge_random_sequences(evm: EvmClient, fresh: tuple[Deployment, str]) -> None:
    dep, snapshot = fresh
    machine = type("Machine", (BridgeMachine,), {"evm": evm, "dep": dep, "snapshot": snapshot})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=10,
            stateful_step_count=20,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
