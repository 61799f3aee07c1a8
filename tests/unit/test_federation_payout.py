"""The payout format: deterministic construction, the tag, shape checks, signing verified by libbitcoinkernel."""

import hashlib
from dataclasses import replace

import pytest

from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.sighash import SIGHASH_ALL
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bitcoin.verify import verify_input
from btcl2.core.params import MAX_PAYOUT_FEE_RATE, WITHDRAWAL_VBYTES, Params
from btcl2.errors import InvalidInput
from btcl2.federation.errors import InsufficientFunds, NotCanonical
from btcl2.federation.payout import (
    FederationCoin,
    PayoutItem,
    WithdrawalKind,
    WithdrawalRef,
    build_payout,
    decode_tag,
    encode_tag,
    finalize,
    input_sighash,
    paid_refs,
    parse_payout,
    select_coins,
)

PARAMS = Params()
KEYS = [PrivateKey(hashlib.sha256(b"btcl2 devnet federation %d" % i).digest()) for i in (1, 2, 3)]


def coin(n: int, amount: int) -> FederationCoin:
    return FederationCoin(OutPoint(hashlib.sha256(bytes([n])).digest(), n % 3), amount)


def item(n: int, amount: int = 50_000, kind: WithdrawalKind = WithdrawalKind.L2) -> PayoutItem:
    ref = WithdrawalRef(kind, hashlib.sha256(b"w%d" % n).digest())
    return PayoutItem(ref, p2wpkh(hash160(b"user%d" % n)), amount)


def test_devnet_keys_are_the_federation() -> None:
    assert sorted(k.pubkey() for k in KEYS) == sorted(PARAMS.federation_pubkeys)


def test_ref_text_round_trip() -> None:
    for ref in (item(1).ref, WithdrawalRef.evm(b"\x07" * 32), WithdrawalRef.evm(b"\xff" * 32)):
        assert WithdrawalRef.parse(ref.text) == ref
    assert WithdrawalRef.evm(b"\x07" * 32).text == "evm:0x" + "07" * 32
    assert WithdrawalRef.parse("0x" + "07" * 32).kind == WithdrawalKind.L2  # a bare hash is an L2 tx
    # Counters ("evm:12", a bare "12") are refused: a reorg could hand such an id to another burn.
    for bad in ("l2:0x12", "evm:-1", "evm:x", "evm:12", "12", "evm:0x" + "07" * 31, "btc:1", ""):
        with pytest.raises(InvalidInput):
            WithdrawalRef.parse(bad)


def test_tag_round_trip_and_rejects() -> None:
    refs = (WithdrawalRef.evm(b"\x01" * 32), item(2).ref)
    assert decode_tag(encode_tag(refs)) == refs
    assert decode_tag(b"\x6a\x04abcd") is None
    with pytest.raises(NotCanonical):
        decode_tag(bytes(b"\x6a" + bytes([0x4C, 5 + 2]) + b"BL2P\x02\x00\x00"))


def test_build_is_deterministic_and_parses() -> None:
    items = [item(3), item(1), item(2, kind=WithdrawalKind.EVM)]
    coins = [coin(1, 100_000), coin(2, 300_000), coin(3, 20_000)]
    selected = select_coins(coins, items, PARAMS, 2)
    assert [c.amount for c in selected] == [300_000]
    tx = build_payout(items, selected, PARAMS, 2)
    again = build_payout(list(reversed(items)), list(reversed(selected)), PARAMS, 2)
    assert tx == again
    parsed = parse_payout(tx, [300_000], PARAMS)
    assert [i.ref for i in parsed.items] == sorted((i.ref for i in items), key=WithdrawalRef.encode)
    assert parsed.change is not None and parsed.fee == 2 * parsed.vsize
    fee_w = PARAMS.withdrawal_fee_sats
    assert [o.value for o in tx.vout[:3]] == [
        i.amount - fee_w for i in sorted(items, key=lambda i: i.ref.encode())
    ]
    assert [i.amount for i in parsed.items] == [o.value + fee_w for o in tx.vout[:3]]  # the amounts implied
    assert sum(o.value for o in tx.vout[:3]) + parsed.change + parsed.fee == 300_000
    assert all(i.sequence == 0xFFFFFFFD for i in tx.vin) and tx.version == 2 and tx.locktime == 0


def test_not_enough_coins() -> None:
    with pytest.raises(InsufficientFunds):
        select_coins([coin(1, 10_000)], [item(1)], PARAMS, 2)


def test_shape_violations_are_refused() -> None:
    tx = build_payout([item(1), item(2)], [coin(1, 200_000), coin(2, 200_000)], PARAMS, 2)
    amounts = [200_000, 200_000]
    parse_payout(tx, amounts, PARAMS)
    swapped_inputs = replace(tx, vin=tuple(reversed(tx.vin)))
    extra = replace(tx, vout=(*tx.vout[:-1], TxOut(1000, p2wpkh(b"\x01" * 20)), tx.vout[-1]))
    to_fed = replace(tx, vout=(TxOut(50_000, PARAMS.federation_script_pubkey), *tx.vout[1:]))
    no_rbf = replace(tx, vin=tuple(TxIn(i.prevout) for i in tx.vin))
    for bad in (swapped_inputs, extra, to_fed, no_rbf, replace(tx, version=1)):
        with pytest.raises(NotCanonical):
            parse_payout(bad, amounts, PARAMS)


def test_two_of_three_signatures_verify_in_the_kernel() -> None:
    coins = [coin(1, 150_000), coin(2, 90_000)]
    tx = build_payout([item(1, 200_000)], coins, PARAMS, 3)
    amounts = [c.amount for c in sorted(coins, key=lambda c: c.outpoint.encode())]
    sigs = {
        k.pubkey(): [
            k.sign_ecdsa(input_sighash(tx, i, a, PARAMS)) + bytes([SIGHASH_ALL])
            for i, a in enumerate(amounts)
        ]
        for k in KEYS[1:]
    }
    signed = finalize(tx, sigs, PARAMS)
    spent = [TxOut(a, PARAMS.federation_script_pubkey) for a in amounts]
    assert all(verify_input(signed, i, spent) for i in range(len(signed.vin)))
    assert signed.txid == tx.txid
    parsed = parse_payout(tx, amounts, PARAMS)
    assert parsed.vsize - 2 <= signed.vsize <= parsed.vsize  # an upper bound: some DER signatures are shorter
    assert paid_refs(signed, PARAMS) == (item(1).ref,)
    assert paid_refs(tx, PARAMS) == ()  # unsigned: no federation witness, not a payout
    with pytest.raises(InvalidInput):
        finalize(tx, {KEYS[0].pubkey(): sigs[KEYS[1].pubkey()]}, PARAMS)


def test_unknown_output_kind_in_tag() -> None:
    tx = Tx(
        2, (TxIn(coin(1, 1).outpoint, sequence=0xFFFFFFFD),), (TxOut(0, b"\x6a\x08BL2P\x01\x01\x00\x07"),), 0
    )
    with pytest.raises(NotCanonical):
        parse_payout(tx, [1], PARAMS)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 50])
def test_withdrawal_fees_cover_the_payout_fee_at_the_max_rate(n: int) -> None:
    """The federation keeps `withdrawal_fee_sats` of each withdrawal: at MAX_PAYOUT_FEE_RATE, with one input
    per withdrawal (the worst the selection does for withdrawals above the fee), the mining fee is covered,
    so the federation never holds less than it owes (finding 9)."""
    items = [item(i, 10_000 + i) for i in range(n)]
    coins = [coin(i, 11_000 + i) for i in range(n)]
    tx = build_payout(items, coins, PARAMS, MAX_PAYOUT_FEE_RATE)
    parsed = parse_payout(tx, [c.amount for c in sorted(coins, key=lambda c: c.outpoint.encode())], PARAMS)
    assert parsed.change is not None and parsed.fee == MAX_PAYOUT_FEE_RATE * parsed.vsize
    # What left the federation's coins (outputs + mining fee) is at most what the withdrawals requested.
    assert sum(parsed.amounts) - parsed.change <= sum(i.amount for i in items)
    assert PARAMS.withdrawal_fee_sats == WITHDRAWAL_VBYTES * MAX_PAYOUT_FEE_RATE
