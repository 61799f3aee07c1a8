"""The attestation poster: once a batch is anchored, ask the federation signers to attest it, aggregate M
signatures and put the record on Bitcoin in an authenticated attestation transaction (docs/PROTOCOL.md,
"Attestations").

It runs inside the Poster's round (`Poster.attester`), after the anchors, so the two never pick the same
coin: the coins of journaled anchors are excluded, and a broadcast attestation's coin is spent in the
mempool. Its journal is one JSON file written atomically (temporary file, fsync, rename) BEFORE each
broadcast: the next batch to attest and every attestation transaction not yet buried. A lost attestation
transaction is sent again, or its batches are attested again; a repeated valid record is harmless (replay
counts it as a repeat), so a crash at any point loses nothing and breaks nothing.
"""

import asyncio
import json
import logging
import os
import tomllib
import urllib.error
import urllib.request
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
from btcl2.errors import InvalidInput
from btcl2.poster.sources import BatchSource, spendable_coins
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
    try:
        data = tomllib.loads(Path(path).read_text())
        found = [AttestSigner(str(s["url"]).rstrip("/"), str(s["token"])) for s in data["signers"]]
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise InvalidInput(f"cannot read attestation signers from {path}: {exc}") from exc
    if not found:
        raise InvalidInput(f"{path} names no signer")
    return found


def request_attestation(
    signer: AttestSigner, number: int, roots: tuple[bytes, bytes, bytes]
) -> dict[str, Any]:
    """POST /attest to one signer; its JSON answer (a signature or a refusal); {} if unreachable."""
    body = {"batch": number, **{k: "0x" + v.hex() for k, v in zip(_FIELDS, roots, strict=True)}}
    req = urllib.request.Request(
        signer.url + "/attest",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {signer.token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=ATTEST_TIMEOUT) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            refusal: dict[str, Any] = json.loads(exc.read())
            return refusal
        except ValueError:
            return {"error": f"HTTP {exc.code}"}
    except (OSError, ValueError) as exc:
        return {"error": "Unreachable", "message": str(exc)}


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


class AttestationPoster:
    """Attests anchored batches in order; `tick(poster)` runs inside the Poster's round."""

    def __init__(
        self, journal_path: Path, signers: Sequence[AttestSigner], batches: BatchSource, params: Params
    ) -> None:
        check_registration(params.attestation_pubkeys, params.attestation_pops, params.attestation_m)
        self._path = journal_path
        self._signers = list(signers)
        self._batches = batches
        self._params = params
        doc = json.loads(journal_path.read_text()) if journal_path.exists() else {}
        self.next_batch: int = int(doc.get("next", 0))
        self.pending: list[dict[str, Any]] = list(doc.get("pending", []))

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"next": self.next_batch, "pending": self.pending}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)

    def reserved(self) -> set[OutPoint]:
        """Inputs of attestation transactions that may still confirm."""
        return {txin.prevout for p in self.pending for txin in Tx.from_hex(p["hex"]).vin}

    async def tick(
        self,
        rpc: BitcoinRPC,
        keyfile: KeyFile,
        anchored: Callable[[int], bool],
        reserved: set[OutPoint],
        tip: int,
        rate: int,
    ) -> None:
        """Reconcile the pending transactions, then attest the anchored batches that follow (`anchored(n)`:
        every chunk of batch n has a confirmation), paying `rate` sat/vB."""
        await self._reconcile(rpc)
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
        if records:
            await self._post(rpc, keyfile, records, reserved | self.reserved(), tip, rate)

    async def _post(
        self,
        rpc: BitcoinRPC,
        keyfile: KeyFile,
        records: list[Attestation],
        reserved: set[OutPoint],
        tip: int,
        rate: int,
    ) -> None:
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
        self.pending.append({"txid": tx.txid_hex, "hex": tx.hex(), "batches": numbers, "confirmed": 0})
        self.next_batch = numbers[-1] + 1
        self._save()
        try:
            await rpc.call("sendrawtransaction", tx.hex())
        except RPCError as exc:
            log.warning("attester: sending %s failed (journaled, retried): %s", tx.txid_hex, exc)
            return
        log.info("attester: batches %s attested in %s", numbers, tx.txid_hex)

    async def _reconcile(self, rpc: BitcoinRPC) -> None:
        keep = []
        changed = False
        for p in self.pending:
            try:
                found = await rpc.call("getrawtransaction", p["txid"], True)
                confs = int(found.get("confirmations", 0) or 0)
            except RPCError:
                confs = -1
            if confs >= BURIED_CONFS:
                changed = True
                continue
            if confs < 0:
                try:
                    await rpc.call("sendrawtransaction", p["hex"])
                except RPCError as exc:
                    # Its coin went elsewhere: attest those batches again in a new transaction.
                    log.warning("attester: %s is gone (%s); batches %s again", p["txid"], exc, p["batches"])
                    self.next_batch = min(self.next_batch, min(p["batches"]))
                    changed = True
                    continue
            keep.append(p)
        if changed:
            self.pending = keep
            self._save()
