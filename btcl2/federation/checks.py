"""The rules a signer applies before it signs a payout (docs/PROTOCOL.md, "Federation"), as guard clauses.

Everything is checked against the signer's own views (its Bitcoin node, its EVM node, its own replay of
Bitcoin) and its own record of what it signed; nothing the coordinator says is believed except the
transaction itself, whose every claim is checked here.
"""

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
    UnknownWithdrawal,
    WrongPayout,
)
from btcl2.federation.payout import ParsedPayout, PayoutItem, WithdrawalKind, WithdrawalRef, min_change
from btcl2.federation.store import SignedPayout
from btcl2.federation.views import L2Snapshot, Utxo

MIN_RELAY_FEE_RATE = 1
"""sat/vB: Bitcoin Core's default minimum relay fee; a payout below it would never propagate."""


@dataclass(frozen=True, slots=True)
class SignerPolicy:
    """A signer's limits."""

    max_fee_rate: int = 100
    """Most sat/vB it signs."""
    max_fee_sats: int = 1_000_000
    """Most absolute fee per payout."""
    min_input_confirmations: int = 1
    """Confirmations each spent federation output needs."""


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


def check_inputs(p: ParsedPayout, views: Views, params: Params, policy: SignerPolicy) -> None:
    """Every input is an unspent, confirmed federation output of the declared amount; none is superfluous."""
    for txin, amount in zip(p.tx.vin, p.amounts, strict=True):
        where = f"{txin.prevout.txid_hex}:{txin.prevout.vout}"
        utxo = views.utxo(txin.prevout)
        if utxo is None:
            raise InputNotUnspent(f"input {where} is not an unspent confirmed output on this signer's node")
        if utxo.script_pubkey != params.federation_script_pubkey:
            raise NotFederationInput(f"input {where} does not pay the federation script")
        if utxo.amount != amount:
            raise NotFederationInput(f"input {where} holds {utxo.amount} sats, the request says {amount}")
        if utxo.confirmations < policy.min_input_confirmations:
            raise InputNotUnspent(f"input {where} has {utxo.confirmations} confirmations")
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


def check_history(p: ParsedPayout, records: Records) -> None:
    """Never a second transaction for a withdrawal or input, except the same one or an RBF replacement of it.

    A replacement spends exactly the same inputs, pays exactly the same outputs to the same withdrawals,
    and pays a higher fee (a smaller change).
    """
    txid = p.tx.txid
    prior = {records.by_ref(i.ref) for i in p.items} | {records.by_input(t.prevout) for t in p.tx.vin}
    prior.discard(None)
    if not prior or prior == {txid}:
        return
    if len(prior) > 1:
        raise ConflictingPayout(
            f"withdrawals or inputs were signed before in {len(prior)} other payouts: "
            + ", ".join(sorted(t[::-1].hex() for t in prior if t))
        )
    (old_txid,) = prior
    assert old_txid is not None
    old = records.signed(old_txid)
    if old is None:
        raise ConflictingPayout(f"record of payout {old_txid[::-1].hex()} is missing")
    same_inputs = [i.prevout for i in old.tx.vin] == [i.prevout for i in p.tx.vin]
    n = len(p.items)
    same_payouts = old.tx.vout[:n] == p.tx.vout[:n] and old.tx.vout[-1] == p.tx.vout[-1]
    if not (same_inputs and same_payouts):
        raise ConflictingPayout(
            f"payout {old_txid[::-1].hex()} was signed for these withdrawals or inputs; this transaction "
            "is not a replacement of it (other inputs or outputs)"
        )
    if p.fee <= old.fee:
        raise ConflictingPayout(
            f"replacement of {old_txid[::-1].hex()} must pay more than its fee {old.fee}, pays {p.fee}"
        )
