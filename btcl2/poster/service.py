"""The poster service: anchors sealed batches in order, tracks them to finality, bumps and re-posts.

One round (`tick`) every `poll_interval` seconds:

1. reconcile every chunk of every batch not yet settled with the node: which version is in a block of
   the best chain (adopt it), in the mempool, or nowhere (re-send it if the node still accepts it, else
   abandon it and create a new version from fresh coins). A reorg that drops a confirmed anchor is seen
   here: its block is no longer in the best chain.
2. bump: a chunk whose transaction waited `bump_after` blocks unconfirmed is replaced at a higher fee
   rate, spending the same inputs (Core's replacement rules are checked, then testmempoolaccept).
3. post: the next sealed batches, in order; batch N only once every chunk of N-1 is broadcast.

Before step 1, when the sequencer's head changed: a batch number the poster anchored that the sequencer
now holds in another version (it rolled back batches whose L1 origin a reorg removed) makes every entry
from that number on stale (`Journal.forget_from`), and the new versions are posted in step 3.

Every signed transaction is journaled (one atomic write) before it is sent, so a crash at any point
leaves the journal knowing every transaction that may be on the network; failpoints mark each step.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from btcl2.bitcoin.rpc import BitcoinRPC, RPCError, to_sats
from btcl2.bitcoin.tx import OutPoint, Tx, TxOut
from btcl2.core.anchor import build_anchor_transactions, encode_anchor_outputs
from btcl2.core.params import Params
from btcl2.core.types import Batch
from btcl2.errors import Critical, InvalidInput, Temporary
from btcl2.failpoints import failpoint
from btcl2.poster.attest import AttestationPoster
from btcl2.poster.fees import FeePolicy, bump_fee_rate, clamp_fee_rate, pays_for_replacement
from btcl2.poster.journal import (
    LIVE_STATES,
    NO_BLOCK,
    BatchAnchor,
    Journal,
    JournalEntry,
    TxState,
    by_chunk,
    live_entry,
    transition,
)
from btcl2.poster.sources import BatchSource, spendable_coins
from btcl2.wallet.keyfile import KeyFile

log = logging.getLogger(__name__)

RPC_INVALID_ADDRESS_OR_KEY = -5
NON_FINAL = "non-final"
"""testmempoolaccept's reason for a transaction whose nLockTime the next block does not reach yet."""
SCAN_CACHE_MAX = 2_000


class WrongPosterKey(Critical):
    """Raised when the poster's key is not Params.poster_pubkey: replay would ignore its anchors."""


@dataclass(frozen=True, slots=True)
class PosterSettings:
    """How the poster runs (fee policy, pace, how long it keeps watching a confirmed anchor)."""

    fees: FeePolicy = field(default_factory=FeePolicy)
    """Fee floor, ceiling, estimate target, blocks before a bump."""
    poll_interval: float = 1.0
    """Seconds between rounds."""
    settle_confs: int = 6
    """Confirmations after which a batch's anchors are no longer watched for reorgs (at least F)."""


@dataclass(frozen=True, slots=True)
class _Where:
    """Where the node has a transaction: a best-chain block, the mempool, or nowhere."""

    mempool: bool = False
    block: tuple[bytes, int] | None = None


class Poster:
    """Anchors every sealed batch; `batch_anchor` answers the sequencer's status queries."""

    def __init__(
        self,
        rpc: BitcoinRPC,
        journal: Journal,
        batches: BatchSource,
        keyfile: KeyFile,
        params: Params,
        settings: PosterSettings = PosterSettings(),
    ) -> None:
        if keyfile.key.pubkey() != params.poster_pubkey:
            raise WrongPosterKey(
                f"poster key {keyfile.key.pubkey().hex()} is not the configured poster_pubkey "
                f"{params.poster_pubkey.hex()}: replay would ignore every anchor"
            )
        self.rpc = rpc
        self.journal = journal
        self.batches = batches
        self.keyfile = keyfile
        self.params = params
        self.settings = settings
        self.spk = keyfile.script_pubkey
        self.tip = journal.tip
        self._active_from = 0
        self._scan_cache: dict[bytes, frozenset[str]] = {}
        self._too_late: set[int] = set()
        """Batches already reported as past their anchoring deadline."""
        self._coins = asyncio.Lock()
        """Held while coins are picked and spent (anchor rounds, attestation posts)."""
        self._refusal: str | None = None
        """Why the node last refused a transaction `_resend` offered it (testmempoolaccept's reason)."""
        self._head_seen: tuple[int, bytes] | None = None
        """The sequencer's head (number, hash) when the anchored batches were last compared with it."""
        self._stopping = asyncio.Event()
        self.attester: AttestationPoster | None = None
        """Posts the federation's batch attestations in rounds of its own (btcl2/poster/attest.py), if set."""

    # --- status ----------------------------------------------------------------------------------------

    def batch_anchor(self, number: int) -> BatchAnchor:
        """The anchoring status of batch `number` at the tip the poster last saw."""
        return self.journal.batch_anchor(number, self.tip, self.params.f_anchor_confs)

    def batch_status(self, number: int) -> str:
        """sealed, broadcast, anchored or final."""
        return self.batch_anchor(number).status

    def anchor_height(self, number: int) -> int | None:
        """Height of the block that completes batch `number`'s anchor (its last chunk to confirm), None
        until every chunk has a confirmation."""
        return self.journal.anchor_height(number)

    def synced_height(self) -> int:
        """The Bitcoin tip of the poster's last round: the anchors' confirmations are known up to it."""
        return self.tip

    # --- the service loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run rounds until stop(); a node or sequencer that is down is retried next round. Attestations
        run in rounds of their own: asking the signers may take long, and anchors must not wait for it."""
        rounds = [self._rounds(self.tick, "poster")]
        if self.attester is not None:
            rounds.append(self._rounds(self.attest_round, "attester"))
        await asyncio.gather(*rounds)

    async def _rounds(self, round_once: Callable[[], Awaitable[None]], name: str) -> None:
        while not self._stopping.is_set():
            try:
                await round_once()
            except (Temporary, RPCError) as exc:
                log.warning("%s: round failed, retrying: %s", name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.poll_interval)

    def stop(self) -> None:
        """Ask run() to return."""
        self._stopping.set()

    async def tick(self) -> None:
        """One round: reconcile with the node, bump what is stuck, post what is sealed. It holds the coin
        lock: the attestation rounds pick coins too, and the two must never pick the same one."""
        async with self._coins:
            await self._tick()

    async def _tick(self) -> None:
        tip = int(await self.rpc.call("getblockcount"))
        if tip != self.tip:
            self.journal.write([], tip=tip)
        self.tip = tip
        mempool = set(await self.rpc.call("getrawmempool"))
        await self._forget_resealed()
        for number in range(self._active_from, self.journal.next_batch):
            chunks = by_chunk(self.journal.entries(number))
            for versions in chunks.values():
                await self._reconcile(versions, mempool)
        self._advance_settled()
        await self._bump_stuck()
        await self._post_sealed()

    async def attest_round(self) -> None:
        """Ask the signers to attest the anchored batches that follow (slow; no lock), then post the records
        under the coin lock."""
        assert self.attester is not None
        records = await self.attester.collect_due(self.rpc, self._is_attestable)
        if records:
            async with self._coins:
                rate = await self._fee_rate()
                await self.attester.post(self.rpc, self.keyfile, records, self._reserved(), self.tip, rate)

    def _is_anchored(self, number: int) -> bool:
        """Whether every chunk of batch `number` has at least one confirmation."""
        return number < self.journal.next_batch and self.batch_status(number) in ("anchored", "final")

    def _is_attestable(self, number: int) -> bool:
        """Whether batch `number`'s anchor is K deep (the signers attest nothing shallower)."""
        height = self.anchor_height(number) if self._is_anchored(number) else None
        return height is not None and self.tip - height + 1 >= self.params.k_deposit_confs

    def _advance_settled(self) -> None:
        settle = max(self.settings.settle_confs, self.params.f_anchor_confs)
        while self._active_from < self.journal.next_batch:
            anchor = self.batch_anchor(self._active_from)
            if anchor.status != "final" or anchor.confirmations < settle:
                return
            self._active_from += 1

    # --- batches sealed again ---------------------------------------------------------------------------

    async def _forget_resealed(self) -> None:
        """Compare the anchored batches with the sequencer's when its head changed (module docstring)."""
        head = await self.batches.head()
        top = None if head is None else await self.batches.batch(head)
        seen = None if head is None or top is None else (head, top.hash)
        if seen == self._head_seen:
            return
        low = min(self._active_from, 0 if head is None else head + 1)
        for number in range(low, self.journal.next_batch):
            batch = None if head is None or number > head else await self.batches.batch(number)
            if batch is not None and self._carries(number, batch):
                continue
            moved = self.journal.forget_from(number)
            self._active_from = min(self._active_from, number)
            if self.attester is not None:
                self.attester.rewind(number)
            log.warning(
                "poster: the sequencer sealed batch %d again (a reorg took the L1 origin of the version "
                "anchored): %d journal entries from batch %d on are stale; posting the new versions",
                number,
                moved,
                number,
            )
            break
        self._head_seen = seen

    def _carries(self, number: int, batch: Batch) -> bool:
        """Whether the journaled anchors of `number` carry exactly `batch` (every chunk, any version)."""
        outputs = encode_anchor_outputs(batch)
        chunks = by_chunk(self.journal.entries(number))
        if len(chunks) != len(outputs):
            return False
        for chunk, versions in chunks.items():
            if chunk >= len(outputs):
                return False
            want = list(outputs[chunk])
            if any([o for o in v.tx.vout if o.script_pubkey != self.spk] != want for v in versions):
                return False
        return True

    # --- reconcile -------------------------------------------------------------------------------------

    async def _where(self, e: JournalEntry, mempool: set[str]) -> _Where:
        if e.txid_hex in mempool:
            return _Where(mempool=True)
        if e.block_hash != NO_BLOCK:
            with contextlib.suppress(RPCError):
                header = await self.rpc.call("getblockheader", e.block_hash[::-1].hex())
                if int(header["confirmations"]) > 0:
                    return _Where(block=(e.block_hash, int(header["height"])))
        try:
            info = await self.rpc.call("getrawtransaction", e.txid_hex, 1)
        except RPCError as exc:
            if exc.code != RPC_INVALID_ADDRESS_OR_KEY:
                raise
            return _Where(block=await self._scan_blocks(e))  # a node without a transaction index
        if int(info.get("confirmations", 0)) > 0 and "blockhash" in info:
            header = await self.rpc.call("getblockheader", info["blockhash"])
            return _Where(block=(bytes.fromhex(info["blockhash"])[::-1], int(header["height"])))
        return _Where(mempool=int(info.get("confirmations", 0)) == 0 and "blockhash" not in info)

    async def _scan_blocks(self, e: JournalEntry) -> tuple[bytes, int] | None:
        """Look for `e` in the recent best-chain blocks (for a node without -txindex)."""
        depth = self.settings.fees.bump_after + self.settings.settle_confs + 10
        low = max(0, min(e.sent_height, e.block_height or e.sent_height) - depth)
        for height in range(self.tip, low - 1, -1):
            block_hash = await self.rpc.call("getblockhash", height)
            key = bytes.fromhex(block_hash)[::-1]
            txids = self._scan_cache.get(key)
            if txids is None:
                txids = frozenset((await self.rpc.call("getblock", block_hash, 1))["tx"])
                if len(self._scan_cache) >= SCAN_CACHE_MAX:
                    self._scan_cache.clear()
                self._scan_cache[key] = txids
            if e.txid_hex in txids:
                return key, height
        return None

    async def _reconcile(self, versions: list[JournalEntry], mempool: set[str]) -> None:
        """Bring one chunk's versions in line with the node (module docstring, step 1)."""
        where = {v.version: await self._where(v, mempool) for v in versions}
        mined = [v for v in versions if where[v.version].block is not None]
        if mined:
            await self._adopt_mined(versions, mined[0], where[mined[0].version].block)  # type: ignore[arg-type]
            return
        newest = max(versions, key=lambda v: v.version)
        if newest.state == TxState.JOURNALED and not where[newest.version].mempool:
            sent = await self._resend(newest)
            if sent.state == TxState.BROADCAST:
                self._record([sent], "poster.after_broadcast_record")
                versions = [sent if v.version == newest.version else v for v in versions]
                where[newest.version] = _Where(mempool=True)
        in_pool = [v for v in versions if where[v.version].mempool]
        if in_pool:
            self._keep_in_mempool(versions, max(in_pool, key=lambda v: v.version))
            return
        live = live_entry(versions)
        if live is not None:
            sent = await self._resend(live)
            if sent.state == TxState.BROADCAST:
                if live.state == TxState.CONFIRMED:
                    log.warning(
                        "poster: batch %d anchor %s reorged out; sent again", live.batch, live.txid_hex
                    )
                self._record([sent], "poster.after_broadcast_record")
                return
            if self._refusal == NON_FINAL:
                return  # a reorg took the chain below its nLockTime: the same transaction waits for it
        abandoned = [
            transition(v, TxState.ABANDONED) for v in versions if v.state in (*LIVE_STATES, TxState.REPLACED)
        ]
        self._record(abandoned, None)
        await self._recreate(versions)

    async def _adopt_mined(
        self, versions: list[JournalEntry], winner: JournalEntry, block: tuple[bytes, int]
    ) -> None:
        changes: list[JournalEntry] = []
        if winner.state != TxState.CONFIRMED or winner.block_hash != block[0]:
            changes.append(transition(winner, TxState.CONFIRMED, block_hash=block[0], block_height=block[1]))
            log.info(
                "poster: batch %d chunk %d anchored in block %d (%s)",
                winner.batch,
                winner.chunk,
                block[1],
                winner.txid_hex,
            )
        for v in versions:
            if v.version == winner.version:
                continue
            if v.state in (TxState.JOURNALED, TxState.BROADCAST):
                changes.append(transition(v, TxState.REPLACED))
            elif v.state == TxState.CONFIRMED:
                changes.append(transition(v, TxState.ABANDONED))
        if changes:
            self._record(changes, "poster.after_confirm_record")

    def _keep_in_mempool(self, versions: list[JournalEntry], top: JournalEntry) -> None:
        changes: list[JournalEntry] = []
        if top.state != TxState.BROADCAST:
            if top.state == TxState.CONFIRMED:
                log.warning(
                    "poster: batch %d anchor %s reorged out, back in the mempool", top.batch, top.txid_hex
                )
            changes.append(transition(top, TxState.BROADCAST, sent_height=self.tip))
        for v in versions:
            if v.version == top.version:
                continue
            if v.state in (TxState.JOURNALED, TxState.BROADCAST):
                changes.append(transition(v, TxState.REPLACED))
            elif v.state == TxState.CONFIRMED:
                changes.append(transition(v, TxState.ABANDONED))
        if changes:
            self._record(changes, None)

    async def _resend(self, e: JournalEntry) -> JournalEntry:
        """`e` sent again if the node accepts it now (BROADCAST), else `e` unchanged."""
        verdict = (await self.rpc.call("testmempoolaccept", [e.tx.hex()]))[0]
        self._refusal = None if verdict.get("allowed", False) else verdict.get("reject-reason")
        if not verdict.get("allowed", False):
            log.info(
                "poster: batch %d chunk %d version %d not acceptable: %s",
                e.batch,
                e.chunk,
                e.version,
                verdict.get("reject-reason"),
            )
            return e
        await self.rpc.call("sendrawtransaction", e.tx.hex())
        failpoint("poster.after_broadcast")
        return transition(e, TxState.BROADCAST, sent_height=self.tip)

    def _record(self, changes: Sequence[JournalEntry], point: str | None) -> None:
        if not changes:
            return
        self.journal.write(changes)
        if point is not None:
            failpoint(point)

    # --- building and sending ----------------------------------------------------------------------------

    def _reserved(self) -> set[OutPoint]:
        """Inputs of every transaction of ours that may still confirm: never spent twice."""
        out: set[OutPoint] = set()
        for number in range(self._active_from, self.journal.next_batch):
            for e in self.journal.entries(number):
                if e.state in (*LIVE_STATES, TxState.REPLACED):
                    out.update(txin.prevout for txin in e.tx.vin)
        return out

    async def _build(
        self,
        outputs: Sequence[Sequence[TxOut]],
        coins: Sequence[tuple[OutPoint, TxOut]],
        rate: int,
        locktime: int,
    ) -> list[tuple[Tx, int]] | None:
        """Signed transactions with their fees, each passing testmempoolaccept; None if any fails."""
        try:
            txs = build_anchor_transactions(outputs, coins, self.spk, rate, self.keyfile.key, locktime)
        except InvalidInput as exc:
            log.warning("poster: cannot build anchor transactions: %s", exc)
            return None
        values = {op: out.value for op, out in coins}
        result = []
        for tx in txs:
            verdict = (await self.rpc.call("testmempoolaccept", [tx.hex()]))[0]
            if not verdict.get("allowed", False):
                log.warning("poster: node refuses anchor %s: %s", tx.txid_hex, verdict.get("reject-reason"))
                return None
            fee = sum(values[txin.prevout] for txin in tx.vin) - sum(o.value for o in tx.vout)
            result.append((tx, fee))
        return result

    async def _fee_rate(self) -> int:
        estimate = await self.rpc.call("estimatesmartfee", self.settings.fees.conf_target)
        return clamp_fee_rate(estimate, self.settings.fees)

    async def _send_new(self, entries: list[JournalEntry], next_batch: int | None, prefix: str) -> None:
        """Journal, then send, then record: the three durable steps, each with its failpoint."""
        self.journal.write(entries, next_batch=next_batch)
        failpoint(f"{prefix}after_journal")
        sent = []
        for e in entries:
            try:
                await self.rpc.call("sendrawtransaction", e.tx.hex())
            except RPCError as exc:
                # Journaled: the next round re-sends it or abandons it and builds another.
                log.warning("poster: sending %s failed: %s", e.txid_hex, exc)
                continue
            failpoint(f"{prefix}after_broadcast")
            sent.append(transition(e, TxState.BROADCAST, sent_height=self.tip))
        self._record(sent, f"{prefix}after_broadcast_record")

    async def _recreate(self, versions: list[JournalEntry]) -> None:
        """A new version of a chunk whose every version is gone, from fresh coins at today's rate."""
        old = max(versions, key=lambda v: v.version)
        outs = [o for o in old.tx.vout if o.script_pubkey != self.spk]
        coins = await spendable_coins(
            self.rpc, self.keyfile.btc_address, self.spk, self.tip, self._reserved()
        )
        rate = await self._fee_rate()
        built = await self._build([outs], coins, rate, old.tx.locktime)
        if built is None:
            return
        tx, fee = built[0]
        entry = JournalEntry(
            old.batch, old.chunk, old.chunk_count, old.version + 1, tx, fee, rate, TxState.JOURNALED, self.tip
        )
        log.warning("poster: batch %d chunk %d re-posted as %s", old.batch, old.chunk, tx.txid_hex)
        await self._send_new([entry], None, "poster.")

    async def _bump_stuck(self) -> None:
        for number in range(self._active_from, self.journal.next_batch):
            for versions in by_chunk(self.journal.entries(number)).values():
                live = live_entry(versions)
                if live is None or live.state != TxState.BROADCAST:
                    continue
                if self.tip - live.sent_height < self.settings.fees.bump_after:
                    continue
                await self._bump(live)

    async def _bump(self, live: JournalEntry) -> None:
        """Replace `live` at a higher rate, spending exactly its inputs (so the two conflict)."""
        rate = bump_fee_rate(live.fee_rate, self.settings.fees)
        if rate is None:
            return  # at the ceiling: wait
        coins: list[tuple[OutPoint, TxOut]] = []
        for txin in live.tx.vin:
            coin = await self.rpc.call("gettxout", txin.prevout.txid_hex, txin.prevout.vout, False)
            if coin is None:
                return  # spent or gone: the next reconcile sees where it went
            coins.append((txin.prevout, TxOut(to_sats(coin["value"]), self.spk)))
        outs = [o for o in live.tx.vout if o.script_pubkey != self.spk]
        built = await self._build([outs], coins, rate, live.tx.locktime)
        if built is None:
            return
        tx, fee = built[0]
        if {i.prevout for i in tx.vin} != {i.prevout for i in live.tx.vin}:
            return  # fewer inputs would not conflict with every earlier version
        if not pays_for_replacement(live.fee, live.tx.vsize, fee, tx.vsize):
            log.warning("poster: bump of %s does not pay for the replacement", live.txid_hex)
            return
        entry = JournalEntry(
            live.batch,
            live.chunk,
            live.chunk_count,
            live.version + 1,
            tx,
            fee,
            rate,
            TxState.JOURNALED,
            self.tip,
        )
        log.info(
            "poster: batch %d chunk %d stuck %d blocks; bumped %d -> %d sat/vB: %s",
            live.batch,
            live.chunk,
            self.tip - live.sent_height,
            live.fee_rate,
            rate,
            tx.txid_hex,
        )
        await self._send_new([entry], None, "poster.bump.")

    async def _post_sealed(self) -> None:
        head = await self.batches.head()
        while head is not None and self.journal.next_batch <= head and not self._stopping.is_set():
            number = self.journal.next_batch
            if number > 0 and not self._broadcast(number - 1):
                return  # posting in order: N waits until N-1 is broadcast
            batch = await self.batches.batch(number)
            if batch is None:
                raise Critical(f"sealed batch {number} missing from the sequencer")
            deadline = batch.header.l1_origin_height + self.params.max_l1_origin_lag + 1
            if self.tip + 1 > deadline:
                # No block from the next one on may anchor it (replay: L1OriginTooOld); with the poster in
                # its process the sequencer seals it again on a fresh origin.
                if number not in self._too_late:
                    self._too_late.add(number)
                    log.warning(
                        "poster: batch %d (L1 origin %d) can no longer be anchored in time (last block %d, "
                        "tip %d): waiting for the sequencer to seal it again",
                        number,
                        batch.header.l1_origin_height,
                        deadline,
                        self.tip,
                    )
                return
            outputs = encode_anchor_outputs(batch)
            coins = await spendable_coins(
                self.rpc, self.keyfile.btc_address, self.spk, self.tip, self._reserved()
            )
            rate = await self._fee_rate()
            # No block below origin + K may hold the anchor, whatever reorg puts it back into a mempool:
            # replay would reject it (L1OriginTooRecent) and nothing would post it again.
            locktime = batch.header.l1_origin_height + self.params.k_deposit_confs - 1
            built = await self._build(outputs, coins, rate, locktime)
            if built is None:
                return  # no coins yet: retried next round
            entries = [
                JournalEntry(number, i, len(built), 0, tx, fee, rate, TxState.JOURNALED, self.tip)
                for i, (tx, fee) in enumerate(built)
            ]
            await self._send_new(entries, number + 1, "poster.")
            log.info("poster: batch %d posted: %s", number, ", ".join(e.txid_hex for e in entries))

    def _broadcast(self, number: int) -> bool:
        anchor = self.batch_anchor(number)
        return anchor.status in ("broadcast", "anchored", "final")
