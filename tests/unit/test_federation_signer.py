"""Signer rules against fake node views and a real LevelDB record: each refusal is typed; a second
transaction for a withdrawal or input is signed only when it conflicts with every earlier one that could
still confirm (RBF, or a replacement of an abandoned payout spending one of its inputs) or those are dead."""

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey, verify_ecdsa
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.tx import OutPoint, Tx, TxOut
from btcl2.core.params import Params
from btcl2.errors import InvalidInput
from btcl2.federation.config import (
    DEVNET_EVM_FINALITY_DEPTH,
    EVM_FINALITY_DEPTH,
    ConfigError,
    SignerConfig,
    load,
)
from btcl2.federation.death import InputOrigin, PayoutOrigins
from btcl2.federation.errors import (
    AlreadyPaid,
    ConflictingPayout,
    FeeOutOfRange,
    InputNotUnspent,
    NotCanonical,
    NotFederationInput,
    ShallowInput,
    UnknownWithdrawal,
    WrongPayout,
)
from btcl2.federation.payout import (
    FederationCoin,
    PayoutItem,
    WithdrawalKind,
    WithdrawalRef,
    build_payout,
    input_sighash,
)
from btcl2.federation.signer import Signer
from btcl2.federation.store import SignedPayout, SignerStore
from btcl2.federation.views import L2Snapshot, Utxo
from btcl2.secretfile import write_secret_file

PARAMS = Params()
KEY = PrivateKey(hashlib.sha256(b"btcl2 devnet federation 1").digest())
COINS = [FederationCoin(OutPoint(hashlib.sha256(bytes([n])).digest(), 0), 400_000) for n in range(3)]
L2_ITEM = PayoutItem(WithdrawalRef(WithdrawalKind.L2, b"\x11" * 32), p2wpkh(hash160(b"alice")), 60_000)
EVM_ITEM = PayoutItem(WithdrawalRef.evm(b"\x04" * 32), p2wpkh(hash160(b"bob")), 70_000)


class FakeViews:
    def __init__(self) -> None:
        self.utxos = {c.outpoint: Utxo(c.amount, PARAMS.federation_script_pubkey, 3) for c in COINS}
        self.evm = {EVM_ITEM.ref: EVM_ITEM}
        self.evm_paid: dict[bytes, bytes] = {}
        self.snap = L2Snapshot("00", 100, final={L2_ITEM.ref: L2_ITEM})
        self.conflicts: set[OutPoint] = set()
        """Outpoints spent on the best chain, K deep, by a transaction that is no payout variant."""

    def utxo(self, outpoint: OutPoint) -> Utxo | None:
        return self.utxos.get(outpoint)

    def evm_withdrawals(self) -> dict[WithdrawalRef, PayoutItem]:
        return self.evm

    def evm_payout_txid(self, withdrawal_id: bytes) -> bytes:
        return self.evm_paid.get(withdrawal_id, bytes(32))

    def l2(self) -> L2Snapshot:
        return self.snap

    def origins(self, outpoints: list[OutPoint]) -> PayoutOrigins:
        return PayoutOrigins("00" * 32, tuple(InputOrigin(o, ()) for o in outpoints))

    def prove_dead(self, payout: Tx, origins: PayoutOrigins) -> str | None:
        assert [o.outpoint for o in origins.inputs] == [i.prevout for i in payout.vin]
        spent = [i.prevout for i in payout.vin if i.prevout in self.conflicts]
        return f"input {spent[0].txid_hex} spent by another transaction" if spent else None


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Signer, FakeViews]:
    config = SignerConfig(
        tmp_path / "db", "http://127.0.0.1:1", "t" * 16, max_fee_rate=50, max_fee_sats=50_000
    )
    views = FakeViews()
    return Signer(KEY, config, views, SignerStore(config.datadir)), views


def payout(
    items: list[PayoutItem], coins: list[FederationCoin] | None = None, rate: int = 2
) -> tuple[Tx, list[int]]:
    coins = coins or COINS[:1]
    tx = build_payout(items, coins, PARAMS, rate)
    value = {c.outpoint: c.amount for c in coins}
    return tx, [value[i.prevout] for i in tx.vin]


def test_signs_both_kinds_and_signatures_verify(setup: tuple[Signer, FakeViews]) -> None:
    signer, _ = setup
    tx, amounts = payout([L2_ITEM, EVM_ITEM])
    sig = signer.sign(tx, amounts)
    assert sig.pubkey == KEY.pubkey() and sig.txid == tx.txid
    assert verify_ecdsa(KEY.pubkey(), sig.signatures[0][:-1], input_sighash(tx, 0, amounts[0], PARAMS))
    assert signer.sign(tx, amounts).signatures == sig.signatures  # the same transaction again: same answer
    assert signer.signed_count() == 1


def _with_output(tx: Tx, index: int, out: TxOut) -> Tx:
    vout = list(tx.vout)
    vout[index] = out
    return replace(tx, vout=tuple(vout))


def test_refusals(setup: tuple[Signer, FakeViews]) -> None:
    signer, views = setup
    tx, amounts = payout([L2_ITEM])
    stranger = p2wpkh(hash160(b"mallory"))
    cases: list[tuple[type[Exception], Tx, list[int]]] = [
        (WrongPayout, _with_output(tx, 0, TxOut(L2_ITEM.amount, stranger)), amounts),
        (WrongPayout, _with_output(tx, 0, TxOut(2 * L2_ITEM.amount, L2_ITEM.script)), amounts),
        # The full amount, the withdrawal fee not kept: the federation would pay the Bitcoin fee from what it owes.
        (WrongPayout, _with_output(tx, 0, TxOut(L2_ITEM.amount, L2_ITEM.script)), amounts),
        (
            UnknownWithdrawal,
            payout([replace(L2_ITEM, ref=WithdrawalRef(WithdrawalKind.L2, b"\x22" * 32))])[0],
            amounts,
        ),
        (UnknownWithdrawal, payout([replace(EVM_ITEM, ref=WithdrawalRef.evm(b"\x05" * 32))])[0], amounts),
        (NotFederationInput, tx, [amounts[0] + 1]),
        (FeeOutOfRange, payout([L2_ITEM], rate=60)[0], amounts),
        (NotCanonical, payout([L2_ITEM], COINS[:2])[0], [400_000, 400_000]),
    ]
    for error, bad, amts in cases:
        with pytest.raises(error):
            signer.sign(bad, amts)
    views.utxos.pop(COINS[0].outpoint)
    with pytest.raises(InputNotUnspent):
        signer.sign(tx, amounts)
    assert signer.signed_count() == 0  # a refusal records nothing


def test_already_paid(setup: tuple[Signer, FakeViews]) -> None:
    signer, views = setup
    views.snap.paid[L2_ITEM.ref] = "ab" * 32
    with pytest.raises(AlreadyPaid):
        signer.sign(*payout([L2_ITEM]))
    views.snap.paid[EVM_ITEM.ref] = "cd" * 32
    with pytest.raises(AlreadyPaid):
        signer.sign(*payout([EVM_ITEM]))


def test_bridge_hint_cannot_freeze_a_burn(setup: tuple[Signer, FakeViews]) -> None:
    """The payout confirmer writes any payoutTxid on the Bridge: unless Bitcoin shows a payout of the burn,
    the signer still pays it (the Bridge's word is a hint, Bitcoin decides what is paid)."""
    signer, views = setup
    views.evm_paid[EVM_ITEM.ref.id] = b"\x01" * 32
    tx, amounts = payout([EVM_ITEM])
    assert signer.sign(tx, amounts).txid == tx.txid


def test_unfinal_and_diverged_l2(setup: tuple[Signer, FakeViews]) -> None:
    signer, views = setup
    views.snap = L2Snapshot("00", 100, unfinal={L2_ITEM.ref: 1}, batch_of={L2_ITEM.ref: 3})
    with pytest.raises(UnknownWithdrawal, match="1 of 2 confirmations"):
        signer.sign(*payout([L2_ITEM]))
    views.snap = L2Snapshot("00", 100, divergence="batch 3: RootMismatch: post-state root")
    with pytest.raises(UnknownWithdrawal, match="diverged at batch 3"):
        signer.sign(*payout([L2_ITEM]))


def test_only_conflicting_replacements(setup: tuple[Signer, FakeViews]) -> None:
    signer, _ = setup
    tx, amounts = payout([L2_ITEM])
    signer.sign(tx, amounts)
    # Another transaction for the same withdrawal from another coin: refused (both could confirm).
    with pytest.raises(ConflictingPayout):
        signer.sign(*payout([L2_ITEM], COINS[1:2]))
    # The same payouts with a lower change (higher fee): an RBF replacement, signed.
    change = tx.vout[1]
    bumped = _with_output(tx, 1, TxOut(change.value - 1_000, change.script_pubkey))
    signer.sign(bumped, amounts)
    # Going back to a lower fee than the last one signed: refused.
    with pytest.raises(ConflictingPayout):
        signer.sign(_with_output(tx, 1, TxOut(change.value - 500, change.script_pubkey)), amounts)


def test_record_survives_restart(tmp_path: Path) -> None:
    config = SignerConfig(tmp_path / "db", "http://127.0.0.1:1", "t" * 16)
    store = SignerStore(config.datadir)
    Signer(KEY, config, FakeViews(), store).sign(*payout([L2_ITEM]))
    store.close()
    again = Signer(KEY, config, FakeViews(), SignerStore(config.datadir))
    with pytest.raises(ConflictingPayout):
        again.sign(*payout([L2_ITEM], COINS[1:2]))


def test_non_federation_key_refused(tmp_path: Path) -> None:
    config = SignerConfig(tmp_path / "db", "http://127.0.0.1:1", "t" * 16)
    with pytest.raises(InvalidInput):
        Signer(PrivateKey(b"\x01" * 32), config, FakeViews(), SignerStore(config.datadir))


def test_evm_finality_depth_is_configured(tmp_path: Path) -> None:
    """Burns are believed at the EVM finality depth: 64 blocks unless configured, never below 1."""
    base = 'datadir = "d"\nbitcoin_rpc = "http://127.0.0.1:1"\ntoken = "tttttttttttttttt"\n'
    file = tmp_path / "signer.toml"
    write_secret_file(file, base, replace=True)
    assert load(SignerConfig, file, {}).evm_confirmations == EVM_FINALITY_DEPTH == 64
    assert DEVNET_EVM_FINALITY_DEPTH > 3  # deeper than the EVM reorgs the functional tests inject
    write_secret_file(file, base + "evm_confirmations = 5\n", replace=True)
    assert load(SignerConfig, file, {}).evm_confirmations == 5
    for bad in ("0", "-1", '"finalized"'):
        write_secret_file(file, base + f"evm_confirmations = {bad}\n", replace=True)
        with pytest.raises(ConfigError):
            load(SignerConfig, file, {})
def test_shallow_and_immature_inputs_refused(setup: tuple[Signer, FakeViews]) -> None:
    signer, views = setup
    tx, amounts = payout([L2_ITEM])
    op = COINS[0].outpoint
    # One confirmation: below K (a reorg could double-spend the deposit that created it).
    views.utxos[op] = Utxo(COINS[0].amount, PARAMS.federation_script_pubkey, PARAMS.k_deposit_confs - 1)
    with pytest.raises(ShallowInput, match="1 of 2 confirmations"):
        signer.sign(tx, amounts)
    # A coinbase K deep but not mature.
    views.utxos[op] = Utxo(COINS[0].amount, PARAMS.federation_script_pubkey, 99, coinbase=True)
    with pytest.raises(ShallowInput, match="coinbase output with 99 of 100"):
        signer.sign(tx, amounts)
    assert signer.signed_count() == 0
    views.utxos[op] = Utxo(COINS[0].amount, PARAMS.federation_script_pubkey, 100, coinbase=True)
    signer.sign(tx, amounts)


def test_rebuild_refused_while_the_first_payout_may_confirm(setup: tuple[Signer, FakeViews]) -> None:
    signer, views = setup
    first, amounts = payout([L2_ITEM])
    signer.sign(first, amounts)
    # The first payout's input left the chain (a reorg), but nothing proves it can never come back.
    views.utxos.pop(COINS[0].outpoint)
    with pytest.raises(ConflictingPayout, match="spends none of its inputs"):
        signer.sign(*payout([L2_ITEM], COINS[1:2]))
    # A conflict spending a coin the first payout does not use proves nothing about it.
    views.conflicts.add(COINS[2].outpoint)
    with pytest.raises(ConflictingPayout):
        signer.sign(*payout([L2_ITEM], COINS[1:2]))
    assert signer.signed_count() == 1


def test_rebuild_signed_once_the_first_payout_is_provably_dead(setup: tuple[Signer, FakeViews]) -> None:
    signer, views = setup
    first, amounts = payout([L2_ITEM, EVM_ITEM])
    signer.sign(first, amounts)
    views.utxos.pop(COINS[0].outpoint)
    views.conflicts.add(COINS[0].outpoint)
    rebuilt, rebuilt_amounts = payout([L2_ITEM], COINS[1:2])
    signer.sign(rebuilt, rebuilt_amounts)
    store = signer._store
    assert store.supersedes(rebuilt.txid) == (first.txid,)
    assert store.by_ref(L2_ITEM.ref) == rebuilt.txid
    # While the rebuild may confirm, no third payout of the same withdrawal is signed.
    with pytest.raises(ConflictingPayout):
        signer.sign(*payout([L2_ITEM], COINS[2:3]))
    # The other withdrawal of the dead payout may be paid on its own.
    signer.sign(*payout([EVM_ITEM], COINS[2:3]))
    assert signer.signed_count() == 3


def test_payout_signed_without_origins_is_never_taken_for_dead(tmp_path: Path) -> None:
    config = SignerConfig(tmp_path / "db", "http://127.0.0.1:1", "t" * 16)
    store = SignerStore(config.datadir)
    views = FakeViews()
    signer = Signer(KEY, config, views, store)
    first, amounts = payout([L2_ITEM])
    parsed_fee = sum(amounts) - sum(o.value for o in first.vout)
    store.record(SignedPayout(first, parsed_fee), (L2_ITEM.ref,))  # a record from before origins existed
    views.utxos.pop(COINS[0].outpoint)
    views.conflicts.add(COINS[0].outpoint)
    with pytest.raises(ConflictingPayout):
        signer.sign(*payout([L2_ITEM], COINS[1:2]))


def test_replacement_of_an_abandoned_payout_must_spend_one_of_its_inputs(
    setup: tuple[Signer, FakeViews],
) -> None:
    """A payout of two withdrawals, signed but never broadcast, loses one (a burn gone in a deep EVM reorg):
    a payout of the other one is signed only when it spends one of the first one's inputs."""
    signer, views = setup
    first, amounts = payout([L2_ITEM, EVM_ITEM])
    signer.sign(first, amounts)
    views.evm.pop(EVM_ITEM.ref)
    with pytest.raises(ConflictingPayout):
        signer.sign(*payout([L2_ITEM], COINS[1:2]))  # both could confirm: L2_ITEM paid twice
    second, amounts = payout([L2_ITEM])  # the same coin: at most one of the two confirms
    signer.sign(second, amounts)
    assert signer._store.supersedes(second.txid) == (first.txid,)


def test_a_line_of_replacements_is_checked_whole(setup: tuple[Signer, FakeViews]) -> None:
    """A (coin 0) -> B (coins 0, 1, conflicts with A) -> C (coin 1, conflicts with B): C and A share no
    input, so both could confirm and pay L2_ITEM twice. The signer follows B's link back to A and refuses."""
    signer, views = setup
    big = PayoutItem(WithdrawalRef.evm(b"\x06" * 32), p2wpkh(hash160(b"carol")), 500_000)
    views.evm[big.ref] = big
    signer.sign(*payout([L2_ITEM]))
    signer.sign(*payout([L2_ITEM, big], COINS[:2]))
    with pytest.raises(ConflictingPayout):
        signer.sign(*payout([L2_ITEM], COINS[1:2]))
    views.conflicts.add(COINS[0].outpoint)  # once A (and B) are provably dead, C may pay it
    signer.sign(*payout([L2_ITEM], COINS[1:2]))
