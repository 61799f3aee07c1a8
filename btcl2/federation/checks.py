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
from btcl2.federation.payout import ParsedPayout, PayoutItem, WithdrawalKind, WithdrawalRef, min_change
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
    payouts = sum(i.amount for i in p.items)
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
            raise WrongPayout(f"{ref.text} is owed {known.amount} sats, the payout pays {item.amount}")
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


def check_history(
    p: ParsedPayout, records: Records, prove_dead: Callable[[SignedPayout], str | None]
) -> tuple[bytes, ...]:
    """Never a second live transaction for a withdrawal or input: only the same one, an RBF replacement of
    it, or a rebuild of payouts that are provably dead.

    A replacement spends exactly the same inputs, pays exactly the same outputs to the same withdrawals,
    and pays a higher fee (a smaller change). Any other transaction is signed only when `prove_dead` (the
    signer's own node, btcl2.federation.death) shows every payout signed before for its withdrawals or
    inputs can never confirm. Returns the txids of those dead predecessors (empty otherwise).
    """
    txid = p.tx.txid
    if records.signed(txid) is not None:
        return ()  # signing the very same transaction again adds no spend
    prior = {records.by_ref(i.ref) for i in p.items} | {records.by_input(t.prevout) for t in p.tx.vin}
    prior.discard(None)
    if not prior:
        return ()
    olds: dict[bytes, SignedPayout] = {}
    for old_txid in sorted(t for t in prior if t is not None):
        old = records.signed(old_txid)
        if old is None:
            raise ConflictingPayout(f"record of payout {old_txid[::-1].hex()} is missing")
        olds[old_txid] = old
    if len(olds) == 1:
        ((old_txid, old),) = olds.items()
        if _is_replacement(p, old):
            if p.fee <= old.fee:
                raise ConflictingPayout(
                    f"replacement of {old_txid[::-1].hex()} must pay more than its fee {old.fee}, pays {p.fee}"
                )
            return ()
    for old_txid, old in olds.items():
        reason = prove_dead(old)
        if reason is None:
            raise ConflictingPayout(
                f"payout {old_txid[::-1].hex()} was signed for these withdrawals or inputs; this transaction "
                "is neither an RBF replacement of it (same inputs and outputs) nor a rebuild after its death "
                "(a conflicting spend at least K blocks deep on this signer's node)"
            )
    return tuple(olds)
