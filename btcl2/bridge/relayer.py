"""The relayer: keeps the EVM light client fed with Bitcoin headers and mints WBTC for confirmed EVM deposits.

Each pass, in this order:
  1. the watcher catches up with Bitcoin and hands over deposits that reached K confirmations (K is the
     Bridge's minConfirmations), and their reorgs; they are queued in the relayer's store;
  2. the pending EVM transaction, if any, is reconciled with the chain (see btcl2.bridge.sender): nothing
     new is sent while one is in flight;
     then every mint (and attestation) not yet buried `evm_settle_depth` EVM blocks deep is checked with
     the Bridge: one an EVM reorg dropped is queued (submitted) again;
  3. headers: the light client is asked whether the node's tip is on its best chain; if not, the relayer finds
     the newest height where both chains agree and submits the node's headers above it, in batches. After a
     Bitcoin reorg that is exactly the new branch; the light client itself switches to the most work;
  4. mints: each queued deposit whose block has K confirmations on the light client is proven
     (Bridge.mintWithProof). An outpoint the Bridge already minted (minted() true, or AlreadyMinted) is
     recorded as done, never retried; a deposit the Bridge refuses for good is recorded as rejected;
  5. attestations (when the Bridge has an AttestationVerifier): every batch attestation that replay of
     Bitcoin judges valid and that has K confirmations is submitted (Bridge.submitAttestation), in batch
     order, journaled like a mint, with SPV proofs that its anchor and its record are K deep. A batch the
     Bridge already holds with replay's batch hash and roots is recorded as done; in another version it is a
     CONFLICT (logged as an error, recorded, in `conflicts`), never done; a record the Bridge refuses for good
     as rejected.

Only the Bridge's own events are believed: logs are decoded by the Bridge's address, never by their shape.
The relayer trusts nothing it submits: the contracts check every header and proof themselves.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from eth_utils.crypto import keccak

from btcl2.bitcoin.block import Block, BlockHeader
from btcl2.bitcoin.rpc import RPCError, SyncBitcoinRPC
from btcl2.bitcoin.tx import OutPoint
from btcl2.bridge.abi import Event, find_entry, signature
from btcl2.bridge.evm import Contract, ContractRevert, EvmClient, events_of
from btcl2.bridge.journal import (
    ATTEST_DONE,
    DONE_STATUSES,
    AttestRecord,
    AttestStatus,
    DepositRecord,
    DepositStatus,
    Effect,
    Purpose,
    RelayerStore,
    TxEntry,
    TxStatus,
    outpoint_from_key,
    outpoint_key,
)
from btcl2.bridge.sender import Resolved, TxSender
from btcl2.bridge.spv import mint_proof
from btcl2.core.deposits import Deposit, DepositKind
from btcl2.errors import Critical, Temporary
from btcl2.failpoints import failpoint
from btcl2.watcher.chain import RPC_INVALID_PARAMETER
from btcl2.watcher.events import DepositConfirmed, DepositLike, DepositReorged, WatcherEvent
from btcl2.watcher.watcher import Watcher

if TYPE_CHECKING:  # the BLS machinery (py-ecc) is imported only by relayers that submit attestations
    from btcl2.bridge.attest import AttestationSource, ConfirmedAttestation

log = logging.getLogger(__name__)

TRANSIENT_REVERTS = frozenset(
    {"BlockNotInBestChain", "InsufficientConfirmations", "MintCapExceeded", "BridgePaused", ""}
)
"""Mint reverts that may pass later (more headers, a refilled bucket, an unpause): the deposit stays queued."""
TRANSIENT_ATTEST_REVERTS = frozenset({"BridgePaused", "BlockNotInBestChain", "InsufficientConfirmations", ""})
"""submitAttestation reverts that may pass later: the attestation is tried again at the next pass."""


@dataclass(frozen=True, slots=True)
class RelayerConfig:
    """How the relayer paces itself."""

    headers_per_tx: int = 100
    """Most headers in one submitHeaders transaction."""
    poll_interval: float = 1.0
    """Seconds between passes."""
    receipt_wait: float = 5.0
    """Seconds to wait for a just-sent transaction's receipt before moving on to the next pass."""
    max_backoff: float = 30.0
    """Longest wait after repeated temporary failures."""
    evm_settle_depth: int = 12
    """EVM blocks after which a mint is no longer watched for a reorg that drops it."""


def _is_evm(deposit: DepositLike) -> bool:
    return isinstance(deposit, Deposit) and deposit.kind == DepositKind.EVM


def _rpc_hash(h: bytes) -> str:
    return h[::-1].hex()


def minted_events(evm: EvmClient, bridge: Contract, txid: bytes, from_block: int = 0) -> list[Event]:
    """The Bridge's Minted events for transaction `txid` (internal order), read by its address only."""
    topic = keccak(text=signature(find_entry(bridge.abi, "event", "Minted")))
    logs = evm.rpc(
        "eth_getLogs",
        {
            "address": bridge.address,
            "fromBlock": hex(from_block),
            "toBlock": "latest",
            "topics": ["0x" + topic.hex(), "0x" + txid.hex()],
        },
    )
    return [e for e in events_of(bridge, logs) if e.name == "Minted" and e.args["btcTxid"] == txid]


class Relayer:
    """Feeds the light client and mints confirmed EVM deposits; the watcher's consumer for deposit events."""

    def __init__(
        self,
        node: SyncBitcoinRPC,
        evm: EvmClient,
        bridge: Contract,
        light_client: Contract,
        sender: TxSender,
        store: RelayerStore,
        config: RelayerConfig,
    ) -> None:
        self.node = node
        self.evm = evm
        self.bridge = bridge
        self.light_client = light_client
        self.sender = sender
        self.store = store
        self.config = config
        self.k = int(evm.call(bridge, "minConfirmations"))
        self.checkpoint_height = int(evm.call(light_client, "checkpointHeight"))
        self.watcher: Watcher | None = None
        self.attestations: AttestationSource | None = None
        """Batch attestations on Bitcoin to submit (None: the relayer does not submit attestations)."""
        self._stopping = asyncio.Event()
        self._warned_heavier: bytes | None = None
        self._minted_seen: dict[OutPoint, int] = {}
        """Unsettled mint -> the EVM block at which this process first saw it minted."""
        self._attested_seen: dict[int, int] = {}
        """Unsettled attestation (batch number) -> the EVM block at which this process first saw it."""
        self.conflicts: dict[int, str] = {}
        """Batch number -> why the Bridge's attested version differs from this relayer's replay (CONFLICT)."""
        wired = str(evm.call(bridge, "lightClient"))
        if wired.lower() != light_client.address.lower():
            raise Critical(f"the Bridge reads light client {wired}, not {light_client.address}")

    # --- the service loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Pass after pass until stop(); temporary failures back off, anything else stops the relayer."""
        backoff = self.config.poll_interval
        while not self._stopping.is_set():
            try:
                await self.poll_once()
                wait = backoff = self.config.poll_interval
            except Temporary as e:
                log.warning("relayer: %s; retrying in %.1fs", e, backoff)
                wait = backoff
                backoff = min(max(backoff, 0.1) * 2, self.config.max_backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)

    def stop(self) -> None:
        """Ask run() to return after the current pass."""
        self._stopping.set()

    async def poll_once(self) -> None:
        """One pass: the watcher catches up, then the EVM work runs off the event loop."""
        if self.watcher is not None:
            await self.watcher.poll_once()
        await asyncio.to_thread(self.step)

    def step(self) -> None:
        """The EVM side of one pass: reconcile, headers, mints (blocking)."""
        if not self._settle_open():
            return
        self.recheck_mints()
        if not self.sync_headers():
            return
        if self.mint_queued():
            self.submit_attestations()

    # --- watcher events ----------------------------------------------------------------------------------

    def on_event(self, seq: int, event: WatcherEvent) -> None:
        """Queue confirmed EVM deposits, unqueue reorged ones; each event applied once, by sequence number."""
        if seq <= self.store.last_seq():
            return
        record = None
        if isinstance(event, DepositConfirmed) and _is_evm(event.deposit):
            record = self._confirmed(event)
        elif isinstance(event, DepositReorged) and _is_evm(event.deposit):
            record = self._reorged(event)
        self.store.apply_event(seq, record)

    def _confirmed(self, event: DepositConfirmed) -> DepositRecord | None:
        d = event.deposit
        assert isinstance(d, Deposit)
        old = self.store.deposit(d.outpoint)
        if old is not None and old.status != DepositStatus.REORGED:
            return None
        log.info(
            "relayer: deposit %s:%d confirmed in block %d", d.outpoint.txid_hex, d.outpoint.vout, event.height
        )
        return DepositRecord(
            d.outpoint,
            bytes(d.recipient),
            int(d.amount),
            event.height,
            event.block_hash,
            DepositStatus.CONFIRMED,
        )

    def _reorged(self, event: DepositReorged) -> DepositRecord | None:
        old = self.store.deposit(event.deposit.outpoint)
        if old is None or old.block_hash != event.block_hash or old.status in DONE_STATUSES:
            if old is not None and old.status == DepositStatus.MINTED:
                log.error("relayer: deposit %s minted from a block that left Bitcoin's chain", old.outpoint)
            return None
        return replace(old, status=DepositStatus.REORGED)

    # --- the pending transaction ---------------------------------------------------------------------------

    def _settle_open(self) -> bool:
        """Reconcile pending entries; True when none is left in flight."""
        for entry in self.store.open_entries():
            resolved = self.sender.check(entry)
            if resolved is None:
                return False
            self._record(resolved)
        return True

    def _send_and_wait(self, entry: TxEntry, effect: Effect | None = None) -> bool:
        """Journal, send and wait a little for the receipt; True if it was resolved within the wait."""
        entry = self.sender.send(entry, effect)
        resolved = self.sender.wait(entry, self.config.receipt_wait)
        if resolved is None:
            return False
        self._record(resolved)
        return True

    def _record(self, resolved: Resolved) -> None:
        entry = resolved.entry
        step = entry.purpose.name.lower()
        failpoint("relayer.before_record", f"relayer.{step}.before_record")
        if entry.purpose == Purpose.MINT:
            self.store.finish(entry, self._mint_outcome(resolved))
        elif entry.purpose == Purpose.ATTEST:
            self.store.finish(entry, self._attest_outcome(resolved))
        else:
            self.store.finish(entry)
        failpoint("relayer.after_record", f"relayer.{step}.after_record")

    def _mint_outcome(self, resolved: Resolved) -> DepositRecord | None:
        entry = resolved.entry
        record = self.store.deposit(outpoint_from_key(entry.subject))
        if record is None:
            raise Critical(f"journal entry {entry.id} mints an outpoint the relayer never queued")
        op = record.outpoint
        if entry.status == TxStatus.MINED:
            mine = [e for e in events_of(self.bridge, resolved.receipt or ()) if e.name == "Minted"]
            if not any(e.args["btcTxid"] == op.txid and e.args["vout"] == op.vout for e in mine):
                raise Critical(
                    f"mint tx 0x{entry.mined_hash.hex()} succeeded without the Bridge's Minted event"
                )
            log.info("relayer: minted %s:%d in tx 0x%s", op.txid_hex, op.vout, entry.mined_hash.hex())
            return replace(record, status=DepositStatus.MINTED, mint_tx=entry.mined_hash, reason="")
        if self.evm.call(self.bridge, "minted", op.txid, op.vout):
            return self._already_minted(record)
        if record.status == DepositStatus.REORGED:
            return record
        # Reverted for another reason, or dropped: queue it again; the next simulation says what to do.
        return replace(record, status=DepositStatus.CONFIRMED, reason=entry.note)

    def _already_minted(self, record: DepositRecord) -> DepositRecord:
        op = record.outpoint
        events = [e for e in minted_events(self.evm, self.bridge, op.txid) if e.args["vout"] == op.vout]
        tx = events[0].tx_hash if events else b""
        log.info("relayer: deposit %s:%d was minted by another transaction", op.txid_hex, op.vout)
        return replace(record, status=DepositStatus.ALREADY_MINTED, mint_tx=tx, reason="AlreadyMinted")

    def recheck_mints(self) -> None:
        """Queue again every minted deposit (and submit again every attestation) an EVM reorg undid; stop
        watching the ones buried `evm_settle_depth` blocks deep (counted from when this process first saw
        them done)."""
        head = self.evm.block_number()
        for record in self.store.unsettled():
            op = record.outpoint
            if not self.evm.call(self.bridge, "minted", op.txid, op.vout):
                log.warning(
                    "relayer: the mint of %s:%d (tx 0x%s) left the EVM chain: minting it again",
                    op.txid_hex,
                    op.vout,
                    record.mint_tx.hex(),
                )
                self._minted_seen.pop(op, None)
                self.store.set_deposit(
                    replace(record, status=DepositStatus.CONFIRMED, mint_tx=b"", reason="mint reorged out")
                )
            elif head - self._minted_seen.setdefault(op, head) >= self.config.evm_settle_depth:
                self._minted_seen.pop(op)
                self.store.settle(op)
        unsettled = self.store.unsettled_attestations()
        if unsettled:
            from btcl2.bridge.attest import attested_batch

            for att in unsettled:
                n = att.batch_number
                if attested_batch(self.evm, self.bridge, n) is None:
                    log.warning(
                        "relayer: the attestation of batch %d left the EVM chain: submitting it again", n
                    )
                    self._attested_seen.pop(n, None)
                    self.store.set_attestation(replace(att, status=AttestStatus.RETRY, reason="reorged out"))
                elif head - self._attested_seen.setdefault(n, head) >= self.config.evm_settle_depth:
                    self._attested_seen.pop(n)
                    self.store.settle_attestation(n)

    # --- headers -------------------------------------------------------------------------------------------

    def _node_hash(self, height: int) -> bytes:
        try:
            return bytes.fromhex(self.node.call("getblockhash", height))[::-1]
        except RPCError as e:
            if e.code == RPC_INVALID_PARAMETER:  # the node's chain got shorter since its tip was read
                raise Temporary(f"the node's chain changed while its headers were read ({e})") from e
            raise

    def _fork_height(self, node_height: int) -> int:
        """The newest height where the light client's best chain and the node's chain hold the same block."""
        h = min(int(self.evm.call(self.light_client, "bestHeight")), node_height)
        while h > self.checkpoint_height:
            if bytes(self.evm.call(self.light_client, "hashAtHeight", h)) == self._node_hash(h):
                return h
            h -= 1
        return self.checkpoint_height

    def _headers(self, first: int, last: int) -> list[BlockHeader]:
        hashes = self.node.batch([("getblockhash", [h]) for h in range(first, last + 1)])
        raws = self.node.batch([("getblockheader", [h, False]) for h in hashes if isinstance(h, str)])
        if len(raws) != last - first + 1 or not all(isinstance(r, str) for r in raws):
            raise Temporary("the node's chain changed while its headers were read")
        return [BlockHeader.decode(bytes.fromhex(str(r))) for r in raws]

    def sync_headers(self) -> bool:
        """Submit the node's headers the light client lacks; True when it is caught up (nothing in flight)."""
        while True:
            tip = bytes.fromhex(self.node.call("getbestblockhash"))[::-1]
            if self.evm.call(self.light_client, "isInBestChain", tip):
                return True
            stored = self.evm.call(self.light_client, "getHeader", tip)
            if int(stored[2]) != 0:
                # Known but not best: the light client holds a branch with more work than the node's.
                if self._warned_heavier != tip:
                    log.warning("relayer: the light client's best chain has more work than the node's tip")
                    self._warned_heavier = tip
                return True
            node_height = int(self.node.call("getblockheader", _rpc_hash(tip))["height"])
            fork = self._fork_height(node_height)
            if fork >= node_height:
                # Someone else (another relayer: anyone may) submitted these headers meanwhile: look again.
                continue
            last = min(fork + self.config.headers_per_tx, node_height)
            headers = self._headers(fork + 1, last)
            expected = bytes(self.evm.call(self.light_client, "hashAtHeight", fork))
            for header in headers:
                if header.prev_hash != expected:
                    raise Temporary("the node's chain changed while its headers were read")
                expected = header.hash
            data = b"".join(h.encode() for h in headers)
            entry = self.sender.prepare(
                Purpose.HEADERS, headers[-1].hash, self.light_client, "submitHeaders", [data]
            )
            log.info("relayer: submitting headers %d..%d", fork + 1, last)
            if not self._send_and_wait(entry):
                return False

    # --- mints ---------------------------------------------------------------------------------------------

    def mint_queued(self) -> bool:
        """Mint every queued deposit the light client has confirmed; stops at a transaction still in flight
        (False)."""
        return all(self._mint_one(record) for record in self.store.queued())

    def _mint_one(self, record: DepositRecord) -> bool:
        """Try to mint one deposit; False if its transaction is still in flight."""
        op = record.outpoint
        if int(self.evm.call(self.light_client, "confirmations", record.block_hash)) < self.k:
            return True  # the headers come first; a block the light client dropped waits for its reorg event
        if self.evm.call(self.bridge, "minted", op.txid, op.vout):
            self.store.set_deposit(self._already_minted(record))
            return True
        block = Block.decode(bytes.fromhex(self.node.call("getblock", _rpc_hash(record.block_hash), 0)))
        proof = mint_proof(block, op.txid, op.vout)
        try:
            entry = self.sender.prepare(
                Purpose.MINT, outpoint_key(op), self.bridge, "mintWithProof", proof.args()
            )
        except ContractRevert as e:
            self._refused(record, e)
            return True
        return self._send_and_wait(entry, record)

    def _refused(self, record: DepositRecord, e: ContractRevert) -> None:
        op = record.outpoint
        if e.name == "AlreadyMinted":
            self.store.set_deposit(self._already_minted(record))
        elif e.name in TRANSIENT_REVERTS:
            log.info("relayer: mint of %s:%d must wait: %s", op.txid_hex, op.vout, e)
        else:
            log.warning("relayer: the Bridge refuses deposit %s:%d: %s", op.txid_hex, op.vout, e)
            self.store.set_deposit(replace(record, status=DepositStatus.REJECTED, reason=e.name))

    # --- attestations --------------------------------------------------------------------------------------

    def submit_attestations(self) -> bool:
        """Submit every valid attestation with K confirmations the Bridge lacks, in batch order; stops at a
        transaction still in flight (False). A batch the Bridge holds in another version is a CONFLICT."""
        if self.attestations is None:
            return True
        for found in self.attestations.confirmed(self.k):
            number = found.attestation.batch_number
            record = self.store.attestation(number)
            if record is not None and record.status in ATTEST_DONE and record.btc_txid == found.txid:
                continue
            if record is None or record.btc_txid != found.txid:
                record = AttestRecord(number, found.txid, AttestStatus.RETRY)
            if not self._submit_one(found, record):
                return False
        return True

    def _submit_one(self, found: "ConfirmedAttestation", record: AttestRecord) -> bool:
        """Try to submit one attestation; False if its transaction is still in flight."""
        from btcl2.bridge.attest import attestation_args, attestation_proofs, bridge_with_verifier_errors
        from btcl2.bridge.spv import NotInBlock

        att = found.attestation
        held = self._held_version(record, found)
        if held is not None and held.status == AttestStatus.ALREADY_ATTESTED:
            self.store.set_attestation(held)
            return True
        try:
            proofs = attestation_proofs(self.node, att.batch_number, found.anchor, found.record)
        except NotInBlock as e:
            raise Temporary(f"attestation of batch {att.batch_number}: {e}") from e
        try:
            entry = self.sender.prepare(
                Purpose.ATTEST,
                att.batch_number.to_bytes(8, "big"),
                bridge_with_verifier_errors(self.bridge),
                "submitAttestation",
                attestation_args(att, proofs),
            )
        except ContractRevert as e:
            self._attest_refused(found, record if held is None else held, e)
            return True
        log.info("relayer: submitting the attestation of batch %d", att.batch_number)
        return self._send_and_wait(entry, record)

    def _held_version(self, record: AttestRecord, found: "ConfirmedAttestation") -> AttestRecord | None:
        """What the Bridge already holds for the batch compared with replay's version: ALREADY_ATTESTED
        (the same), CONFLICT (another; logged, kept in `conflicts`) or None (nothing held)."""
        from btcl2.bridge.attest import attested_batch

        att = found.attestation
        held = attested_batch(self.evm, self.bridge, att.batch_number)
        if held is None:
            return None
        mine = (att.batch_hash, att.post_state_root, att.exits_root)
        if held == mine:
            self.conflicts.pop(att.batch_number, None)
            return self._already_attested(record)
        why = ", ".join(
            f"{name} {h.hex()} on the Bridge, {m.hex()} in replay"
            for name, h, m in zip(("batch hash", "post-state root", "exits root"), held, mine, strict=True)
            if h != m
        )
        if self.conflicts.get(att.batch_number) != why:
            log.error(
                "relayer: CONFLICT: the Bridge holds another version of batch %d: %s", att.batch_number, why
            )
        self.conflicts[att.batch_number] = why
        return replace(record, status=AttestStatus.CONFLICT, reason=f"CONFLICT: {why}")

    def _attest_refused(self, found: "ConfirmedAttestation", record: AttestRecord, e: ContractRevert) -> None:
        number = found.attestation.batch_number
        if record.status == AttestStatus.CONFLICT:
            # The Bridge keeps its version while that version's anchor is on its light client's best chain.
            self.store.set_attestation(record)
        elif e.name == "BatchAlreadyAttested":
            held = self._held_version(record, found)
            self.store.set_attestation(held if held is not None else record)
        elif e.name in TRANSIENT_ATTEST_REVERTS:
            log.info("relayer: attestation of batch %d must wait: %s", number, e)
        else:
            log.warning("relayer: the Bridge refuses the attestation of batch %d: %s", number, e)
            self.store.set_attestation(replace(record, status=AttestStatus.REJECTED, reason=e.name))

    def _attest_outcome(self, resolved: Resolved) -> AttestRecord:
        from btcl2.bridge.attest import attested_batch

        entry = resolved.entry
        number = int.from_bytes(entry.subject, "big")
        record = self.store.attestation(number)
        if record is None:
            raise Critical(
                f"journal entry {entry.id} submits batch {number}, which the relayer never recorded"
            )
        if entry.status == TxStatus.MINED:
            mine = [e for e in events_of(self.bridge, resolved.receipt or ()) if e.name == "BatchAttested"]
            if not any(int(e.args["batchNumber"]) == number for e in mine):
                raise Critical(f"attestation tx 0x{entry.mined_hash.hex()} succeeded without BatchAttested")
            log.info("relayer: batch %d attested on the Bridge in tx 0x%s", number, entry.mined_hash.hex())
            self.conflicts.pop(number, None)  # a replacement of another version ends its conflict
            return replace(record, status=AttestStatus.ATTESTED, evm_tx=entry.mined_hash, reason="")
        if attested_batch(self.evm, self.bridge, number) is not None:
            # Held by another's transaction: the next pass compares that version with replay's.
            return replace(record, status=AttestStatus.RETRY, reason="held by the Bridge: to compare")
        # Reverted for another reason, or dropped: the next pass simulates it again and says what to do.
        return replace(record, status=AttestStatus.RETRY, reason=entry.note)

    def _already_attested(self, record: AttestRecord) -> AttestRecord:
        log.info("relayer: batch %d was attested on the Bridge by another transaction", record.batch_number)
        return replace(record, status=AttestStatus.ALREADY_ATTESTED, reason="BatchAlreadyAttested")
