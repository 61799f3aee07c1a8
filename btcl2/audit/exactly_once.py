"""Exactly-once: each deposit outpoint credited once and to one chain, each withdrawal paid once.

Pure judgement over what the audit collected from the chains: the L2 credits of the replayed batches, the
Bridge's Minted and PayoutConfirmed events, and the federation payouts found on Bitcoin's best chain.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from btcl2.bitcoin.tx import OutPoint
from btcl2.federation.payout import WithdrawalRef


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One broken invariant, named so an operator can find it on the chains."""

    kind: str
    """credited-twice, minted-twice, credited-on-two-chains, paid-twice, payout-mismatch,
    paid-unknown, conservation, replay."""
    subject: str
    """The outpoint (txid:vout), the withdrawal ("l2:0x…", "evm:N"), or the equation."""
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
    confirmed: tuple[tuple[int, str], ...]
    """(EVM withdrawal id, Bitcoin txid hex) of every PayoutConfirmed event."""
    requested: frozenset[WithdrawalRef]
    """Every withdrawal requested: L2 withdrawals replayed, Bridge burns."""


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
        if ref not in found.requested:
            out.append(Discrepancy("paid-unknown", ref.text, f"paid by {txids[0]} but never requested"))
    seen: dict[int, str] = {}
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
    return out
