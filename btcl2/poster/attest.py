"""The attestation poster: once a batch is anchored, ask the federation signers to attest it, aggregate M
signatures and put the record on Bitcoin in an authenticated attestation transaction (docs/PROTOCOL.md,
"Attestations").

It runs in rounds of its own beside the Poster's anchor rounds (`Poster.attest_round`): asking the signers
(`collect_due`) takes no lock, posting (`post`) holds the Poster's coin lock, so the two never pick the same
coin: the coins of journaled anchors are excluded, and a broadcast attestation's coin is spent in the
mempool. Its journal lives in the poster's LevelDB (btcl2/storage/schema.py, POSTER_ATTEST_*): the next
batch to attest and every attestation transaction not yet buried, each change one atomic, synced write
made BEFORE the broadcast it announces. A lost attestation transaction is sent again, or its batches are
attested again; a repeated valid record is harmless (replay counts it as a repeat), so a crash at any point
loses nothing and breaks nothing.
"""

import asyncio
import json
import logging
import os
import struct
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btcl2.bitcoin.rpc import BitcoinRPC, RPCError
from btcl2.bitcoin.tx import OutPoint, Tx
from btcl2.core.anchor import build_anchor_transactions
from btcl2.core.attestation import (
    MAX_RECORDS_PER_TX,
    Attestation,
    aggregate,
    attestation_message,
    bitmap_of,
    check_registration,
    verify_attestation,
    verify_one,
)
from btcl2.core.exits import exit_records, exits_root
from btcl2.core.params import Params
from btcl2.core.types import Batch, Hash32
from btcl2.errors import Critical, InvalidInput
from btcl2.federation.client import post_to_signer
from btcl2.federation.errors import SignerUnavailable
from btcl2.poster.sources import BatchSource, spendable_coins
from btcl2.secretfile import read_secret_file
from btcl2.storage import schema
from btcl2.storage.db import Database
from btcl2.wallet.keyfile import KeyFile

log = logging.getLogger(__name__)

ATTEST_TIMEOUT = 60.0
"""Seconds a signer may take to answer (its replay of Bitcoin included)."""
BURIED_CONFS = 6
"""Confirmations after which an attestation transaction is no longer watched."""


@dataclass(frozen=True, slots=True)
class AttestSigner:
    """One signer's attestation endpoint."""

    url: str
    """http://host:port of `btcl2 signer run`."""
    token: str
    """Its bearer token."""


def load_signers(path: Path) -> list[AttestSigner]:
    """Read `[[signers]]` tables with `url` and `token` (the coordinator's format); InvalidInput otherwise."""
    text = read_secret_file(Path(path), "attestation signers file")  # it holds the signers' tokens
    try:
        data = tomllib.loads(text)
        found = [AttestSigner(str(s["url"]).rstrip("/"), str(s["token"])) for s in data["signers"]]
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise InvalidInput(f"cannot read attestation signers from {path}: {exc}") from exc
    if not found:
        raise InvalidInput(f"{path} names no signer")
    return found


def request_attestation(
    signer: AttestSigner, number: int, roots: tuple[bytes, bytes, bytes]
) -> dict[str, Any]:
    """POST /attest to one signer; its JSON answer (a signature or a refusal), or an `Unreachable` error."""
    body = {"batch": number, **{k: "0x" + v.hex() for k, v in zip(_FIELDS, roots, strict=True)}}
    try:
        return post_to_signer(signer.url, "/attest", signer.token, body, ATTEST_TIMEOUT)
    except SignerUnavailable as e:
        return {"error": "Unreachable", "message": str(e)}


_FIELDS = ("batchHash", "postStateRoot", "exitsRoot")


def batch_roots(batch: Batch, chain_id: int) -> tuple[bytes, bytes, bytes]:
    """(batch hash, post-state root, exits root): what an attestation of `batch` names."""
    return batch.hash, batch.header.post_state_root, exits_root(exit_records(batch, chain_id))


def collect(
    signers: Sequence[AttestSigner], params: Params, number: int, roots: tuple[bytes, bytes, bytes]
) -> Attestation | None:
    """Ask every signer, keep the signatures that verify under the key of the index they claim, and
    aggregate them once M are valid; None (refusals logged) when fewer than M attest."""
    message = attestation_message(params.l2_chain_id, number, *roots)
    good: dict[int, bytes] = {}
    for signer in signers:
        answer = request_attestation(signer, number, roots)
        if "signature" not in answer:
            log.warning(
                "attester: %s did not attest batch %d: %s: %s",
                signer.url,
                number,
                answer.get("error"),
                answer.get("message"),
            )
            continue
        try:
            index, sig = int(answer["index"]), bytes.fromhex(str(answer["signature"]))
        except (KeyError, ValueError, TypeError):
            log.warning("attester: %s answered batch %d with a malformed signature", signer.url, number)
            continue
        keys = params.attestation_pubkeys
        if not 0 <= index < len(keys) or not verify_one(keys[index], message, sig):
            log.warning("attester: %s sent an invalid signature for batch %d", signer.url, number)
            continue
        good[index] = sig
    if len(good) < params.attestation_m:
        return None
    named = sorted(good)
    h, post, exits = roots
    att = Attestation(
        number, Hash32(h), Hash32(post), Hash32(exits), bitmap_of(named), aggregate([good[i] for i in named])
    )
    verify_attestation(att, params.attestation_pubkeys, params.attestation_m, params.l2_chain_id)
    return att


class AttestationJournal:
    """The attestation poster's journal in the poster's LevelDB; every change is one atomic, synced write.

    Layout: POSTER_ATTEST_META + b"next" -> the next batch to attest (u64 BE); POSTER_ATTEST_TX + txid
    (display-order hex, ASCII) -> JSON {"hex", "batches"} of each attestation transaction not yet buried."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def next_batch(self) -> int:
        """The next batch to attest (0 before the first)."""
        raw = self._db.get(schema.POSTER_ATTEST_META + b"next")
        return 0 if raw is None else int(struct.unpack(">Q", raw)[0])

    def pending(self) -> list[dict[str, Any]]:
        """Attestation transactions that may still confirm: {"txid", "hex", "batches"}."""
        out = []
        for key, value in self._db.iterate(schema.POSTER_ATTEST_TX):
            try:
                doc = json.loads(value)
                out.append({"txid": key.decode(), "hex": str(doc["hex"]), "batches": list(doc["batches"])})
            except (ValueError, KeyError, TypeError) as exc:
                raise Critical(f"attestation journal entry {key!r} is corrupt: {exc}") from exc
        return out

    def write(self, next_batch: int, add: Sequence[dict[str, Any]] = (), drop: Sequence[str] = ()) -> None:
        """Set the next batch, journal the transactions `add` and forget the txids `drop`, atomically."""
        with self._db.batch() as wb:
            for p in add:
                value = json.dumps({"hex": p["hex"], "batches": p["batches"]}).encode()
                wb.put(schema.POSTER_ATTEST_TX + p["txid"].encode(), value)
            for txid in drop:
                wb.delete(schema.POSTER_ATTEST_TX + txid.encode())
            wb.put(schema.POSTER_ATTEST_META + b"next", struct.pack(">Q", next_batch))

    def import_legacy(self, path: Path) -> None:
        """Take over a JSON journal of an earlier version ({"next", "pending"}) in one write, then rename it
        `<name>.imported`; nothing when there is no such file or the database already holds a journal."""
        if not path.exists():
            return
        if self._db.get(schema.POSTER_ATTEST_META + b"next") is None:
            try:
                doc = json.loads(path.read_text())
                pending = [p for p in doc.get("pending", []) if "txid" in p and "hex" in p]
                self.write(int(doc.get("next", 0)), pending)
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                raise Critical(f"cannot import the attestation journal {path}: {exc}") from exc
        os.replace(path, path.with_name(path.name + ".imported"))


class AttestationPoster:
    """Attests anchored batches in order; `tick(poster)` runs inside the Poster's round."""

    def __init__(
        self, db: Database, signers: Sequence[AttestSigner], batches: BatchSource, params: Params
    ) -> None:
        check_registration(params.attestation_pubkeys, params.attestation_pops, params.attestation_m)
        self.journal = AttestationJournal(db)
        self._signers = list(signers)
        self._batches = batches
        self._params = params
        self.next_batch: int = self.journal.next_batch()
        self.pending: list[dict[str, Any]] = self.journal.pending()
        self._rewinds = 0
        """Times the poster rewound the next batch (records collected before a rewind are not posted)."""
        self._collected_at = 0

    def rewind(self, first: int) -> None:
        """The sequencer sealed batch `first` (and the later ones) again: attest them anew once anchored.
        Records of the old versions already sent stay; replay counts them as stale."""
        self._rewinds += 1
        if self.next_batch > first:
            self.journal.write(first)
            self.next_batch = first

    def reserved(self) -> set[OutPoint]:
        """Inputs of attestation transactions that may still confirm."""
        return {txin.prevout for p in self.pending for txin in Tx.from_hex(p["hex"]).vin}

    async def collect_due(self, rpc: BitcoinRPC, anchored: Callable[[int], bool]) -> list[Attestation]:
        """Reconcile the pending transactions, then ask the signers to attest the anchored batches that
        follow (`anchored(n)`: every chunk of batch n has K confirmations); the aggregated records."""
        await self._reconcile(rpc)
        self._collected_at = self._rewinds
        records: list[Attestation] = []
        number = self.next_batch
        while len(records) < MAX_RECORDS_PER_TX and anchored(number):
            batch = await self._batches.batch(number)
            if batch is None:
                break
            roots = batch_roots(batch, self._params.l2_chain_id)
            att = await asyncio.to_thread(collect, self._signers, self._params, number, roots)
            if att is None:
                break
            records.append(att)
            number += 1
        return records

    async def post(
        self,
        rpc: BitcoinRPC,
        keyfile: KeyFile,
        records: list[Attestation],
        reserved: set[OutPoint],
        tip: int,
        rate: int,
    ) -> None:
        """Put `records` on Bitcoin paying `rate` sat/vB, unless the poster rewound meanwhile (a batch
        sealed again while the signers were asked: those records may name the old version)."""
        if not records or self._collected_at != self._rewinds or records[0].batch_number != self.next_batch:
            return
        reserved = reserved | self.reserved()
        coins = await spendable_coins(rpc, keyfile.btc_address, keyfile.script_pubkey, tip, reserved)
        try:
            (tx,) = build_anchor_transactions(
                [[a.output() for a in records]], coins, keyfile.script_pubkey, rate, keyfile.key
            )
        except InvalidInput as exc:
            log.warning("attester: cannot build the attestation transaction: %s", exc)
            return
        verdict = (await rpc.call("testmempoolaccept", [tx.hex()]))[0]
        if not verdict.get("allowed", False):
            log.warning(
                "attester: node refuses attestation %s: %s", tx.txid_hex, verdict.get("reject-reason")
            )
            return
        numbers = [a.batch_number for a in records]
        entry = {"txid": tx.txid_hex, "hex": tx.hex(), "batches": numbers}
        self.journal.write(numbers[-1] + 1, add=[entry])
        self.pending.append(entry)
        self.next_batch = numbers[-1] + 1
        try:
            await rpc.call("sendrawtransaction", tx.hex())
        except RPCError as exc:
            log.warning("attester: sending %s failed (journaled, retried): %s", tx.txid_hex, exc)
            return
        log.info("attester: batches %s attested in %s", numbers, tx.txid_hex)

    async def _reconcile(self, rpc: BitcoinRPC) -> None:
        keep = []
        drop: list[str] = []
        next_batch = self.next_batch
        for p in self.pending:
            try:
                found = await rpc.call("getrawtransaction", p["txid"], True)
                confs = int(found.get("confirmations", 0) or 0)
            except RPCError:
                confs = -1
            if confs >= BURIED_CONFS:
                drop.append(p["txid"])
                continue
            if confs < 0:
                try:
                    await rpc.call("sendrawtransaction", p["hex"])
                except RPCError as exc:
                    # Its coin went elsewhere: attest those batches again in a new transaction.
                    log.warning("attester: %s is gone (%s); batches %s again", p["txid"], exc, p["batches"])
                    next_batch = min(next_batch, min(p["batches"]))
                    drop.append(p["txid"])
                    continue
            keep.append(p)
        if drop:
            self.journal.write(next_batch, drop=drop)
            self.pending, self.next_batch = keep, next_batch
