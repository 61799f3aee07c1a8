"""The replay report: one JSON document (`--report`, `--json`) and its human summary."""

from dataclasses import asdict
from typing import Any

from btcl2.derive.diagnose import Finding
from btcl2.derive.frames import AnchorRef
from btcl2.derive.pipeline import Outcome, Rejection


def _rejection(r: Rejection) -> dict[str, Any]:
    return {
        "batch": r.batch_number,
        "anchors": [asdict(a) for a in r.anchors],
        **asdict(r.finding),
    }


def report_json(out: Outcome, elapsed: float) -> dict[str, Any]:
    """Everything the run found, as JSON-ready values (hashes in hex, amounts in satoshis)."""
    p = out.progress
    txs = p.transfers + p.withdrawals
    head = out.state.head
    return {
        "ok": out.divergence is None,
        "from_height": out.from_height,
        "tip_height": p.tip,
        "scanned_to_height": p.height,
        "blocks": p.blocks,
        "batches": len(out.applied),
        "last_batch": None if head is None else head.number,
        "last_batch_hash": None if head is None else head.hash.hex(),
        "final_state_root": out.state.root.hex(),
        "transactions": txs,
        "transfers": p.transfers,
        "withdrawals": p.withdrawals,
        "deposits_credited": p.deposits_credited,
        "deposits_seen": out.deposits_seen,
        "deposits_rejected": out.rejected_deposits,
        "deposited_sats": out.state.deposited,
        "withdrawn_sats": out.state.withdrawn,
        "elapsed_seconds": round(elapsed, 3),
        "execute_seconds": round(p.execute_seconds, 3),
        "transactions_per_second": round(txs / p.execute_seconds, 1) if p.execute_seconds else None,
        "repeated_anchors": out.repeats,
        "reorg_restarts": out.resets,
        "applied": [{**asdict(b), "anchors": [asdict(a) for a in b.anchors]} for b in out.applied],
        "superseded": [_rejection(r) for r in out.superseded],
        "conflicts": [_rejection(r) for r in out.conflicts],
        "stale": [_rejection(r) for r in out.stale],
        "unauthenticated": [_rejection(r) for r in out.unauthenticated],
        "rejected": [_rejection(r) for r in out.rejected],
        "divergence": None if out.divergence is None else _rejection(out.divergence),
        **_attestations_json(out),
    }


def _attestations_json(out: Outcome) -> dict[str, Any]:
    """Attested vs unattested batches and invalid attestation records (docs/PROTOCOL.md, "Attestations")."""
    report = out.attestations
    if report is None:
        return {"attested": [], "unattested": [], "attestation_failures": []}
    return {
        "attested": [
            {"batch": n, "txid": s.txid, "height": s.height, "signers": s.attestation.signers}
            for n, s in sorted(report.attested.items())
        ],
        "unattested": list(report.unattested),
        "attestation_failures": [asdict(f) for f in report.failures],
        "stale_attestations": report.stale,
        "attestation_verify_seconds": round(report.verify_seconds, 3),
    }


def describe(r: Rejection) -> str:
    """One line naming the batch, what is wrong, the transaction, expected vs got, and the anchors."""
    f = r.finding
    parts = [f"batch {r.batch_number if r.batch_number is not None else '?'}: {f.error}: {f.message}"]
    if f.transaction is not None:
        parts.append(f"transaction {f.transaction}")
    if f.expected is not None or f.got is not None:
        parts.append(f"expected {f.expected}, got {f.got}")
    if r.anchors:
        parts.append("anchor " + ", ".join(f"{a.txid} (height {a.height})" for a in r.anchors))
    return "; ".join(parts)


def summary(doc: dict[str, Any]) -> str:
    """The text printed at the end of a run."""
    lines = [
        f"replay {'OK' if doc['ok'] else 'DIVERGED'}: blocks {doc['from_height']}..{doc['scanned_to_height']}"
        f" (tip {doc['tip_height']})",
        f"batches {doc['batches']}, transactions {doc['transactions']} (transfers {doc['transfers']},"
        f" withdrawals {doc['withdrawals']}), deposits credited {doc['deposits_credited']}",
        f"final state root {doc['final_state_root']}",
        f"time {doc['elapsed_seconds']:.2f} s, execution {doc['execute_seconds']:.2f} s,"
        f" {doc['transactions_per_second'] or 0:.0f} transactions/s",
    ]
    if doc.get("attested") is not None:
        lines.append(f"attested batches {len(doc['attested'])}, unattested {len(doc['unattested'])}")
    if doc["repeated_anchors"]:
        lines.append(f"repeated anchors ignored: {doc['repeated_anchors']}")
    if doc["unauthenticated"]:
        first = doc["unauthenticated"][0]["anchors"][0]["txid"]
        lines.append(
            f"warning: unauthenticated anchors ignored: {len(doc['unauthenticated'])} (first {first})"
        )
    for item in doc["superseded"]:
        lines.append(f"warning: superseded anchor: {_line(item)}")
    for item in doc["conflicts"]:
        lines.append(f"warning: conflicting anchor: {_line(item)}")
    for item in doc.get("stale", []):
        lines.append(f"stale anchor (its L1 origin was reorged out; sealed again): {_line(item)}")
    if doc["divergence"] is not None:
        lines.append(f"DIVERGENCE: {_line(doc['divergence'])}")
        for item in doc["rejected"][1:]:
            lines.append(f"also rejected: {_line(item)}")
    return "\n".join(lines)


def _line(item: dict[str, Any]) -> str:
    finding = Finding(item["error"], item["message"], item["transaction"], item["expected"], item["got"])
    anchors = tuple(AnchorRef(a["txid"], a["height"]) for a in item["anchors"])
    return describe(Rejection(item["batch"], anchors, finding))
