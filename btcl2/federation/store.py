"""LevelDB records of the federation: what a signer signed, and the coordinator's payout journal.

Signer (prefixes in btcl2/storage/schema.py):

    Fs + txid      -> fee u64 LE || unsigned payout encoding      every payout this signer signed
    Fr + ref (33)  -> txid                                        the last payout signed for a withdrawal
    Fi + outpoint  -> txid                                        the last payout signed spending an input
    Fm             -> height u32 BE                               record rebuilt from the chain (signer.py)
    Fo + txid      -> JSON PayoutOrigins                          tip and input origins seen when signing
    Fb + txid      -> txid || ...                                 the payouts signed before for its withdrawals
                                                                  or inputs, which it supersedes (if any)

Coordinator:

    Cm + b"active" -> payout number u64 BE                        the payout in flight (absent: none)
    Cm + b"next"   -> next payout number u64 BE
    Cp + number    -> JSON journal entry (PayoutJournal)          one per payout, rewritten at each step;
                                                                  a DEAD entry names the payout rebuilding it
    Cw + ref (33)  -> payout number u64 BE                        which payout carries a withdrawal
    Cd + ref (33)  -> txid of the payout that paid it (F confirmations)

Every change is one atomic, synced write.
"""

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from btcl2.bitcoin.tx import OutPoint, Tx
from btcl2.errors import Critical
from btcl2.federation.death import PayoutOrigins
from btcl2.federation.payout import PayoutItem, WithdrawalRef, unsigned
from btcl2.storage import schema as S
from btcl2.storage.db import SIGNER_RECOVERY, Database


@dataclass(frozen=True, slots=True)
class SignedPayout:
    """A payout a signer signed."""

    tx: Tx
    """The unsigned transaction."""
    fee: int
    """Its fee."""

    def encode(self) -> bytes:
        """fee u64 LE || transaction encoding."""
        return struct.pack("<Q", self.fee) + self.tx.encode()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Inverse of encode."""
        return cls(Tx.decode(data[8:]), struct.unpack("<Q", data[:8])[0])


class SignerStore:
    """The signer's memory of what it signed; `record` is atomic and synced before the reply leaves."""

    def __init__(self, path: str | Path) -> None:
        self._db = Database(path, recovery=SIGNER_RECOVERY)

    def signed(self, txid: bytes) -> SignedPayout | None:
        """The payout signed with this txid, if any."""
        raw = self._db.get(S.FED_SIGNED + txid)
        return None if raw is None else SignedPayout.decode(raw)

    def by_ref(self, ref: WithdrawalRef) -> bytes | None:
        """Txid of the last payout signed for `ref`."""
        return self._db.get(S.FED_SIGNED_REF + ref.encode())

    def by_input(self, outpoint: OutPoint) -> bytes | None:
        """Txid of the last payout signed that spends `outpoint`."""
        return self._db.get(S.FED_SIGNED_INPUT + outpoint.encode())

    def origins(self, txid: bytes) -> PayoutOrigins | None:
        """What this signer saw of the inputs of payout `txid` when it signed it (None for old records)."""
        raw = self._db.get(S.FED_SIGNED_ORIGINS + txid)
        return None if raw is None else PayoutOrigins.from_json(json.loads(raw))

    def supersedes(self, txid: bytes) -> tuple[bytes, ...]:
        """The payouts signed before for the withdrawals or inputs of payout `txid` (fee bumps, conflicting
        replacements, dead payouts it rebuilds)."""
        raw = self._db.get(S.FED_SIGNED_REBUILD + txid) or b""
        return tuple(raw[i : i + 32] for i in range(0, len(raw), 32))

    def record(
        self,
        payout: SignedPayout,
        refs: tuple[WithdrawalRef, ...],
        origins: PayoutOrigins | None = None,
        supersedes: tuple[bytes, ...] = (),
    ) -> None:
        """Remember a signed payout, its withdrawals, inputs, their origins and the payouts it supersedes,
        in one synced write."""
        txid = payout.tx.txid
        with self._db.batch() as wb:
            wb.put(S.FED_SIGNED + txid, payout.encode())
            if origins is not None:
                wb.put(S.FED_SIGNED_ORIGINS + txid, json.dumps(origins.to_json()).encode())
            if supersedes:
                wb.put(S.FED_SIGNED_REBUILD + txid, b"".join(supersedes))
            for ref in refs:
                wb.put(S.FED_SIGNED_REF + ref.encode(), txid)
            for txin in payout.tx.vin:
                wb.put(S.FED_SIGNED_INPUT + txin.prevout.encode(), txid)

    def count(self) -> int:
        """How many payouts were signed."""
        return sum(1 for _ in self._db.iterate(S.FED_SIGNED))

    def rebuilt_height(self) -> int | None:
        """The Bitcoin height the record was rebuilt from the chain up to; None: never (a new database)."""
        raw = self._db.get(S.FED_SIGNER_REBUILT)
        return None if raw is None else int(struct.unpack(">I", raw)[0])

    def rebuild(self, payouts: list[tuple[SignedPayout, tuple[WithdrawalRef, ...]]], height: int) -> None:
        """Record the federation's payouts found on the chain and in the mempool, and mark the record rebuilt,
        in one synced write (a crash half-way leaves it unmarked, and it is rebuilt again)."""
        with self._db.batch() as wb:
            for payout, refs in payouts:
                txid = payout.tx.txid
                wb.put(S.FED_SIGNED + txid, payout.encode())
                for ref in refs:
                    wb.put(S.FED_SIGNED_REF + ref.encode(), txid)
                for txin in payout.tx.vin:
                    wb.put(S.FED_SIGNED_INPUT + txin.prevout.encode(), txid)
            wb.put(S.FED_SIGNER_REBUILT, struct.pack(">I", height))

    def close(self) -> None:
        """Close the database."""
        self._db.close()


# Journal states, in order.
PROPOSED = "proposed"
SIGNED = "signed"
BROADCAST = "broadcast"
CONFIRMED = "confirmed"
DONE = "done"
DEAD = "dead"
"""A payout that can never confirm (btcl2.federation.death); its withdrawals go into a rebuilt payout."""
ABANDONED = "abandoned"
"""A payout never broadcast (fewer than M signatures) that names a withdrawal gone from its chain's final
view; the rest of its withdrawals go into a replacement spending one of its inputs."""
REPLACED = (DEAD, ABANDONED)
"""States whose withdrawals are carried on by another payout."""


@dataclass
class Variant:
    """One version of a payout (the first, or an RBF replacement)."""

    tx: Tx
    """Unsigned."""
    fee: int
    """Its fee."""
    signatures: dict[str, list[str]] = field(default_factory=dict)
    """Federation pubkey hex -> signature hex per input."""
    signed_hex: str | None = None
    """The finalized transaction, once M signatures are in."""

    def to_json(self) -> dict[str, Any]:
        return {
            "tx": self.tx.hex(),
            "fee": self.fee,
            "signatures": self.signatures,
            "signed": self.signed_hex,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Variant":
        return cls(Tx.from_hex(d["tx"]), int(d["fee"]), dict(d["signatures"]), d.get("signed"))


@dataclass
class PayoutJournal:
    """Everything the coordinator knows about one payout, rewritten atomically at every step."""

    number: int
    """Payout sequence number."""
    state: str
    """PROPOSED, SIGNED, BROADCAST, CONFIRMED, DONE; or DEAD, ABANDONED."""
    items: list[PayoutItem]
    """The withdrawals paid."""
    amounts: list[int]
    """Spent output values, in input order."""
    variants: list[Variant]
    """The first transaction and each fee bump; the last one is current."""
    broadcast_height: int | None = None
    """Bitcoin height when the current variant was first sent."""
    confirmed_txid: str | None = None
    """The variant that confirmed (display order)."""
    confirmed_height: int | None = None
    """Its block height."""
    evm_confirmed: list[str] = field(default_factory=list)
    """EVM withdrawal ids (hex) whose confirmPayout is done."""
    reconcile: dict[str, str] = field(default_factory=dict)
    """Ref text -> why it could not be confirmed on the Bridge although Bitcoin paid it (e.g. the burn
    vanished in an EVM reorg): an operator must reconcile it."""
    requested_at: float = 0.0
    """When the payout was proposed (epoch seconds)."""
    broadcast_at: float | None = None
    """When it was first broadcast."""
    origins: PayoutOrigins | None = None
    """The inputs' origins seen when it was built (to prove its death later)."""
    dead_reason: str | None = None
    """Why it can never confirm (state DEAD), or why it was abandoned (state ABANDONED)."""
    vanished: list[str] = field(default_factory=list)
    """Ref texts of the withdrawals gone from their chain's final view (state ABANDONED): not carried on."""
    predecessor: int | None = None
    """The dead payout this one rebuilds."""
    rebuilt_as: int | None = None
    """The payout that rebuilt this dead one."""

    @property
    def current(self) -> Variant:
        """The variant being signed or broadcast."""
        return self.variants[-1]

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "items": [{"ref": i.ref.text, "script": i.script.hex(), "amount": i.amount} for i in self.items],
            "amounts": self.amounts,
            "variants": [v.to_json() for v in self.variants],
            "broadcast_height": self.broadcast_height,
            "confirmed_txid": self.confirmed_txid,
            "confirmed_height": self.confirmed_height,
            "evm_confirmed": self.evm_confirmed,
            "reconcile": self.reconcile,
            "requested_at": self.requested_at,
            "broadcast_at": self.broadcast_at,
            "origins": None if self.origins is None else self.origins.to_json(),
            "dead_reason": self.dead_reason,
            "predecessor": self.predecessor,
            "rebuilt_as": self.rebuilt_as,
            "vanished": self.vanished,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PayoutJournal":
        items = [
            PayoutItem(WithdrawalRef.parse(i["ref"]), bytes.fromhex(i["script"]), int(i["amount"]))
            for i in d["items"]
        ]
        return cls(
            number=int(d["number"]),
            state=str(d["state"]),
            items=items,
            amounts=[int(a) for a in d["amounts"]],
            variants=[Variant.from_json(v) for v in d["variants"]],
            broadcast_height=d.get("broadcast_height"),
            confirmed_txid=d.get("confirmed_txid"),
            confirmed_height=d.get("confirmed_height"),
            evm_confirmed=[str(x) for x in d.get("evm_confirmed", [])],
            reconcile={str(k): str(v) for k, v in d.get("reconcile", {}).items()},
            requested_at=float(d.get("requested_at", 0.0)),
            broadcast_at=d.get("broadcast_at"),
            origins=None if d.get("origins") is None else PayoutOrigins.from_json(d["origins"]),
            dead_reason=d.get("dead_reason"),
            predecessor=d.get("predecessor"),
            rebuilt_as=d.get("rebuilt_as"),
            vanished=[str(x) for x in d.get("vanished", [])],
        )


def _u64(n: int) -> bytes:
    return struct.pack(">Q", n)


class CoordinatorStore:
    """The coordinator's journal: at most one payout in flight, every step one synced write."""

    def __init__(self, path: str | Path) -> None:
        self._db = Database(path)

    def active(self) -> PayoutJournal | None:
        """The payout in flight, None when idle."""
        raw = self._db.get(S.FED_COORD_META + b"active")
        return None if raw is None else self.payout(struct.unpack(">Q", raw)[0])

    def payout(self, number: int) -> PayoutJournal | None:
        """A journal entry by number."""
        raw = self._db.get(S.FED_COORD_PAYOUT + _u64(number))
        if raw is None:
            return None
        try:
            return PayoutJournal.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise Critical(f"corrupt payout journal entry {number}: {exc}") from exc

    def payout_of(self, ref: WithdrawalRef) -> PayoutJournal | None:
        """The latest payout carrying `ref`."""
        raw = self._db.get(S.FED_COORD_WITHDRAWAL + ref.encode())
        return None if raw is None else self.payout(struct.unpack(">Q", raw)[0])

    def paid(self, ref: WithdrawalRef) -> bytes | None:
        """Txid (internal order) of the payout that paid `ref` with F confirmations."""
        return self._db.get(S.FED_COORD_PAID + ref.encode())

    def propose(
        self,
        items: list[PayoutItem],
        amounts: list[int],
        tx: Tx,
        fee: int,
        now: float,
        origins: PayoutOrigins | None = None,
        dead: PayoutJournal | None = None,
    ) -> PayoutJournal:
        """Journal a new payout as the one in flight (before any signer sees it); with `dead` (a DEAD or
        ABANDONED entry), it carries on that one's withdrawals and both entries are written in one batch."""
        raw = self._db.get(S.FED_COORD_META + b"next")
        number = 0 if raw is None else struct.unpack(">Q", raw)[0]
        entry = PayoutJournal(
            number, PROPOSED, items, amounts, [Variant(unsigned(tx), fee)], requested_at=now, origins=origins
        )
        with self._db.batch() as wb:
            if dead is not None:
                assert dead.state in REPLACED
                entry.predecessor, dead.rebuilt_as = dead.number, number
                entry.requested_at = dead.requested_at
                wb.put(S.FED_COORD_PAYOUT + _u64(dead.number), json.dumps(dead.to_json()).encode())
            wb.put(S.FED_COORD_META + b"next", _u64(number + 1))
            wb.put(S.FED_COORD_META + b"active", _u64(number))
            wb.put(S.FED_COORD_PAYOUT + _u64(number), json.dumps(entry.to_json()).encode())
            for item in items:
                wb.put(S.FED_COORD_WITHDRAWAL + item.ref.encode(), _u64(number))
        return entry

    def save(self, entry: PayoutJournal) -> None:
        """Rewrite an entry; when it reaches DONE, mark its withdrawals paid and clear the in-flight slot."""
        with self._db.batch() as wb:
            wb.put(S.FED_COORD_PAYOUT + _u64(entry.number), json.dumps(entry.to_json()).encode())
            if entry.state == DONE:
                assert entry.confirmed_txid is not None
                for item in entry.items:
                    wb.put(S.FED_COORD_PAID + item.ref.encode(), bytes.fromhex(entry.confirmed_txid)[::-1])
                wb.delete(S.FED_COORD_META + b"active")

    def close_abandoned(self, entry: PayoutJournal) -> None:
        """An ABANDONED entry with nothing left to pay: rewrite it and clear the in-flight slot, in one write."""
        assert entry.state == ABANDONED
        with self._db.batch() as wb:
            wb.put(S.FED_COORD_PAYOUT + _u64(entry.number), json.dumps(entry.to_json()).encode())
            wb.delete(S.FED_COORD_META + b"active")

    def close(self) -> None:
        """Close the database."""
        self._db.close()
