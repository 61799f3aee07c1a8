"""What a federation member learns from its OWN nodes: Bitcoin outputs, Bridge burns, and L2 withdrawals
from its own replay of Bitcoin. Nothing here trusts the coordinator or the sequencer.
"""

import threading
from dataclasses import dataclass, field
from typing import Any

from btcl2.bitcoin.rpc import RPCError, SyncBitcoinRPC, to_sats
from btcl2.bitcoin.tx import OutPoint
from btcl2.bridge.artifacts import load_artifact
from btcl2.bridge.evm import Contract, EvmClient
from btcl2.core.params import Params
from btcl2.core.state import State
from btcl2.core.types import Withdrawal
from btcl2.derive.frames import AnchoredBatch
from btcl2.derive.l1 import L1Block, RpcBlockSource
from btcl2.derive.pipeline import Derivation, Outcome
from btcl2.federation.payout import FederationCoin, PayoutItem, WithdrawalKind, WithdrawalRef, paid_refs


@dataclass(frozen=True, slots=True)
class Utxo:
    """An unspent output as the node's UTXO set holds it (confirmed only)."""

    amount: int
    """Value in satoshis."""
    script_pubkey: bytes
    """Its script."""
    confirmations: int
    """Depth of its block."""
    coinbase: bool = False
    """Created by a coinbase (spendable only at COINBASE_MATURITY confirmations)."""


COINBASE_MATURITY = 100
"""Confirmations a coinbase output needs before it may be spent (Bitcoin consensus)."""


def spendable_depth(confirmations: int, coinbase: bool, min_confirmations: int) -> bool:
    """Whether an output this deep may be spent by a payout: `min_confirmations`, and mature if a coinbase."""
    return confirmations >= min_confirmations and (not coinbase or confirmations >= COINBASE_MATURITY)


class BitcoinView:
    """The member's own Bitcoin node."""

    def __init__(self, rpc: SyncBitcoinRPC, params: Params) -> None:
        self.rpc = rpc
        self._params = params

    @property
    def params(self) -> Params:
        """The rollup parameters it reads the chain with."""
        return self._params

    def tip_height(self) -> int:
        """getblockcount."""
        return int(self.rpc.call("getblockcount"))

    def utxo(self, outpoint: OutPoint) -> Utxo | None:
        """gettxout without the mempool: the output if it is unspent in the best chain, else None."""
        found = self.rpc.call("gettxout", outpoint.txid_hex, outpoint.vout, False)
        if found is None:
            return None
        spk = bytes.fromhex(found["scriptPubKey"]["hex"])
        return Utxo(
            to_sats(found["value"]), spk, int(found["confirmations"]), bool(found.get("coinbase", False))
        )

    def federation_coins(self, min_confirmations: int) -> list[FederationCoin]:
        """Every federation output with at least `min_confirmations`, coinbases only once mature
        (scantxoutset raw(...))."""
        spk = self._params.federation_script_pubkey.hex()
        found = self.rpc.call("scantxoutset", "start", [f"raw({spk})"])
        coins = []
        for u in found.get("unspents", []):
            confirmations = int(u.get("confirmations", 0))
            if spendable_depth(confirmations, bool(u.get("coinbase", False)), min_confirmations):
                coins.append(
                    FederationCoin(OutPoint.from_hex(u["txid"], int(u["vout"])), to_sats(u["amount"]))
                )
        return coins

    def confirmations(self, txid_hex: str, since_height: int) -> tuple[int, int] | None:
        """(height, confirmations) of a transaction mined at or after `since_height`, None if not found."""
        tip = self.tip_height()
        for height in range(max(since_height, 0), tip + 1):
            block = self.rpc.call("getblock", self.rpc.call("getblockhash", height), 1)
            if txid_hex in block["tx"]:
                return height, tip - height + 1
        return None


class EvmView:
    """The member's own EVM node: WithdrawalRequested events of the configured Bridge at the EVM finality
    depth, and payoutTxid (the confirmer's hint, never proof of payment)."""

    def __init__(self, client: EvmClient, bridge_address: str, confirmations: int) -> None:
        self.client = client
        self.bridge = Contract(bridge_address, load_artifact("Bridge"))
        self._confirmations = max(1, confirmations)
        self._deploy_block: int | None = None

    @property
    def confirmations(self) -> int:
        """EVM blocks a burn needs, its own included (the finality depth)."""
        return self._confirmations

    def deploy_block(self) -> int:
        """The Bridge's deployBlock(): event scans start there, not at block 0 (read once)."""
        if self._deploy_block is None:
            self._deploy_block = int(self.client.call(self.bridge, "deployBlock"))
        return self._deploy_block

    def withdrawals(self) -> dict[WithdrawalRef, PayoutItem]:
        """Every burn at least `confirmations` deep, by ref (events of the Bridge's address only): a burn
        above that depth may still be reorged out, and is not believed yet."""
        last = self.client.block_number() - self._confirmations + 1
        first = self.deploy_block()
        if last < first:
            return {}
        out: dict[WithdrawalRef, PayoutItem] = {}
        for event in self.client.get_events(self.bridge, "WithdrawalRequested", first, last):
            ref = WithdrawalRef.evm(bytes(event.args["id"]))
            out[ref] = PayoutItem(ref, bytes(event.args["script"]), int(event.args["amount"]))
        return out

    def payout_txid(self, withdrawal_id: bytes) -> bytes:
        """The Bridge's payoutTxid(id): 32 zero bytes while unreported. A hint: Bitcoin says what is paid."""
        value: Any = self.client.call(self.bridge, "payoutTxid", withdrawal_id)
        return bytes(value)


@dataclass
class L2Snapshot:
    """One replay of Bitcoin by this member."""

    tip_hash: str
    """The best block it covered."""
    tip_height: int
    """Its height."""
    final: dict[WithdrawalRef, PayoutItem] = field(default_factory=dict)
    """L2 withdrawals in batches that replayed and whose anchor has F confirmations."""
    unfinal: dict[WithdrawalRef, int] = field(default_factory=dict)
    """Verified withdrawals whose anchor is not yet final -> anchor confirmations."""
    batch_of: dict[WithdrawalRef, int] = field(default_factory=dict)
    """Batch number of every verified withdrawal."""
    paid: dict[WithdrawalRef, str] = field(default_factory=dict)
    """Withdrawals paid by a federation payout mined in the scanned chain -> its txid (display order)."""
    divergence: str | None = None
    """Why replay stopped matching, when it did (no withdrawal past that point is believed)."""
    roots: dict[int, tuple[bytes, bytes, bytes]] = field(default_factory=dict)
    """Applied batch -> (batch hash, post-state root, exits root), what this member attests."""
    anchor_heights: dict[int, int] = field(default_factory=dict)
    """Applied batch -> height of the block that completed its anchor (attested only once K deep)."""


class _Replay(Derivation):
    """The replay pipeline, also noting each applied batch's withdrawals and every federation payout seen."""

    def __init__(self, source: RpcBlockSource, params: Params, from_height: int) -> None:
        self.batches: list[tuple[int, int, list[WithdrawalRef]]] = []
        self.paid: dict[WithdrawalRef, str] = {}
        self._fed_params = params
        super().__init__(source, params, from_height)

    def _reset(self) -> None:
        super()._reset()
        self.batches = []
        self.paid = {}

    def _block(self, l1: L1Block) -> None:
        super()._block(l1)
        for tx in l1.block.txs:
            for ref in paid_refs(tx, self._fed_params):
                self.paid.setdefault(ref, tx.txid_hex)

    def _commit(self, anchored: AnchoredBatch, new_state: State) -> None:
        super()._commit(anchored, new_state)
        refs = [
            WithdrawalRef(WithdrawalKind.L2, bytes(t.tx_hash))
            for t in anchored.batch.transactions
            if isinstance(t.tx, Withdrawal)
        ]
        self.batches.append((anchored.batch.header.number, anchored.height, refs))


class L2View:
    """L2 withdrawals as this member's own replay of Bitcoin sees them; replays again when the tip moves."""

    def __init__(self, rpc: SyncBitcoinRPC, params: Params, from_height: int) -> None:
        self._rpc = rpc
        self._params = params
        self._from = from_height
        self._lock = threading.Lock()
        self._snapshot: L2Snapshot | None = None
        self._replay: _Replay | None = None

    def snapshot(self) -> L2Snapshot:
        """The replay of the current best chain (cached per tip; each new tip reads only the new blocks,
        a reorg replays from the start height)."""
        with self._lock:
            tip_hash = str(self._rpc.call("getbestblockhash"))
            if self._snapshot is not None and self._snapshot.tip_hash == tip_hash:
                return self._snapshot
            if self._replay is None:
                self._replay = _Replay(RpcBlockSource(self._rpc), self._params, self._from)
                outcome = self._replay.run()
            else:
                outcome = self._replay.follow()
            self._snapshot = self._judge(self._replay, outcome, tip_hash)
            return self._snapshot

    def _judge(self, replay: _Replay, outcome: Outcome, tip_hash: str) -> L2Snapshot:
        tip = outcome.progress.tip
        snap = L2Snapshot(tip_hash, tip, paid=dict(replay.paid), roots=replay.derived_roots())
        state = outcome.state
        for number, anchor_height, refs in replay.batches:
            snap.anchor_heights[number] = anchor_height
            confirmations = tip - anchor_height + 1
            for ref in refs:
                snap.batch_of[ref] = number
                record = state.withdrawals.get(ref.id)  # type: ignore[call-overload]
                if record is None:
                    continue
                if confirmations >= self._params.f_anchor_confs:
                    snap.final[ref] = PayoutItem(ref, record.script, record.amount)
                else:
                    snap.unfinal[ref] = confirmations
        if outcome.divergence is not None:
            d = outcome.divergence
            snap.divergence = f"batch {d.batch_number}: {d.finding.error}: {d.finding.message}"
        return snap


def describe_rpc_error(exc: RPCError) -> str:
    """A short text for logs and refusals."""
    return f"{exc.method or 'rpc'}: {exc.message}"
