"""The embedded node's mempool: Core v30's acceptance rules and reject reasons, replace-by-fee, block selection.

Checks run in the order Core's MemPoolAccept runs them, so the first failing rule gives the same reason:
CheckTransaction, standardness, finality, duplicates, input existence, coinbase maturity and amounts,
fee rate, replacement rules, then scripts (through libbitcoinkernel).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from btcl2.bitcoin.script import ScriptType, is_dust, is_push_only, is_standard_output, solve
from btcl2.bitcoin.tx import MAX_MONEY, OutPoint, Tx, TxOut
from btcl2.bitcoin.verify import failure_reason, policy_signature_error, verify_input
from btcl2.errors import InvalidInput
from btcl2.regtest.coins import Coin

COINBASE_MATURITY = 100
MIN_RELAY_FEE_PER_KVB = 100  # 0.1 sat/vB, Core v30
INCREMENTAL_RELAY_FEE_PER_KVB = 100
MAX_OP_RETURN_RELAY = 100_000
MAX_STANDARD_TX_WEIGHT = 400_000
MAX_STANDARD_SCRIPTSIG_SIZE = 1650
MIN_STANDARD_TX_NONWITNESS_SIZE = 65
MAX_BLOCK_WEIGHT = 4_000_000
LOCKTIME_THRESHOLD = 500_000_000
SEQUENCE_DISABLE_FLAG = 1 << 31
SEQUENCE_TYPE_FLAG = 1 << 22
SEQUENCE_MASK = 0xFFFF


class RejectKind(Enum):
    """How the RPC layer reports a rejection (Core's TransactionError)."""

    MISSING_INPUTS = "missing-inputs"  # -25
    ALREADY_IN_CHAIN = "already-in-chain"  # -27
    REJECTED = "rejected"  # -26


class TxRejected(InvalidInput):
    """Raised when the mempool refuses a transaction; `reason` and `debug` are Core's."""

    def __init__(self, reason: str, debug: str = "", kind: RejectKind = RejectKind.REJECTED) -> None:
        super().__init__(f"{reason}, {debug}" if debug else reason)
        self.reason = reason
        self.debug = debug
        self.kind = kind


def fee_for(feerate_per_kvb: int, vsize: int) -> int:
    """CFeeRate::GetFee: the fee at a rate for a size, rounded up."""
    return -(-feerate_per_kvb * vsize // 1000)


def format_money(sats: int) -> str:
    """Core's FormatMoney: at least 2 decimals, trailing zeros trimmed."""
    sign = "-" if sats < 0 else ""
    q, r = divmod(abs(sats), 100_000_000)
    frac = f"{r:08d}".rstrip("0")
    return f"{sign}{q}.{frac.ljust(2, '0')}"


@dataclass
class Entry:
    """One transaction in the mempool."""

    tx: Tx
    fee: int
    time: int
    height: int
    """Chain height when it entered."""
    sequence: int
    """Arrival order."""
    weight: int = 0
    """BIP141 weight, computed once on entry (serializing is the costly part of block assembly)."""

    def __post_init__(self) -> None:
        self.weight = self.tx.weight

    @property
    def vsize(self) -> int:
        return (self.weight + 3) // 4


@dataclass
class ChainView:
    """What the mempool needs from the chain: coins, the tip's height and median time past."""

    coin: Callable[[OutPoint], Coin | None]
    height: int
    median_time_past: int


@dataclass
class Mempool:
    """Transactions waiting for a block, keyed by txid."""

    entries: dict[bytes, Entry] = field(default_factory=dict)
    spenders: dict[OutPoint, bytes] = field(default_factory=dict)
    _sequence: int = 0

    # ------------------------------------------------------------- queries

    def __contains__(self, txid: bytes) -> bool:
        return txid in self.entries

    def output(self, op: OutPoint) -> TxOut | None:
        e = self.entries.get(op.txid)
        if e is None or op.vout >= len(e.tx.vout):
            return None
        return e.tx.vout[op.vout]

    def parents(self, txid: bytes) -> set[bytes]:
        return {i.prevout.txid for i in self.entries[txid].tx.vin if i.prevout.txid in self.entries}

    def children(self, txid: bytes) -> set[bytes]:
        tx = self.entries[txid].tx
        return {s for n in range(len(tx.vout)) if (s := self.spenders.get(OutPoint(txid, n))) is not None}

    def ancestors(self, txid: bytes) -> set[bytes]:
        """Every in-mempool ancestor of txid (not txid itself)."""
        return self._closure(txid, self.parents)

    def descendants(self, txid: bytes) -> set[bytes]:
        return self._closure(txid, self.children)

    @staticmethod
    def _closure(start: bytes, step: Callable[[bytes], set[bytes]]) -> set[bytes]:
        seen: set[bytes] = set()
        todo = list(step(start))
        while todo:
            t = todo.pop()
            if t not in seen:
                seen.add(t)
                todo += step(t)
        return seen

    def total_vsize(self) -> int:
        return sum(e.vsize for e in self.entries.values())

    # ------------------------------------------------------------- acceptance

    def check(self, tx: Tx, chain: ChainView, *, bypass_limits: bool = False) -> tuple[int, set[bytes]]:
        """Run every acceptance rule; return (fee, txids it replaces) or raise TxRejected."""
        _check_transaction(tx)
        if tx.is_coinbase:
            raise TxRejected("coinbase")
        _check_standard(tx)
        if len(tx.encode(include_witness=False)) < MIN_STANDARD_TX_NONWITNESS_SIZE:
            raise TxRejected("tx-size-small")
        if not _is_final(tx, chain.height + 1, chain.median_time_past):
            raise TxRejected("non-final")
        existing = self.entries.get(tx.txid)
        if existing is not None:
            if existing.tx.wtxid == tx.wtxid:
                raise TxRejected("txn-already-in-mempool")
            raise TxRejected("txn-same-nonwitness-data-in-mempool")
        conflicts = {s for i in tx.vin if (s := self.spenders.get(i.prevout)) is not None}
        spent, coins = self._inputs(tx, chain)
        _check_sequence_locks(tx, coins, chain)
        fee = _check_inputs(tx, spent, coins, chain.height + 1)
        dust = [o for o in tx.vout if is_dust(o)]
        if dust and fee != 0:
            raise TxRejected("dust", "tx with dust output must be 0-fee")
        if not bypass_limits and fee < fee_for(MIN_RELAY_FEE_PER_KVB, tx.vsize):
            raise TxRejected("min relay fee not met", f"{fee} < {fee_for(MIN_RELAY_FEE_PER_KVB, tx.vsize)}")
        replaced = self._replacement_checks(tx, fee, conflicts)
        _check_scripts(tx, spent)
        return fee, replaced

    def add(self, tx: Tx, fee: int, replaced: set[bytes], height: int) -> None:
        """Admit tx, evicting what it replaces (its conflicts and their descendants, in any order)."""
        for txid in replaced:
            self.remove_with_descendants(txid)
        self._sequence += 1
        self.entries[tx.txid] = Entry(tx, fee, int(time.time()), height, self._sequence)
        for txin in tx.vin:
            self.spenders[txin.prevout] = tx.txid

    def remove(self, txid: bytes) -> None:
        e = self.entries.pop(txid)
        for txin in e.tx.vin:
            if self.spenders.get(txin.prevout) == txid:
                del self.spenders[txin.prevout]

    def remove_with_descendants(self, txid: bytes) -> None:
        """Remove txid and everything that spends it; a txid already gone (evicted with an ancestor) is a no-op."""
        if txid not in self.entries:
            return
        for t in [txid, *self.descendants(txid)]:
            self.remove(t)

    def _inputs(self, tx: Tx, chain: ChainView) -> tuple[list[TxOut], list[Coin | None]]:
        """The outputs each input spends (chain or mempool); a mempool parent has no Coin (None)."""
        spent: list[TxOut] = []
        coins: list[Coin | None] = []
        for txin in tx.vin:
            coin = chain.coin(txin.prevout)
            out = coin.out if coin else self.output(txin.prevout)
            if out is None:
                if any(chain.coin(OutPoint(tx.txid, n)) for n in range(len(tx.vout))):
                    raise TxRejected("txn-already-known", kind=RejectKind.ALREADY_IN_CHAIN)
                raise TxRejected("bad-txns-inputs-missingorspent", kind=RejectKind.MISSING_INPUTS)
            spent.append(out)
            coins.append(coin)
        return spent, coins

    def _replacement_checks(self, tx: Tx, fee: int, conflicts: set[bytes]) -> set[bytes]:
        """BIP125 rules 3 and 4 as Core's PaysForRBF (full RBF: every transaction is replaceable)."""
        if not conflicts:
            return set()
        replaced = set(conflicts)
        for c in conflicts:
            replaced |= self.descendants(c)
        old_fees = sum(self.entries[t].fee for t in replaced)
        txid_hex = tx.txid_hex
        if fee < old_fees:
            raise TxRejected(
                "insufficient fee",
                f"rejecting replacement {txid_hex}, less fees than conflicting txs; "
                f"{format_money(fee)} < {format_money(old_fees)}",
            )
        relay = fee_for(INCREMENTAL_RELAY_FEE_PER_KVB, tx.vsize)
        if fee - old_fees < relay:
            raise TxRejected(
                "insufficient fee",
                f"rejecting replacement {txid_hex}, not enough additional fees to relay; "
                f"{format_money(fee - old_fees)} < {format_money(relay)}",
            )
        return replaced

    # ------------------------------------------------------------- mining

    def select(self, max_weight: int = MAX_BLOCK_WEIGHT - 4000) -> list[list[bytes]]:
        """Packages for a block by ancestor fee rate, parents before children (Core's ancestor-set miner)."""
        chosen: set[bytes] = set()
        packages: list[list[bytes]] = []
        weight = 0
        remaining = set(self.entries)
        while remaining:
            best: tuple[float, int, list[bytes]] | None = None
            for txid in remaining:
                pkg = [t for t in self.ancestors(txid) if t not in chosen] + [txid]
                fee = sum(self.entries[t].fee for t in pkg)
                size = sum(self.entries[t].vsize for t in pkg)
                key = (fee / size, -self.entries[txid].sequence)
                if best is None or key > best[:2]:
                    best = (key[0], key[1], pkg)
            assert best is not None
            pkg = sorted(best[2], key=lambda t: (len(self.ancestors(t)), self.entries[t].sequence))
            remaining -= set(pkg)
            pkg_weight = sum(self.entries[t].weight for t in pkg)
            if weight + pkg_weight > max_weight:
                continue
            weight += pkg_weight
            chosen |= set(pkg)
            packages.append(pkg)
        return packages


def _check_transaction(tx: Tx) -> None:
    """Core's context-free CheckTransaction."""
    if not tx.vin:
        raise TxRejected("bad-txns-vin-empty")
    if not tx.vout:
        raise TxRejected("bad-txns-vout-empty")
    if len(tx.encode(include_witness=False)) * 4 > MAX_BLOCK_WEIGHT:
        raise TxRejected("bad-txns-oversize")
    total = 0
    for out in tx.vout:
        if out.value < 0:
            raise TxRejected("bad-txns-vout-negative")
        if out.value > MAX_MONEY:
            raise TxRejected("bad-txns-vout-toolarge")
        total += out.value
        if total > MAX_MONEY:
            raise TxRejected("bad-txns-txouttotal-toolarge")
    if len({i.prevout for i in tx.vin}) != len(tx.vin):
        raise TxRejected("bad-txns-inputs-duplicate")
    if tx.is_coinbase:
        if not 2 <= len(tx.vin[0].script_sig) <= 100:
            raise TxRejected("bad-cb-length")
    elif any(i.prevout.is_null() for i in tx.vin):
        raise TxRejected("bad-txns-prevout-null")


def _check_standard(tx: Tx) -> None:
    """Core v30's IsStandardTx with default options."""
    if not 1 <= tx.version <= 3:
        raise TxRejected("version")
    if tx.weight > MAX_STANDARD_TX_WEIGHT:
        raise TxRejected("tx-size")
    for txin in tx.vin:
        if len(txin.script_sig) > MAX_STANDARD_SCRIPTSIG_SIZE:
            raise TxRejected("scriptsig-size")
        if not is_push_only(txin.script_sig):
            raise TxRejected("scriptsig-not-pushonly")
    datacarrier_left = MAX_OP_RETURN_RELAY
    for out in tx.vout:
        if not is_standard_output(out.script_pubkey):
            raise TxRejected("scriptpubkey")
        if solve(out.script_pubkey)[0] == ScriptType.NULLDATA:
            if len(out.script_pubkey) > datacarrier_left:
                raise TxRejected("datacarrier")
            datacarrier_left -= len(out.script_pubkey)
    if sum(1 for o in tx.vout if is_dust(o)) > 1:
        raise TxRejected("dust")


def _is_final(tx: Tx, height: int, mtp: int) -> bool:
    if tx.locktime == 0:
        return True
    limit = height if tx.locktime < LOCKTIME_THRESHOLD else mtp
    if tx.locktime < limit:
        return True
    return all(i.sequence == 0xFFFFFFFF for i in tx.vin)


def _check_sequence_locks(tx: Tx, coins: list[Coin | None], chain: ChainView) -> None:
    """BIP68 relative height locks for the next block (time locks are checked against the tip's MTP)."""
    if tx.version < 2:
        return
    for txin, coin in zip(tx.vin, coins, strict=True):
        if txin.sequence & SEQUENCE_DISABLE_FLAG:
            continue
        coin_height = coin.height if coin else chain.height + 1
        if txin.sequence & SEQUENCE_TYPE_FLAG:
            continue  # time-based locks need the coin block's MTP; regtest users rarely set them
        if coin_height + (txin.sequence & SEQUENCE_MASK) - 1 >= chain.height + 1:
            raise TxRejected("non-BIP68-final")


def _check_inputs(tx: Tx, spent: list[TxOut], coins: list[Coin | None], spend_height: int) -> int:
    """Core's Consensus::CheckTxInputs; returns the fee."""
    value_in = 0
    for coin, out in zip(coins, spent, strict=True):
        if coin is not None and coin.is_coinbase and spend_height - coin.height < COINBASE_MATURITY:
            raise TxRejected(
                "bad-txns-premature-spend-of-coinbase",
                f"tried to spend coinbase at depth {spend_height - coin.height}",
            )
        value_in += out.value
        if not 0 <= out.value <= MAX_MONEY or value_in > MAX_MONEY:
            raise TxRejected("bad-txns-inputvalues-outofrange")
    value_out = sum(o.value for o in tx.vout)
    if value_in < value_out:
        raise TxRejected(
            "bad-txns-in-belowout",
            f"value in ({format_money(value_in)}) < value out ({format_money(value_out)})",
        )
    return value_in - value_out


def _check_scripts(tx: Tx, spent: list[TxOut]) -> None:
    for i, txin in enumerate(tx.vin):
        reason = (
            failure_reason(tx, i, spent[i])
            if not verify_input(tx, i, spent)
            else policy_signature_error(tx, i)
        )
        if reason is not None:
            where = (
                f"input {i} of {tx.txid_hex} (wtxid {tx.wtxid_hex}), "
                f"spending {txin.prevout.txid_hex}:{txin.prevout.vout}"
            )
            raise TxRejected(f"mempool-script-verify-flag-failed ({reason})", where)
