"""Deposit tags, parse_deposit's every outcome, the federation script, forced inclusion and L1 lag."""

from dataclasses import replace

import pytest

from btcl2.bitcoin.script import op_return, p2wpkh, solve
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.core.deposits import (
    REASON_BELOW_MINIMUM,
    REASON_COINBASE,
    REASON_MALFORMED_TAG,
    REASON_MISSING_TAG,
    REASON_MULTIPLE_TAGS,
    REASON_ZERO_EVM_RECIPIENT,
    Deposit,
    DepositKind,
    RejectedDeposit,
    check_forced_inclusion,
    check_l1_origin_lag,
    deposit_tag,
    deposit_tag_script,
    parse_deposit,
)
from btcl2.core.errors import (
    BadFederation,
    DuplicateDeposit,
    L1OriginTooOld,
    MisorderedDeposits,
    MissingDeposit,
    PrematureDeposit,
)
from btcl2.core.federation import federation_script, federation_script_pubkey
from btcl2.core.params import DEVNET_FEDERATION_PUBKEYS, Params
from btcl2.core.types import Address20, Batch, BatchHeader, Hash32, Sats

PARAMS = Params()
FED = PARAMS.federation_script_pubkey
RECIPIENT = b"\xaa" * 20
OTHER = p2wpkh(b"\x01" * 20)


def _tx(*outs: TxOut, coinbase: bool = False) -> Tx:
    prev = OutPoint(b"\x00" * 32, 0xFFFFFFFF) if coinbase else OutPoint(b"\x09" * 32, 0)
    return Tx(2, (TxIn(prev, b"\x01\x01" if coinbase else b""),), tuple(outs), 0)


def test_federation_script_is_sorted_multisig() -> None:
    script = federation_script(list(reversed(DEVNET_FEDERATION_PUBKEYS)), 2)
    kind, sols = solve(script)
    assert kind.value == "multisig"
    assert sols[1:-1] == sorted(DEVNET_FEDERATION_PUBKEYS)
    assert script == PARAMS.federation_script
    assert federation_script_pubkey(DEVNET_FEDERATION_PUBKEYS, 2) == FED
    assert FED[:2] == b"\x00\x20" and len(FED) == 34


@pytest.mark.parametrize(
    ("keys", "m"),
    [
        (DEVNET_FEDERATION_PUBKEYS, 0),
        (DEVNET_FEDERATION_PUBKEYS, 4),
        ((DEVNET_FEDERATION_PUBKEYS[0], DEVNET_FEDERATION_PUBKEYS[0]), 1),
        ((b"\x04" + b"\x01" * 64,), 1),
        ((b"\x02" + b"\x01" * 31,), 1),
        (tuple(bytes([2]) + i.to_bytes(32, "big") for i in range(21)), 2),
        ((), 1),
    ],
)
def test_federation_rejects(keys: tuple[bytes, ...], m: int) -> None:
    with pytest.raises(BadFederation):
        federation_script(keys, m)


@pytest.mark.parametrize("kind", [DepositKind.L2, DepositKind.EVM])
def test_valid_deposit(kind: DepositKind) -> None:
    tx = _tx(TxOut(1000, OTHER), TxOut(50_000, FED), TxOut(0, deposit_tag_script(kind, RECIPIENT)))
    assert parse_deposit(tx, FED, PARAMS) == Deposit(
        OutPoint(tx.txid, 1), kind, Address20(RECIPIENT), Sats(50_000)
    )


def test_not_a_deposit() -> None:
    assert parse_deposit(_tx(TxOut(50_000, OTHER)), FED, PARAMS) is None


def test_only_first_federation_output_counts() -> None:
    tag = TxOut(0, deposit_tag_script(DepositKind.L2, RECIPIENT))
    result = parse_deposit(_tx(TxOut(20_000, FED), TxOut(90_000, FED), tag), FED, PARAMS)
    assert isinstance(result, Deposit) and result.amount == 20_000 and result.outpoint.vout == 0


def test_unrelated_op_return_is_ignored() -> None:
    tx = _tx(
        TxOut(0, op_return(b"hello")),
        TxOut(20_000, FED),
        TxOut(0, deposit_tag_script(DepositKind.L2, RECIPIENT)),
    )
    assert isinstance(parse_deposit(tx, FED, PARAMS), Deposit)


def _tag_out(payload: bytes) -> TxOut:
    return TxOut(0, op_return(payload))


@pytest.mark.parametrize(
    ("outs", "reason"),
    [
        ((TxOut(20_000, FED),), REASON_MISSING_TAG),
        ((TxOut(20_000, FED), TxOut(0, op_return(b"BL2"))), REASON_MISSING_TAG),
        (
            (
                TxOut(20_000, FED),
                _tag_out(deposit_tag(DepositKind.L2, RECIPIENT)),
                _tag_out(deposit_tag(DepositKind.EVM, RECIPIENT)),
            ),
            REASON_MULTIPLE_TAGS,
        ),
        ((TxOut(20_000, FED), _tag_out(deposit_tag(DepositKind.L2, RECIPIENT)[:-1])), REASON_MALFORMED_TAG),
        (
            (TxOut(20_000, FED), _tag_out(deposit_tag(DepositKind.L2, RECIPIENT) + b"\x00")),
            REASON_MALFORMED_TAG,
        ),
        ((TxOut(20_000, FED), _tag_out(b"BL2D\x02\x01" + RECIPIENT)), REASON_MALFORMED_TAG),
        ((TxOut(20_000, FED), _tag_out(b"BL2D\x01\x03" + RECIPIENT)), REASON_MALFORMED_TAG),
        (
            (TxOut(20_000, FED), TxOut(0, op_return(deposit_tag(DepositKind.L2, RECIPIENT), b"x"))),
            REASON_MALFORMED_TAG,
        ),
        # the same 26 bytes behind OP_PUSHDATA1 are not the one accepted shape
        (
            (TxOut(20_000, FED), TxOut(0, b"\x6a\x4c\x1a" + deposit_tag(DepositKind.L2, RECIPIENT))),
            REASON_MALFORMED_TAG,
        ),
        ((TxOut(9_999, FED), _tag_out(deposit_tag(DepositKind.L2, RECIPIENT))), REASON_BELOW_MINIMUM),
    ],
)
def test_rejected_deposits(outs: tuple[TxOut, ...], reason: str) -> None:
    tx = _tx(*outs)
    result = parse_deposit(tx, FED, PARAMS)
    assert isinstance(result, RejectedDeposit)
    assert result.reason.startswith(reason)
    assert result.outpoint == OutPoint(tx.txid, 0) and result.amount == outs[0].value


def test_evm_tag_naming_zero_address_is_rejected() -> None:
    """WBTC can never be minted to 0x0, so such a payment is a rejected (reported, unclaimed) deposit."""
    zero = b"\x00" * 20
    tx = _tx(TxOut(50_000, FED), TxOut(0, deposit_tag_script(DepositKind.EVM, zero)))
    result = parse_deposit(tx, FED, PARAMS)
    assert result == RejectedDeposit(OutPoint(tx.txid, 0), Sats(50_000), REASON_ZERO_EVM_RECIPIENT)
    # An L2 account 0x0 is an account like any other: the rule is about what the Bridge can mint to.
    l2 = parse_deposit(
        _tx(TxOut(50_000, FED), TxOut(0, deposit_tag_script(DepositKind.L2, zero))), FED, PARAMS
    )
    assert isinstance(l2, Deposit) and l2.recipient == zero


def test_coinbase_rejected() -> None:
    tx = _tx(TxOut(50_000, FED), _tag_out(deposit_tag(DepositKind.L2, RECIPIENT)), coinbase=True)
    result = parse_deposit(tx, FED, PARAMS)
    assert isinstance(result, RejectedDeposit) and result.reason == REASON_COINBASE


def _deposit(i: int, kind: DepositKind = DepositKind.L2) -> Deposit:
    return Deposit(OutPoint(bytes([i]) * 32, 0), kind, Address20(bytes([i]) * 20), Sats(10_000 * i))


def _batch(*deposits: Deposit) -> Batch:
    z = Hash32(b"\x00" * 32)
    header = BatchHeader(0, z, 1, z, z, z, z, tuple(d.credit() for d in deposits), z, 0)
    return Batch(header, ())


def test_forced_inclusion_ok() -> None:
    eligible = [_deposit(1), _deposit(2, DepositKind.EVM), _deposit(3)]
    check_forced_inclusion(_batch(_deposit(1), _deposit(3)), eligible, set())
    check_forced_inclusion(_batch(_deposit(3)), eligible, {_deposit(1).outpoint})
    check_forced_inclusion(_batch(), [], set())


def test_forced_inclusion_rejections() -> None:
    eligible = [_deposit(1), _deposit(3)]
    with pytest.raises(MissingDeposit):
        check_forced_inclusion(_batch(_deposit(1)), eligible, set())
    with pytest.raises(PrematureDeposit):
        check_forced_inclusion(_batch(_deposit(1), _deposit(3), _deposit(4)), eligible, set())
    with pytest.raises(PrematureDeposit):
        check_forced_inclusion(_batch(_deposit(2, DepositKind.EVM)), [_deposit(2, DepositKind.EVM)], set())
    with pytest.raises(PrematureDeposit):  # right outpoint, wrong amount
        check_forced_inclusion(_batch(replace(_deposit(1), amount=Sats(1)), _deposit(3)), eligible, set())
    with pytest.raises(DuplicateDeposit):
        check_forced_inclusion(_batch(_deposit(1), _deposit(3)), eligible, {_deposit(1).outpoint})
    with pytest.raises(DuplicateDeposit):
        check_forced_inclusion(_batch(_deposit(1), _deposit(1), _deposit(3)), eligible, set())
    with pytest.raises(MisorderedDeposits):
        check_forced_inclusion(_batch(_deposit(3), _deposit(1)), eligible, set())


def test_l1_origin_lag() -> None:
    check_l1_origin_lag(100, 100 + PARAMS.max_l1_origin_lag, PARAMS)
    with pytest.raises(L1OriginTooOld):
        check_l1_origin_lag(100, 101 + PARAMS.max_l1_origin_lag, PARAMS)
