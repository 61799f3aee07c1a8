"""The rules a signer applies before it signs a payout (docs/PROTOCOL.md, "Federation"), as guard clauses.

Everything is checked against the signer's own views (its Bitcoin node, its EVM node, its own replay of
Bitcoin) and its own record of what it signed; nothing the coordinator says is believed except the
transaction itself, whose every claim is checked here.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from btcl2.bitcoin.tx import OutPoint
from btcl2.core.params import Params
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
    ParsedPayout,
    PayoutItem,
    WithdrawalKind,
    WithdrawalRef,
    decode_tag,
    min_change,
    paid_total,
    paid_value,
)
from btcl2.federation.store import SignedPayout
from btcl2.federation.views import COINBASE_MATURITY, L2Snapshot, Utxo, spendable_depth

MIN_RELAY_FEE_RATE = 1
"""sat/vB: Bitcoin Core's default minimum relay fee; a payout below it would never propagate."""


@dataclass(frozen=True, slots=True)
class SignerPolicy:
    """A signer's limits."""

    max_fee_rate: int = 100
    """Most sat/vB it signs."""
    max_fee_sats: int = 1_000_000
    """Most absolute fee per payout."""
    min_input_confirmations: int = 0
    """Confirmations each spent federation output needs; never fewer than K (see `input_depth`)."""


class Views(Protocol):
    """What the signer's own nodes say (see btcl2.federation.views)."""

    def utxo(self, outpoint: OutPoint) -> Utxo | None:
        """The unspent, confirmed output, or None."""
        ...

    def evm_withdrawals(self) -> dict[WithdrawalRef, PayoutItem]:
        """Bridge burns with enough EVM confirmations."""
        ...

    def l2(self) -> L2Snapshot:
        """The signer's replay of Bitcoin."""
        ...


class Records(Protocol):
    """What the signer signed before (see btcl2.federation.store.SignerStore)."""

    def signed(self, txid: bytes) -> SignedPayout | None: ...

    def by_ref(self, ref: WithdrawalRef) -> bytes | None: ...

    def by_input(self, outpoint: OutPoint) -> bytes | None: ...

    def supersedes(self, txid: bytes) -> tuple[bytes, ...]: ...


def check_fee(p: ParsedPayout, policy: SignerPolicy) -> None:
    """Relay minimum <= fee rate <= max_fee_rate, fee <= max_fee_sats."""
    if p.fee < MIN_RELAY_FEE_RATE * p.vsize:
        raise FeeOutOfRange(f"fee {p.fee} sats for {p.vsize} vB is below {MIN_RELAY_FEE_RATE} sat/vB")
    if p.fee > policy.max_fee_rate * p.vsize:
        raise FeeOutOfRange(f"fee rate {p.fee_rate:.1f} sat/vB exceeds the limit of {policy.max_fee_rate}")
    if p.fee > policy.max_fee_sats:
        raise FeeOutOfRange(f"fee {p.fee} sats exceeds the limit of {policy.max_fee_sats}")


def input_depth(configured: int, params: Params) -> int:
    """Confirmations a payout input needs: `configured`, but at least K. A payout spending a shallower
    coin (a deposit not yet credited) could be invalidated by a reorg that double-spends that deposit."""
    return max(configured, params.k_deposit_confs)


def check_inputs(p: ParsedPayout, views: Views, params: Params, policy: SignerPolicy) -> None:
    """Every input is an unspent federation output of the declared amount, at least K deep (a coinbase
    mature); none is superfluous."""
    depth = input_depth(policy.min_input_confirmations, params)
    for txin, amount in zip(p.tx.vin, p.amounts, strict=True):
        where = f"{txin.prevout.txid_hex}:{txin.prevout.vout}"
        utxo = views.utxo(txin.prevout)
        if utxo is None:
            raise InputNotUnspent(f"input {where} is not an unspent confirmed output on this signer's node")
        if utxo.script_pubkey != params.federation_script_pubkey:
            raise NotFederationInput(f"input {where} does not pay the federation script")
        if utxo.amount != amount:
            raise NotFederationInput(f"input {where} holds {utxo.amount} sats, the request says {amount}")
        if not spendable_depth(utxo.confirmations, utxo.coinbase, depth):
            need = max(depth, COINBASE_MATURITY) if utxo.coinbase else depth
            kind = "coinbase output" if utxo.coinbase else "output"
            raise ShallowInput(f"input {where} is a {kind} with {utxo.confirmations} of {need} confirmations")
    payouts = paid_total(p.items, params)
    # Deterministic selection stops at the first coin that covers everything: no input may be spare.
    if len(p.amounts) > 1 and sum(p.amounts) - min(p.amounts) >= payouts + p.fee + min_change(params):
        raise NotCanonical("the payout spends more federation outputs than it needs")


def _l2_unknown(ref: WithdrawalRef, snap: L2Snapshot, f: int) -> UnknownWithdrawal:
    if ref in snap.unfinal:
        return UnknownWithdrawal(
            f"L2 withdrawal {ref.text} is in batch {snap.batch_of[ref]} whose anchor has "
            f"{snap.unfinal[ref]} of {f} confirmations"
        )
    detail = f" (this signer's replay diverged at {snap.divergence})" if snap.divergence else ""
    return UnknownWithdrawal(f"L2 withdrawal {ref.text} is in no batch this signer's replay verified{detail}")


def check_withdrawals(p: ParsedPayout, views: Views, params: Params) -> None:
    """Each output pays exactly a withdrawal this signer saw final on its own nodes, not paid before."""
    snap = views.l2()
    evm: dict[WithdrawalRef, PayoutItem] | None = None
    txid_hex = p.tx.txid_hex
    for item in p.items:
        ref = item.ref
        if ref.kind == WithdrawalKind.EVM:
            evm = evm if evm is not None else views.evm_withdrawals()
            known = evm.get(ref)
            if known is None:
                raise UnknownWithdrawal(
                    f"no WithdrawalRequested {ref.text} at this signer's EVM finality depth"
                )
        else:
            known = snap.final.get(ref)
            if known is None:
                raise _l2_unknown(ref, snap, params.f_anchor_confs)
        if item.script != known.script:
            raise WrongPayout(
                f"{ref.text} names script {known.script.hex()}, the payout pays {item.script.hex()}"
            )
        if item.amount != known.amount:
            raise WrongPayout(
                f"{ref.text} requested {known.amount} sats, so its output is {paid_value(known.amount, params)} "
                f"(less the {params.withdrawal_fee_sats} withdrawal fee); the payout pays "
                f"{paid_value(item.amount, params)}"
            )
        # Paid is what Bitcoin shows (a payout tagged with the ref in this signer's own chain), never the
        # Bridge's payoutTxid: that is the confirmer's hint, and believing it would let one key freeze any burn.
        paid_by = snap.paid.get(ref)
        if paid_by is not None and paid_by != txid_hex:
            raise AlreadyPaid(f"{ref.text} was paid by Bitcoin transaction {paid_by}")


def _is_replacement(p: ParsedPayout, old: SignedPayout) -> bool:
    """Same inputs, same payout outputs and tag (only the change and fee differ)."""
    n = len(p.items)
    same_inputs = [i.prevout for i in old.tx.vin] == [i.prevout for i in p.tx.vin]
    return same_inputs and old.tx.vout[:n] == p.tx.vout[:n] and old.tx.vout[-1] == p.tx.vout[-1]


def _lineage(records: Records, direct: set[bytes]) -> dict[bytes, SignedPayout]:
    """The payouts signed before for these txids and, through the recorded `supersedes` links, every
    payout each of them superseded (fee bumps, conflicting replacements, rebuilds of dead payouts)."""
    found: dict[bytes, SignedPayout] = {}
    todo = sorted(direct)
    while todo:
        txid = todo.pop()
        if txid in found:
            continue
        old = records.signed(txid)
        if old is None:
            raise ConflictingPayout(f"record of payout {txid[::-1].hex()} is missing")
        found[txid] = old
        todo.extend(t for t in records.supersedes(txid) if t not in found)
    return found


def check_history(
    p: ParsedPayout, records: Records, prove_dead: Callable[[SignedPayout], str | None]
) -> tuple[bytes, ...]:
    """Never two transactions that could both confirm and pay one withdrawal twice.

    Every payout signed before for a withdrawal or an input of `p`, and every payout those superseded
    (`_lineage`), must either conflict with `p` (spend one of its inputs: at most one of the two can ever
    confirm), pay none of its withdrawals, or be provably dead on the signer's own node (`prove_dead`,
    btcl2.federation.death). An RBF replacement (same inputs and payout outputs) must pay a higher fee.
    Returns the txids signed before for its withdrawals or inputs: the payouts `p` supersedes, recorded
    so that a later payout is checked against the whole line (empty when there were none).
    """
    txid = p.tx.txid
    if records.signed(txid) is not None:
        return ()  # signing the very same transaction again adds no spend
    direct = {records.by_ref(i.ref) for i in p.items} | {records.by_input(t.prevout) for t in p.tx.vin}
    direct.discard(None)
    known = {t for t in direct if t is not None}
    inputs = {t.prevout for t in p.tx.vin}
    refs = {i.ref for i in p.items}
    for old_txid, old in sorted(_lineage(records, known).items()):
        if _is_replacement(p, old) and p.fee <= old.fee:
            raise ConflictingPayout(
                f"replacement of {old_txid[::-1].hex()} must pay more than its fee {old.fee}, pays {p.fee}"
            )
        if inputs & {t.prevout for t in old.tx.vin} or not refs & set(
            decode_tag(old.tx.vout[-1].script_pubkey) or ()
        ):
            continue
        if prove_dead(old) is None:
            raise ConflictingPayout(
                f"payout {old_txid[::-1].hex()} was signed for these withdrawals; this transaction spends "
                "none of its inputs (so both could confirm) and it is not provably dead (a conflicting spend "
                "at least K blocks deep on this signer's node)"
            )
    return tuple(sorted(known))
