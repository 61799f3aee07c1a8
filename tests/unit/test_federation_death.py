"""What proves a payout dead (btcl2/federation/death.py): a conflicting spend of one of its inputs, or of
an input of the transaction that created one; never a variant of the payout, nor the creating transaction."""

import hashlib

from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.core.params import Params
from btcl2.federation.death import InputOrigin, PayoutOrigins, _conflict
from btcl2.federation.payout import (
    FederationCoin,
    PayoutItem,
    WithdrawalRef,
    build_payout,
    decode_tag,
    finalize,
)

PARAMS = Params()
DEPOSIT_INPUT = OutPoint(hashlib.sha256(b"user coin").digest(), 1)
DEPOSIT = Tx(2, (TxIn(DEPOSIT_INPUT),), (TxOut(500_000, PARAMS.federation_script_pubkey),), 0)
COIN = FederationCoin(OutPoint(DEPOSIT.txid, 0), 500_000)
ITEM = PayoutItem(WithdrawalRef.evm((7).to_bytes(32, "big")), p2wpkh(hash160(b"carol")), 60_000)
PAYOUT = build_payout([ITEM], [COIN], PARAMS, 2)
ORIGINS = PayoutOrigins("11" * 32, (InputOrigin(COIN.outpoint, (DEPOSIT_INPUT,)),))
REFS = set(decode_tag(PAYOUT.vout[-1].script_pubkey) or ())


def _spend(prevout: OutPoint, to: bytes = b"\x51") -> Tx:
    return Tx(2, (TxIn(prevout),), (TxOut(1_000, to),), 0)


def _signed(tx: Tx) -> Tx:
    """The payout with a witness that ends in the federation script (what paid_refs recognises)."""
    return finalize(tx, {pk: [b"\x30\x01"] * len(tx.vin) for pk in PARAMS.federation_pubkeys}, PARAMS)


def test_a_foreign_spend_of_an_input_is_death() -> None:
    reason = _conflict(_spend(COIN.outpoint), PAYOUT, REFS, ORIGINS, PARAMS)
    assert reason is not None and "is spent by" in reason


def test_a_variant_of_the_payout_is_not_death() -> None:
    bumped = Tx(PAYOUT.version, PAYOUT.vin, (PAYOUT.vout[0], TxOut(0, PAYOUT.vout[-1].script_pubkey)), 0)
    assert _conflict(_signed(bumped), PAYOUT, REFS, ORIGINS, PARAMS) is None
    assert _conflict(_signed(PAYOUT), PAYOUT, REFS, ORIGINS, PARAMS) is None


def test_a_replacement_paying_only_some_withdrawals_is_death() -> None:
    """The replacement of an abandoned payout pays part of its withdrawals: the rest stay unpaid, so the
    abandoned payout is dead (signers refuse to pay the paid part again: AlreadyPaid)."""
    other = PayoutItem(WithdrawalRef.evm((8).to_bytes(32, "big")), p2wpkh(hash160(b"dave")), 70_000)
    both = build_payout([ITEM, other], [COIN], PARAMS, 2)
    refs = set(decode_tag(both.vout[-1].script_pubkey) or ())
    reason = _conflict(_signed(PAYOUT), both, refs, ORIGINS, PARAMS)
    assert reason is not None and "is spent by" in reason


def test_a_double_spent_deposit_is_death_and_the_deposit_itself_is_not() -> None:
    reason = _conflict(_spend(DEPOSIT_INPUT), PAYOUT, REFS, ORIGINS, PARAMS)
    assert reason is not None and "can never exist" in reason
    assert _conflict(DEPOSIT, PAYOUT, REFS, ORIGINS, PARAMS) is None


def test_unrelated_spends_prove_nothing() -> None:
    other = OutPoint(hashlib.sha256(b"other").digest(), 0)
    assert _conflict(_spend(other), PAYOUT, REFS, ORIGINS, PARAMS) is None


def test_origins_round_trip() -> None:
    assert PayoutOrigins.from_json(ORIGINS.to_json()) == ORIGINS
