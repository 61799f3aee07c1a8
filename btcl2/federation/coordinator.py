"""The payout coordinator: batches pending withdrawals into one deterministic payout at a time, collects M
signatures, broadcasts, follows the payout to F confirmations (bumping its fee by RBF when it waits),
confirms EVM payouts on the Bridge, and marks every withdrawal paid.

Every step is journaled (btcl2.federation.store.CoordinatorStore) before its effect leaves the process,
and on restart the journaled payout is resumed: signers sign the identical transaction again, a
rebroadcast is harmless, and confirmPayout is checked against the Bridge before it is sent. The one
payout that is rebuilt is a dead one: when an input of the payout in flight is gone and a conflicting
spend at least K deep proves it can never confirm (btcl2.federation.death), the entry is journaled DEAD
with the reason, then its withdrawals are journaled into a new payout from other coins (one write), which
signers accept only after proving the death on their own nodes. A payout never broadcast that signers
refuse because a withdrawal is unknown, and that the coordinator's own final view no longer holds (an EVM
reorg deeper than the finality depth), is journaled ABANDONED and its other withdrawals are journaled into
a replacement that spends one of its inputs, so that at most one of the two can ever confirm. The
coordinator holds no key of the multisig and is trusted with nothing: a payout it builds wrongly is
refused by the signers.

Named failpoints (`btcl2/failpoints.py`, `BTCL2_FAILPOINT=<name>` kills the process there, for crash tests):
`coordinator.proposed`, `.signed`, `.broadcast`, `.confirmed`, `.evm_confirmed`, `.done`, `.dead`,
`.rebuilt`, `.abandoned`.
"""

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from aiohttp import web

from btcl2.bitcoin.keys import verify_ecdsa
from btcl2.bitcoin.rpc import RPCError, SyncBitcoinRPC
from btcl2.bitcoin.tx import OutPoint, Tx, TxOut
from btcl2.bridge.evm import ContractRevert, EvmClient, account
from btcl2.errors import BtcL2Error, Critical, Temporary
from btcl2.failpoints import failpoint
from btcl2.federation.checks import input_depth
from btcl2.federation.client import post_to_signer
from btcl2.federation.config import CoordinatorConfig, SignerEndpoint
from btcl2.federation.death import PayoutOrigins, prove_dead, read_origins
from btcl2.federation.errors import InsufficientFunds, SignerUnavailable
from btcl2.federation.payout import (
    PayoutItem,
    WithdrawalKind,
    WithdrawalRef,
    build_payout,
    estimate_vsize,
    finalize,
    input_sighash,
    min_change,
    paid_total,
    select_coins,
)
from btcl2.federation.store import (
    ABANDONED,
    BROADCAST,
    CONFIRMED,
    DEAD,
    DONE,
    PROPOSED,
    REPLACED,
    SIGNED,
    CoordinatorStore,
    PayoutJournal,
    Variant,
)
from btcl2.federation.views import BitcoinView, EvmView, L2View
from btcl2.httpguard import guarded_app, rest_error

log = logging.getLogger("btcl2.coordinator")
SIGN_TIMEOUT = 60.0
"""Seconds a signer may take (its first replay of Bitcoin included)."""
RPC_ALREADY_KNOWN = (-27,)
"""RPC_VERIFY_ALREADY_IN_CHAIN."""


def request_signature(endpoint: SignerEndpoint, tx: Tx, amounts: list[int]) -> dict[str, Any]:
    """POST /sign to one signer; the JSON answer (200 or a refusal), SignerUnavailable if unreachable."""
    body = {"tx": tx.hex(), "amounts": amounts}
    return post_to_signer(endpoint.url, "/sign", endpoint.token, body, SIGN_TIMEOUT)


class Coordinator:
    """One payout at a time, driven by `step()`; `run()` loops it and serves the status API."""

    def __init__(self, config: CoordinatorConfig, store: CoordinatorStore, rpc: SyncBitcoinRPC) -> None:
        self.config = config
        self.params = config.params
        self.store = store
        self.bitcoin = BitcoinView(rpc, self.params)
        self.l2 = L2View(rpc, self.params, config.from_height)
        self.evm: EvmView | None = None
        if config.evm_rpc is not None and config.bridge is not None:
            self.evm = EvmView(EvmClient(config.evm_rpc), config.bridge, config.evm_confirmations)
        self.pending_refs: set[WithdrawalRef] = set()
        self.refusals: dict[str, str] = {}
        self._death_scanned: tuple[int, str] | None = None
        """(payout number, best block) of the last fruitless search for a proof of death."""

    # --- discovery ---------------------------------------------------------------------------------

    def pending(self) -> list[PayoutItem]:
        """Withdrawals final on their chain (burns at the EVM finality depth) and not paid (journal,
        Bitcoin), in payout order. The Bridge's payoutTxid is not consulted: Bitcoin says what is paid."""
        snap = self.l2.snapshot()
        known: dict[WithdrawalRef, PayoutItem] = dict(snap.final)
        if self.evm is not None:
            known.update(self.evm.withdrawals())
        out = []
        for ref, item in known.items():
            if self.store.paid(ref) is not None or ref in snap.paid:
                continue
            if item.amount < self.params.min_withdrawal_sats:  # a Bridge deployed with a lower minimum
                log.warning("%s: %d sats is below min_withdrawal_sats, never paid", ref.text, item.amount)
                continue
            out.append(item)
        out.sort(key=lambda i: i.ref.encode())
        self.pending_refs = {i.ref for i in out}
        return out[: self.config.max_batch]

    def propose(self) -> PayoutJournal | None:
        """Build and journal the next payout; None when nothing is pending."""
        items = self.pending()
        if not items:
            return None
        amounts, tx, fee, origins = self._build(items)
        entry = self.store.propose(items, amounts, tx, fee, time.time(), origins)
        log.info("payout %d proposed: %s, %d withdrawals, fee %d", entry.number, tx.txid_hex, len(items), fee)
        failpoint("coordinator.proposed")
        return entry

    def _build(
        self, items: list[PayoutItem], prefer: frozenset[OutPoint] = frozenset()
    ) -> tuple[list[int], Tx, int, PayoutOrigins]:
        """The payout of `items` from coins at least K deep (coinbases mature), and its inputs' origins.

        With `prefer` (the inputs of an abandoned payout), the coins are chosen among those alone when they
        suffice: the replacement then spends one of the abandoned payout's inputs, the conflict signers need.
        """
        depth = input_depth(self.config.min_input_confirmations, self.params)
        coins = self.bitcoin.federation_coins(depth)
        rate = self.config.fee_rate
        try:
            selected = select_coins([c for c in coins if c.outpoint in prefer], items, self.params, rate)
        except InsufficientFunds:
            selected = select_coins(coins, items, self.params, rate)
        tx = build_payout(items, selected, self.params, rate)
        value = {c.outpoint: c.amount for c in selected}
        amounts = [value[i.prevout] for i in tx.vin]
        fee = sum(amounts) - sum(o.value for o in tx.vout)
        rpc = self.bitcoin.rpc
        origins = read_origins(rpc, [i.prevout for i in tx.vin], str(rpc.call("getbestblockhash")))
        return amounts, tx, fee, origins

    # --- dead payouts ------------------------------------------------------------------------------

    def _death(self, entry: PayoutJournal) -> str | None:
        """Why the payout in flight can never confirm, or None (looked for only once an input is gone)."""
        tx = entry.current.tx
        if all(self.bitcoin.utxo(i.prevout) is not None for i in tx.vin) or self._mined(entry) is not None:
            return None
        scan = (entry.number, str(self.bitcoin.rpc.call("getbestblockhash")))
        if scan == self._death_scanned:
            return None  # nothing new to scan until the chain moves
        if entry.origins is None:
            log.warning("payout %d: an input is gone; no origins were journaled to prove why", entry.number)
            self._death_scanned = scan
            return None
        reason = prove_dead(self.bitcoin.rpc, tx, entry.origins, self.params)
        self._death_scanned = None if reason is not None else scan
        return reason

    def mark_dead(self, entry: PayoutJournal, reason: str) -> None:
        """Journal the payout DEAD with its reason (it stays the one in flight until rebuilt)."""
        entry.state, entry.dead_reason = DEAD, reason
        self.store.save(entry)
        log.warning("payout %d is dead: %s", entry.number, reason)
        failpoint("coordinator.dead")

    def rebuild(self, dead: PayoutJournal) -> PayoutJournal | None:
        """Journal a new payout of a dead (or abandoned) one's withdrawals in the same write; None when an
        abandoned payout leaves nothing to pay (the in-flight slot is then cleared)."""
        items = [i for i in dead.items if i.ref.text not in dead.vanished]
        if not items:
            self.store.close_abandoned(dead)
            log.warning("payout %d abandoned with nothing left to pay", dead.number)
            return None
        prefer = frozenset(i.prevout for i in dead.current.tx.vin) if dead.state == ABANDONED else frozenset()
        amounts, tx, fee, origins = self._build(items, prefer)
        entry = self.store.propose(items, amounts, tx, fee, time.time(), origins, dead)
        log.warning("payout %d replaces %s payout %d: %s", entry.number, dead.state, dead.number, tx.txid_hex)
        failpoint("coordinator.rebuilt")
        return entry

    # --- abandoned payouts ---------------------------------------------------------------------------

    def _vanished(self, entry: PayoutJournal) -> dict[str, str]:
        """Ref text -> why, for each withdrawal of `entry` its chain's final view no longer holds as built."""
        snap = self.l2.snapshot()
        evm = self.evm.withdrawals() if self.evm is not None else None
        gone = {}
        for item in entry.items:
            view = snap.final if item.ref.kind == WithdrawalKind.L2 else evm
            if view is not None and view.get(item.ref) != item:
                gone[item.ref.text] = (
                    "not in the coordinator's final view (a reorg deeper than the finality depth?)"
                )
        return gone

    def abandon(self, entry: PayoutJournal, refused: list[str]) -> bool:
        """Journal a never-broadcast payout ABANDONED when the coordinator's own final view agrees with the
        signers that one of its withdrawals is gone; True when it did."""
        if entry.broadcast_height is not None or any(v.signed_hex for v in entry.variants):
            return False  # a broadcast variant may still confirm: only a proof of death ends it
        gone = self._vanished(entry)
        if not gone:
            return False
        entry.state, entry.vanished = ABANDONED, sorted(gone)
        entry.dead_reason = "; ".join(f"{r} {why}" for r, why in sorted(gone.items()))
        entry.dead_reason += f"; signers refused: {' | '.join(refused)}"
        self.store.save(entry)
        log.warning("payout %d abandoned before broadcast: %s", entry.number, entry.dead_reason)
        failpoint("coordinator.abandoned")
        return True

    # --- signatures --------------------------------------------------------------------------------

    def collect(self, entry: PayoutJournal) -> None:
        """Ask signers until M valid signatures are journaled; Temporary while fewer."""
        variant = entry.current
        m = self.params.federation_m
        unknown: list[str] = []
        for endpoint in self.config.signers:
            if len(variant.signatures) >= m:
                break
            try:
                answer = request_signature(endpoint, variant.tx, entry.amounts)
            except SignerUnavailable as exc:
                log.warning("payout %d: %s", entry.number, exc)
                continue
            if "error" in answer:
                self.refusals[endpoint.url] = f"{answer.get('error')}: {answer.get('message')}"
                log.warning(
                    "payout %d refused by %s: %s", entry.number, endpoint.url, self.refusals[endpoint.url]
                )
                if answer.get("error") == "UnknownWithdrawal":
                    unknown.append(self.refusals[endpoint.url])
                continue
            pubkey = bytes.fromhex(str(answer.get("pubkey", "")))
            sigs = [bytes.fromhex(s) for s in answer.get("signatures", [])]
            if not self._valid(variant.tx, entry.amounts, pubkey, sigs):
                log.error("payout %d: %s returned invalid signatures", entry.number, endpoint.url)
                continue
            variant.signatures[pubkey.hex()] = [s.hex() for s in sigs]
            self.store.save(entry)
        if len(variant.signatures) < m:
            if unknown and self.abandon(entry, unknown):
                return
            raise Temporary(f"payout {entry.number}: {len(variant.signatures)} of {m} signatures")
        sigs_by_key = {bytes.fromhex(k): [bytes.fromhex(s) for s in v] for k, v in variant.signatures.items()}
        variant.signed_hex = finalize(variant.tx, sigs_by_key, self.params).hex()
        entry.state = SIGNED
        self.store.save(entry)
        failpoint("coordinator.signed")

    def _valid(self, tx: Tx, amounts: list[int], pubkey: bytes, sigs: list[bytes]) -> bool:
        if pubkey not in self.params.federation_pubkeys or len(sigs) != len(tx.vin):
            return False
        return all(
            s[-1:] == b"\x01" and verify_ecdsa(pubkey, s[:-1], input_sighash(tx, i, a, self.params))
            for i, (s, a) in enumerate(zip(sigs, amounts, strict=True))
        )

    # --- broadcast and follow ----------------------------------------------------------------------

    def broadcast(self, entry: PayoutJournal) -> None:
        """Send the current variant (a repeat is harmless) and journal BROADCAST."""
        signed = entry.current.signed_hex
        assert signed is not None
        self._send(signed)
        if entry.state != BROADCAST:
            entry.state = BROADCAST
            entry.broadcast_height = self.bitcoin.tip_height()
            entry.broadcast_at = entry.broadcast_at or time.time()
            self.store.save(entry)
            log.info("payout %d broadcast: %s", entry.number, Tx.from_hex(signed).txid_hex)
            failpoint("coordinator.broadcast")

    def _send(self, signed_hex: str) -> None:
        try:
            self.bitcoin.rpc.call("sendrawtransaction", signed_hex)
        except RPCError as exc:
            if exc.code in RPC_ALREADY_KNOWN or "already" in exc.message:
                return
            # A spent input means a variant (or, after a crash, this one) confirmed: `follow` will see it.
            log.warning("sendrawtransaction: %s", exc.message)

    def _mined(self, entry: PayoutJournal) -> tuple[str, int, int] | None:
        """(txid, height, confirmations) of the variant in the best chain, if any."""
        since = entry.broadcast_height if entry.broadcast_height is not None else self.bitcoin.tip_height()
        start = min(since, self.bitcoin.tip_height()) - 1
        for variant in reversed(entry.variants):
            if variant.signed_hex is None:
                continue
            txid = Tx.from_hex(variant.signed_hex).txid_hex
            found = self.bitcoin.confirmations(txid, start)
            if found is not None:
                return txid, found[0], found[1]
        return None

    def follow(self, entry: PayoutJournal) -> None:
        """Look for any variant in the chain; CONFIRMED at F confirmations; bump the fee when it waits."""
        mined = self._mined(entry)
        if mined is not None:
            txid, height, confs = mined
            if confs >= self.params.f_anchor_confs:
                entry.state, entry.confirmed_txid, entry.confirmed_height = CONFIRMED, txid, height
                self.store.save(entry)
                log.info("payout %d confirmed: %s at height %d", entry.number, txid, height)
                failpoint("coordinator.confirmed")
            return
        assert entry.current.signed_hex is not None
        self._send(entry.current.signed_hex)
        since = entry.broadcast_height if entry.broadcast_height is not None else self.bitcoin.tip_height()
        if self.bitcoin.tip_height() - since >= self.config.bump_after_blocks:
            self.bump(entry)

    def bump(self, entry: PayoutJournal) -> None:
        """Journal an RBF replacement: same inputs and payouts, a higher fee taken from the change."""
        old = entry.current
        n = len(entry.items)
        vsize = estimate_vsize(len(old.tx.vin), old.tx.vout, self.params)
        fee = min(max(old.fee + vsize, old.fee * 3 // 2), self.config.max_fee_rate * vsize)
        change = sum(entry.amounts) - paid_total(entry.items, self.params) - fee
        if fee <= old.fee or change < 0:
            log.warning("payout %d: cannot bump the fee further", entry.number)
            return
        outs = list(old.tx.vout[:n])
        if change >= min_change(self.params):
            outs.append(TxOut(change, self.params.federation_script_pubkey))
        else:
            fee += change
        outs.append(old.tx.vout[-1])
        tx = replace(old.tx, vout=tuple(outs))
        entry.variants.append(Variant(tx, fee))
        entry.state = PROPOSED
        self.store.save(entry)
        log.info("payout %d: fee bump to %d sats: %s", entry.number, fee, tx.txid_hex)

    # --- EVM and completion --------------------------------------------------------------------------

    def confirm_evm(self, entry: PayoutJournal) -> None:
        """confirmPayout for each EVM withdrawal (checked on the Bridge first), then DONE.

        A burn that is no longer in the Bridge's finalized view (an EVM reorg deeper than the finality depth
        took it), or that confirmPayout calls unknown, or whose payout the Bridge records otherwise, was
        still paid on Bitcoin: it is journaled in `reconcile`, logged and shown in the status, never a halt.
        """
        assert entry.confirmed_txid is not None
        txid = bytes.fromhex(entry.confirmed_txid)[::-1]
        final: dict[WithdrawalRef, PayoutItem] | None = None
        for item in entry.items:
            ref = item.ref
            if (
                ref.kind != WithdrawalKind.EVM
                or ref.id.hex() in entry.evm_confirmed
                or ref.text in entry.reconcile
            ):
                continue
            if self.evm is None or self.config.confirmer_key is None:
                log.warning(
                    "payout %d: no EVM confirmer configured; %s not confirmed on the Bridge",
                    entry.number,
                    ref.text,
                )
                continue
            final = final if final is not None else self.evm.withdrawals()
            problem = self._confirm_one(item, final.get(ref), txid)
            if problem is None:
                entry.evm_confirmed.append(ref.id.hex())
            else:
                entry.reconcile[ref.text] = problem
                log.error(
                    "payout %d: RECONCILE %s (paid on Bitcoin by %s): %s",
                    entry.number, ref.text, entry.confirmed_txid, problem,
                )  # fmt: skip
            self.store.save(entry)
            failpoint("coordinator.evm_confirmed")
        entry.state = DONE
        self.store.save(entry)
        log.info(
            "payout %d done: %d withdrawals paid by %s", entry.number, len(entry.items), entry.confirmed_txid
        )
        failpoint("coordinator.done")

    def _confirm_one(self, item: PayoutItem, final: PayoutItem | None, txid: bytes) -> str | None:
        """confirmPayout of one burn; None when the Bridge records `txid`, else why it must be reconciled."""
        assert self.evm is not None and self.config.confirmer_key is not None
        ref = item.ref
        if final is None:
            return "the burn is not in the Bridge's finalized view (reorged out of the EVM chain?)"
        if final != item:
            return f"the finalized burn now names {final.amount} sats to {final.script.hex()}"
        if not any(self.evm.payout_txid(ref.id)):
            try:
                sender = account(self.config.confirmer_key)
                self.evm.client.transact(self.evm.bridge, "confirmPayout", ref.id, txid, sender=sender)
            except ContractRevert as exc:
                if exc.name == "UnknownWithdrawal":
                    return "confirmPayout reverted UnknownWithdrawal: the Bridge has no such burn"
                if exc.name != "PayoutAlreadyConfirmed":
                    raise Critical(f"confirmPayout({ref.text}) reverted: {exc}") from exc
        recorded = self.evm.payout_txid(ref.id)
        if recorded != txid:
            return f"the Bridge records payout {recorded[::-1].hex()}"
        return None

    def step(self) -> bool:
        """Advance the payout in flight (or start one); True when something changed."""
        entry = self.store.active()
        if entry is None:
            entry = self.propose()
            if entry is None:
                return False
        before = (entry.state, len(entry.variants))
        if entry.state == PROPOSED and len(entry.variants) > 1 and self._mined(entry) is not None:
            # An earlier variant was mined while its replacement waited for signatures: follow that one.
            entry.state = BROADCAST
            self.store.save(entry)
        if entry.state in (PROPOSED, BROADCAST):
            reason = self._death(entry)
            if reason is not None:
                self.mark_dead(entry, reason)
        if entry.state in REPLACED:
            rebuilt = self.rebuild(entry)
            if rebuilt is None:
                return True
            entry = rebuilt
        if entry.state == PROPOSED:
            self.collect(entry)
            if entry.state == ABANDONED:
                return True
        if entry.state == SIGNED:
            self.broadcast(entry)
        elif entry.state == BROADCAST:
            self.follow(entry)
        if entry.state == CONFIRMED:
            self.confirm_evm(entry)
        return entry.state == DONE or (entry.state, len(entry.variants)) != before

    # --- status and service ------------------------------------------------------------------------

    def status(self, ref: WithdrawalRef) -> dict[str, Any] | None:
        """requested / signed k/M / broadcast / confirmed, with the Bitcoin txid; None when unknown."""
        m = self.params.federation_m
        entry = self.store.payout_of(ref)
        if entry is not None and entry.state == ABANDONED and ref.text in entry.vanished:
            entry = None if ref in self.pending_refs else entry  # it came back: requested again
        if entry is None:
            if ref in self.pending_refs:
                return {"id": ref.text, "status": "requested", "signatures": 0, "m": m, "txid": None}
            return None
        variant = entry.current
        txid = entry.confirmed_txid or (
            Tx.from_hex(variant.signed_hex).txid_hex if variant.signed_hex else None
        )
        status = {
            PROPOSED: "signing",
            SIGNED: "signed",
            BROADCAST: "broadcast",
            CONFIRMED: "confirmed",
            DONE: "confirmed",
            DEAD: "rebuilding",
            ABANDONED: "abandoned",
        }[entry.state]
        found: dict[str, Any] = {
            "id": ref.text,
            "status": status,
            "signatures": min(len(variant.signatures), m),
            "m": m,
            "txid": txid,
            "payout": entry.number,
            "paid": entry.state == DONE,
            "fee": variant.fee,
            "confirmedHeight": entry.confirmed_height,
            "reconcile": entry.reconcile.get(ref.text),
            "dead": self._dead_history(entry),
        }
        if entry.state == PROPOSED and self.refusals:
            found["refusals"] = dict(self.refusals)
        return found

    def _dead_history(self, entry: PayoutJournal) -> list[dict[str, Any]]:
        """The dead payouts this one rebuilt (or this one, when dead), newest first, with the reasons."""
        out = []
        cursor: PayoutJournal | None = entry if entry.state in REPLACED else None
        if cursor is None and entry.predecessor is not None:
            cursor = self.store.payout(entry.predecessor)
        while cursor is not None:
            out.append(
                {
                    "payout": cursor.number,
                    "txid": cursor.current.tx.txid_hex,
                    "state": cursor.state,
                    "reason": cursor.dead_reason,
                }
            )
            cursor = None if cursor.predecessor is None else self.store.payout(cursor.predecessor)
        return out

    async def _status_handler(self, request: web.Request) -> web.Response:
        try:
            ref = WithdrawalRef.parse(request.match_info["ref"])
        except BtcL2Error as exc:
            return rest_error(request, 400, "InvalidInput", str(exc))
        found = await asyncio.to_thread(self.status, ref)
        if found is None:
            return web.json_response(
                {"error": "NotFound", "message": f"unknown withdrawal {ref.text}"}, status=404
            )
        return web.json_response(found)

    async def run(self) -> None:
        """Serve the status API and drive payouts until cancelled; Critical errors stop the loop."""
        app = guarded_app()
        app.router.add_get("/withdrawal/{ref}", self._status_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.config.host, self.config.port).start()
        log.info("coordinator status API on %s:%d", self.config.host, self.config.port)
        try:
            while True:
                try:
                    progressed = await asyncio.to_thread(self.step)
                except Critical:
                    raise
                except (Temporary, RPCError) as exc:
                    log.warning("%s: %s", type(exc).__name__, exc)
                    progressed = False
                if not progressed:
                    await asyncio.sleep(self.config.poll_interval)
        finally:
            await runner.cleanup()
