"""Where a deposit, L2 transaction, batch or withdrawal is, across Bitcoin, the L2 and the EVM: pure assembly.

Each lifecycle is built from the plain JSON answers the chains give (getrawtransaction, l2_getDeposit,
l2_getTransaction, l2_getBatch with its "anchor", the coordinator's withdrawal status), so the same
functions serve `btcl2 status`, the explorer page and the unit tests (which feed them canned answers).
A lifecycle is a list of stages in their order; its status is the last stage reached.
"""

from dataclasses import dataclass, field
from typing import Any

from btcl2.errors import InvalidInput

BITCOIN, L2, EVM = "bitcoin", "l2", "evm"


class BadIdentifier(InvalidInput):
    """Raised when a status query is none of: txid[:vout], 0x<L2 tx hash>, batch number, l2:/evm: id."""


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed identifier."""

    kind: str
    """deposit, tx, batch or withdrawal."""
    txid: str | None = None
    """Deposit txid (display order hex) or L2 tx hash (0x hex)."""
    vout: int | None = None
    """Deposit output, if given."""
    number: int | None = None
    """Batch number."""
    ref: str | None = None
    """Withdrawal reference text (l2:0x… or evm:0x…)."""


def parse_query(text: str) -> Query:
    """Read a status identifier: `<txid>[:<vout>]` (deposit), `0x<64 hex>` (L2 transaction or withdrawal),
    `<number>` or `batch:<number>` (batch), `l2:0x<64 hex>` or `evm:0x<64 hex>` (withdrawal)."""
    t = text.strip()
    head, sep, tail = t.partition(":")
    if sep and head == "l2":
        return Query("withdrawal", ref=t)
    if sep and head == "evm" and tail[:2].lower() == "0x" and len(tail) == 66 and _is_hex(tail[2:]):
        return Query("withdrawal", ref=t)  # burn ids are hashes: a number is an old counter, refused
    if sep and head == "batch" and tail.isdigit():
        return Query("batch", number=int(tail))
    if t.isdigit() and len(t) < 20:
        return Query("batch", number=int(t))
    if t[:2].lower() == "0x" and len(t) == 66 and _is_hex(t[2:]):
        return Query("tx", txid="0x" + t[2:].lower())
    if len(head) == 64 and _is_hex(head) and (not sep or (tail.isdigit() and int(tail) < 2**32)):
        return Query("deposit", txid=head.lower(), vout=int(tail) if sep else None)
    raise BadIdentifier(
        f"cannot read {text!r}: expected <txid>[:<vout>], 0x<L2 tx hash>, <batch number>, l2:0x<hash> or evm:0x<id>"
    )


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in s)


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of a lifecycle on one chain."""

    chain: str
    """bitcoin, l2 or evm."""
    name: str
    """What happens at this step (seen, confirmed, credited, sealed, anchored, final, minted, paid, ...)."""
    done: bool
    """Whether it has happened."""
    time: int | None = None
    """Unix time it happened (block time on Bitcoin, batch timestamp on the L2), when known."""
    txid: str | None = None
    """The transaction on that chain (Bitcoin txid, L2 tx hash, EVM tx hash), or the batch's anchor txids
    joined by commas."""
    confirmations: int | None = None
    """Confirmations on that chain, when it counts them."""
    detail: str | None = None
    """A few words more (batch number, k/K, reason)."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this stage."""
        return {
            "chain": self.chain,
            "name": self.name,
            "done": self.done,
            "time": self.time,
            "txid": self.txid,
            "confirmations": self.confirmations,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """What `btcl2 status` prints and the explorer shows."""

    kind: str
    """deposit, transfer, withdrawal or batch."""
    id: str
    """The identifier, normalised."""
    status: str
    """The last stage reached (or rejected / unknown)."""
    stages: tuple[Stage, ...]
    """Every stage, reached or not, in order."""
    info: dict[str, Any] = field(default_factory=dict)
    """Fields of the object itself (amount, recipient, batch, ...)."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this lifecycle."""
        return {
            "kind": self.kind,
            "id": self.id,
            "status": self.status,
            "stages": [s.to_json() for s in self.stages],
            **self.info,
        }


def _status(stages: list[Stage], before: str) -> str:
    reached = [s.name for s in stages if s.done]
    return reached[-1] if reached else before


def anchor_stages(batch: dict[str, Any] | None, f_confs: int, anchor_time: int | None = None) -> list[Stage]:
    """The Bitcoin stages of a batch (anchored: every chunk >= 1 confirmation; final: >= F) from l2_getBatch
    with its "anchor" (None when the sequencer runs without its poster: then nothing is claimed)."""
    anchor = None if batch is None else batch.get("anchor")
    if anchor is None:
        return [Stage(BITCOIN, "anchored", False, detail="anchoring unknown (sequencer without --post)")]
    txids = ",".join(anchor.get("txids") or ()) or None
    confs = int(anchor.get("confirmations") or 0)
    status = anchor.get("status")
    anchored = status in ("anchored", "final")
    return [
        Stage(
            BITCOIN,
            "anchored",
            anchored,
            anchor_time if anchored else None,
            txids,
            confs,
            "broadcast, unconfirmed" if status == "broadcast" else None,
        ),
        Stage(BITCOIN, "final", status == "final", None, txids, confs, f"{min(confs, f_confs)}/{f_confs}"),
    ]


def deposit_lifecycle(
    bitcoin: dict[str, Any] | None,
    l2_deposit: dict[str, Any] | None,
    batch: dict[str, Any] | None,
    k_confs: int,
    f_confs: int,
    anchor_time: int | None = None,
    evm_mint: dict[str, Any] | None = None,
    evm_asked: bool = True,
) -> Lifecycle:
    """A deposit from: Bitcoin's view of it ({txid, vout, confirmations, blocktime, kind, recipient,
    amount_sats, status}; None when Bitcoin does not know the transaction), the sequencer's l2_getDeposit
    (None when it does not know it), the batch that credited it (l2_getBatch) and, for EVM deposits, the
    Bridge's mint ({evm_tx, evm_block} or None); evm_asked=False when no EVM node was asked, so the minted
    stage says it is unknown rather than not reached."""
    if bitcoin is None:
        return Lifecycle("deposit", "?", "unknown", ())
    ident = f"{bitcoin['txid']}:{bitcoin.get('vout')}"
    confs = int(bitcoin.get("confirmations") or 0)
    kind = bitcoin.get("kind") or (l2_deposit or {}).get("kind")
    info = {
        "txid": bitcoin["txid"],
        "vout": bitcoin.get("vout"),
        "amount": bitcoin.get("amount_sats"),
        "recipient": bitcoin.get("recipient"),
        "destination": kind,
        "batch": None if l2_deposit is None else l2_deposit.get("batch"),
    }
    block_time = bitcoin.get("blocktime")
    stages = [
        Stage(
            BITCOIN,
            "seen",
            True,
            block_time,
            bitcoin["txid"],
            confs,
            "in the mempool" if confs == 0 else None,
        ),
        Stage(
            BITCOIN,
            "confirmed",
            confs >= k_confs,
            None,
            bitcoin["txid"],
            confs,
            f"{min(confs, k_confs)}/{k_confs}",
        ),
    ]
    if bitcoin.get("status") == "rejected" or (l2_deposit or {}).get("status") == "rejected":
        reason = bitcoin.get("reason") or (l2_deposit or {}).get("reason")
        return Lifecycle(
            "deposit", ident, "rejected", (*stages, Stage(L2, "rejected", True, detail=reason)), info
        )
    if kind == "evm":
        minted = evm_mint is not None and evm_mint.get("evm_tx") is not None
        tx = None if evm_mint is None else evm_mint.get("evm_tx")
        block = None if evm_mint is None else evm_mint.get("evm_block")
        detail = None if block is None else f"block {block}"
        if not evm_asked:
            detail = "EVM not asked (give --evm-rpc and --bridge, or run on a devnet)"
        stages.append(Stage(EVM, "minted", minted, None, tx, None, detail))
        return Lifecycle("deposit", ident, _status(stages, "seen"), tuple(stages), info)
    credited = l2_deposit is not None and l2_deposit.get("status") == "credited"
    number = None if l2_deposit is None else l2_deposit.get("batch")
    stages.append(
        Stage(
            L2,
            "credited",
            credited,
            None if batch is None else batch.get("timestamp"),
            None if batch is None else batch.get("hash"),
            None,
            None if number is None else f"batch {number}",
        )
    )
    if credited:
        stages += anchor_stages(batch, f_confs, anchor_time)
    return Lifecycle("deposit", ident, _status(stages, "seen"), tuple(stages), info)


def tx_lifecycle(
    tx: dict[str, Any],
    batch: dict[str, Any] | None,
    f_confs: int,
    anchor_time: int | None = None,
    payout: dict[str, Any] | None = None,
) -> Lifecycle:
    """An L2 transaction from l2_getTransaction, the batch holding it (l2_getBatch) and, for a withdrawal,
    the coordinator's status of its payout (None when unknown)."""
    kind = str(tx.get("type")) if tx.get("type") in ("withdrawal", "exit") else "transfer"
    info = {
        "from": tx.get("from"),
        "to": tx.get("to"),
        "amount": tx.get("amount"),
        "fee": tx.get("fee"),
        "nonce": tx.get("nonce"),
        "batch": tx.get("batch"),
        "index": tx.get("index"),
    }
    stages = [Stage(L2, "accepted", True, None, tx["txHash"])]
    if tx.get("status") == "rejected":
        stages.append(Stage(L2, "rejected", True, detail=tx.get("reason")))
        return Lifecycle(kind, tx["txHash"], "rejected", tuple(stages), info)
    sealed = tx.get("batch") is not None
    stages.append(
        Stage(
            L2,
            "sealed",
            sealed,
            None if batch is None else batch.get("timestamp"),
            None if batch is None else batch.get("hash"),
            None,
            None if not sealed else f"batch {tx['batch']} #{tx.get('index')}",
        )
    )
    if sealed:
        stages += anchor_stages(batch, f_confs, anchor_time)
    if kind == "withdrawal":
        stages.append(payout_stage(payout))
    status = _status(stages, "pending")
    return Lifecycle(kind, tx["txHash"], "pending" if status == "accepted" else status, tuple(stages), info)


def payout_stage(payout: dict[str, Any] | None) -> Stage:
    """The Bitcoin payout of a withdrawal from the coordinator's /withdrawal/<ref> answer."""
    if payout is None:
        return Stage(BITCOIN, "paid", False, detail="no payout yet")
    paid = payout.get("status") == "confirmed"
    detail = payout.get("status")
    if detail in ("signing", "signed"):
        detail = f"{detail} {payout.get('signatures')}/{payout.get('m')}"
    if payout.get("reconcile"):
        detail = f"{detail}; reconcile: {payout['reconcile']}"
    return Stage(BITCOIN, "paid", paid, payout.get("blocktime"), payout.get("txid"), None, detail)


def batch_lifecycle(batch: dict[str, Any], f_confs: int, anchor_time: int | None = None) -> Lifecycle:
    """A batch from l2_getBatch (with its "anchor")."""
    info = {
        "number": batch["number"],
        "hash": batch.get("hash"),
        "postStateRoot": batch.get("postStateRoot"),
        "transactionsRoot": batch.get("transactionsRoot"),
        "transactions": len(batch.get("transactions") or ()),
        "deposits": len(batch.get("deposits") or ()),
        "l1OriginHeight": batch.get("l1OriginHeight"),
    }
    stages = [
        Stage(L2, "sealed", True, batch.get("timestamp"), batch.get("hash"), None, f"batch {batch['number']}")
    ]
    stages += anchor_stages(batch, f_confs, anchor_time)
    return Lifecycle("batch", str(batch["number"]), _status(stages, "sealed"), tuple(stages), info)


def evm_withdrawal_lifecycle(ref: str, payout: dict[str, Any] | None) -> Lifecycle:
    """A Bridge burn, as far as the coordinator knows it (requested, signed, broadcast, paid)."""
    stages = [
        Stage(EVM, "requested", payout is not None, detail=None if payout else "unknown to the coordinator"),
        payout_stage(payout),
    ]
    return Lifecycle("withdrawal", ref, _status(stages, "unknown"), tuple(stages))


def render_text(life: Lifecycle) -> list[str]:
    """The lines `btcl2 status` prints: a headline, then one line per stage."""
    import time as _time

    lines = [f"{life.kind} {life.id}: {life.status}"]
    for key in ("amount", "recipient", "from", "to", "batch"):
        if life.info.get(key) is not None:
            lines.append(f"  {key}: {life.info[key]}")
    for s in life.stages:
        mark = "x" if s.done else " "
        when = _time.strftime("%Y-%m-%d %H:%M:%S", _time.gmtime(s.time)) + "Z" if s.time else ""
        extra = [p for p in (s.detail, None if s.confirmations is None else f"{s.confirmations} conf") if p]
        line = f"  [{mark}] {s.chain:<7} {s.name:<9} {when:<20} {', '.join(extra)}"
        if s.txid:
            line += f"\n        tx: {s.txid}"
        lines.append(line.rstrip())
    return lines
