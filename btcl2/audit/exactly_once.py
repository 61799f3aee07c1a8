"""Exactly-once: each deposit outpoint credited once and to one chain, each withdrawal paid once.

Pure judgement over what the audit collected from the chains: the L2 credits of the replayed batches, the
Bridge's Minted and PayoutConfirmed events, and the federation payouts found on Bitcoin's best chain.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from btcl2.bitcoin.tx import OutPoint
from btcl2.federation.payout import WithdrawalRef


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One broken invariant, named so an operator can find it on the chains."""

    kind: str
    """credited-twice, minted-twice, credited-on-two-chains, paid-twice, payout-mismatch, paid-unknown,
    paid-wrong, confirmed-unpaid, conservation, replay, attestation-conflict (btcl2/audit/attestations.py)."""
    subject: str
    """The outpoint (txid:vout), the withdrawal ("l2:0x…", "evm:0x…"), or the equation."""
    detail: str
    """What was found, with the transactions involved."""

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Findings:
    """What the chains say happened, as the audit read it."""

    l2_credits: tuple[OutPoint, ...]
    """Deposit outpoints credited by the replayed batches, once per credit."""
    minted: tuple[OutPoint, ...]
    """Deposit outpoints of the Bridge's Minted events, once per event."""
    payouts: tuple[tuple[str, tuple[WithdrawalRef, ...]], ...]
    """(txid hex, withdrawals it pays) of every federation payout on Bitcoin's best chain."""
    confirmed: tuple[tuple[bytes, str], ...]
    """(EVM withdrawal id, Bitcoin txid hex) of every PayoutConfirmed event."""
    requested: frozenset[WithdrawalRef]
    """Every withdrawal requested: L2 withdrawals replayed, Bridge burns."""
    owed: Mapping[WithdrawalRef, tuple[int, bytes]] = field(default_factory=dict)
    """(amount, script) each requested withdrawal is owed, where known."""
    paid_outputs: tuple[tuple[str, WithdrawalRef, int, bytes], ...] = ()
    """(payout txid hex, withdrawal, amount, script) of every payout output on Bitcoin's best chain."""
    withdrawal_fee: int = 0
    """What the federation keeps of each withdrawal: an output pays the amount owed less this."""


def _twice(items: Iterable[OutPoint]) -> list[OutPoint]:
    return sorted((op for op, n in Counter(items).items() if n > 1), key=lambda o: (o.txid, o.vout))


def _outpoint(op: OutPoint) -> str:
    return f"{op.txid_hex}:{op.vout}"


def judge(found: Findings) -> list[Discrepancy]:
    """Every exactly-once violation in `found`, deposits first, then withdrawals; [] when it holds."""
    out = [
        Discrepancy("credited-twice", _outpoint(op), "credited by more than one L2 batch")
        for op in _twice(found.l2_credits)
    ]
    out += [
        Discrepancy("minted-twice", _outpoint(op), "more than one Minted event on the Bridge")
        for op in _twice(found.minted)
    ]
    both = set(found.l2_credits) & set(found.minted)
    out += [
        Discrepancy("credited-on-two-chains", _outpoint(op), "credited on the L2 and minted on the EVM")
        for op in sorted(both, key=lambda o: (o.txid, o.vout))
    ]
    paid_by: dict[WithdrawalRef, list[str]] = defaultdict(list)
    for txid, refs in found.payouts:
        for ref in refs:
            paid_by[ref].append(txid)
    for ref, txids in sorted(paid_by.items(), key=lambda kv: kv[0].encode()):
        if len(txids) > 1:
            out.append(Discrepancy("paid-twice", ref.text, "paid by " + ", ".join(txids)))
    out += _paid_outputs(found)
    return out + _confirmed(found, paid_by)


def _paid_outputs(found: Findings) -> list[Discrepancy]:
    """Each payout output on its own: paid to no request (e.g. a burn an EVM reorg removed after its payout),
    or paid otherwise than requested. Per withdrawal, so that no one's loss hides in a net sum."""
    out = []
    seen: set[WithdrawalRef] = set()
    for txid, ref, amount, script in found.paid_outputs:
        seen.add(ref)
        paid = f"{amount} sats to script {script.hex()} by {txid}"
        owed = found.owed.get(ref)
        if ref not in found.requested:
            out.append(Discrepancy("paid-unknown", ref.text, f"paid {paid}, but no chain requests it"))
        elif owed is not None and owed != (amount + found.withdrawal_fee, script):
            due = owed[0] - found.withdrawal_fee
            out.append(
                Discrepancy(
                    "paid-wrong",
                    ref.text,
                    f"paid {paid}, owed {due} sats ({owed[0]} less the {found.withdrawal_fee} withdrawal "
                    f"fee) to {owed[1].hex()}",
                )
            )
    for txid, refs in found.payouts:  # payouts whose outputs were not itemised
        for ref in refs:
            if ref not in seen and ref not in found.requested:
                seen.add(ref)
                out.append(Discrepancy("paid-unknown", ref.text, f"paid by {txid} but never requested"))
    return out


def _confirmed(found: Findings, paid_by: Mapping[WithdrawalRef, list[str]]) -> list[Discrepancy]:
    """The Bridge's PayoutConfirmed records against Bitcoin."""
    out = []
    on_chain = {txid: refs for txid, refs in found.payouts}
    seen: dict[bytes, str] = {}
    for evm_id, txid in found.confirmed:
        ref = WithdrawalRef.evm(evm_id)
        if evm_id in seen:
            out.append(Discrepancy("paid-twice", ref.text, f"PayoutConfirmed twice ({seen[evm_id]}, {txid})"))
        seen[evm_id] = txid
        on_bitcoin = paid_by.get(ref, [])
        # A payout reorged out of Bitcoin (and not yet mined again) is in flight, not a double payment;
        # a Bitcoin payout by a different transaction than the Bridge recorded is.
        if on_bitcoin and txid not in on_bitcoin:
            out.append(
                Discrepancy(
                    "payout-mismatch",
                    ref.text,
                    f"Bridge records {txid}, Bitcoin paid {', '.join(on_bitcoin)}",
                )
            )
        elif txid in on_chain and ref not in on_chain[txid]:
            # The transaction the Bridge names is on Bitcoin and pays other withdrawals: the owner of this
            # one is shown "paid" and received nothing.
            out.append(
                Discrepancy(
                    "confirmed-unpaid",
                    ref.text,
                    f"Bridge records payout {txid}, which pays {', '.join(r.text for r in on_chain[txid])} "
                    "and not this withdrawal: its owner is unpaid",
                )
            )
    return out
