"""A single-key P2WPKH Bitcoin wallet that keeps no state: coins come from the node on every call.

Coins are found with `scantxoutset` (the chain's UTXO set) and `getrawmempool` + `getrawtransaction`
(unconfirmed payments and spends), so the wallet works against any Bitcoin Core-compatible node
without a node-side wallet or an index. Coin selection is a pure function, tested on its own.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from btcl2.bitcoin.rpc import RPCError, to_sats
from btcl2.bitcoin.script import dust_threshold, is_dust
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.errors import Critical, InvalidInput
from btcl2.wallet.amounts import format_btc
from btcl2.wallet.keyfile import KeyFile

COINBASE_MATURITY = 100
"""A coinbase output may be spent in a block at least this many blocks above its own."""
SEQUENCE_RBF = 0xFFFFFFFD
"""Signals replaceability (BIP125), so a stuck payment can be fee-bumped."""
RPC_INVALID_ADDRESS_OR_KEY = -5

# Weights of a P2WPKH spend: outpoint (36) + empty scriptSig (1) + sequence (4) at 4 weight units a byte,
# then the witness: item count, a signature of at most 72 bytes with its sighash byte, a 33-byte key.
_P2WPKH_INPUT_WEIGHT = 41 * 4 + 1 + 1 + 72 + 1 + 33
_TX_OVERHEAD_WEIGHT = (4 + 4) * 4 + 2  # version, locktime, segwit marker and flag


class InsufficientFunds(InvalidInput):
    """Raised when the wallet's spendable coins cannot pay the outputs and the fee."""


class TxRejected(InvalidInput):
    """Raised when the node's testmempoolaccept refuses a transaction the wallet built."""


class BitcoinNode(Protocol):
    """What the wallet needs of a Bitcoin Core JSON-RPC client (SyncBitcoinRPC fits)."""

    def call(self, method: str, *params: Any, **named: Any) -> Any:
        """Call one RPC."""
        ...

    def batch(self, calls: list[tuple[str, Sequence[Any] | dict[str, Any]]]) -> list[Any | RPCError]:
        """Call several RPCs in one request."""
        ...


@dataclass(frozen=True, slots=True)
class Coin:
    """An unspent output paying the wallet."""

    outpoint: OutPoint
    """Where it is."""
    value: int
    """Its amount in satoshis."""
    confirmations: int
    """Blocks including and above its own; 0 while it is in the mempool."""
    coinbase: bool = False
    """Whether it is a coinbase output (spendable only once mature)."""

    @property
    def mature(self) -> bool:
        """Whether it may be spent by a transaction in the next block."""
        return not self.coinbase or self.confirmations >= COINBASE_MATURITY


@dataclass(frozen=True, slots=True)
class Balance:
    """The wallet's money as the node sees it now, in satoshis."""

    confirmed: int
    """Mature coins in the chain's UTXO set that no mempool transaction spends."""
    unconfirmed: int
    """Outputs of mempool transactions paying the wallet, not spent in the mempool (includes change)."""
    immature: int
    """Coinbase outputs that are not yet spendable."""

    @property
    def spendable(self) -> int:
        """What a payment can use right now: confirmed plus unconfirmed."""
        return self.confirmed + self.unconfirmed


@dataclass(frozen=True, slots=True)
class Selection:
    """The inputs chosen to pay some outputs, and what is left over."""

    coins: tuple[Coin, ...]
    """The coins to spend."""
    fee: int
    """The fee the transaction pays, in satoshis."""
    change: int
    """The change output's value, 0 for no change output."""


def estimate_vsize(n_inputs: int, output_scripts: Sequence[bytes]) -> int:
    """Upper bound of the virtual size of a transaction spending `n_inputs` P2WPKH coins to these outputs."""
    counts = 4 * (_compact_size_len(n_inputs) + _compact_size_len(len(output_scripts)))
    outputs = sum(4 * (8 + _compact_size_len(len(spk)) + len(spk)) for spk in output_scripts)
    weight = _TX_OVERHEAD_WEIGHT + counts + outputs + n_inputs * _P2WPKH_INPUT_WEIGHT
    return math.ceil(weight / 4)


def _compact_size_len(n: int) -> int:
    return 1 if n < 0xFD else 3 if n <= 0xFFFF else 5


def fee_for(vsize: int, fee_rate: Decimal) -> int:
    """The fee in satoshis of `vsize` virtual bytes at `fee_rate` sat/vB, rounded up."""
    return math.ceil(vsize * fee_rate)


def select_coins(
    coins: Sequence[Coin], payments: Sequence[TxOut], fee_rate: Decimal, change_script: bytes
) -> Selection:
    """Choose coins paying `payments` plus the fee at `fee_rate` sat/vB; raise InsufficientFunds if none do.

    Confirmed coins go first (a payment that spends only confirmed coins cannot be held up by an
    unconfirmed parent), largest first to keep the input count low. A change output to
    `change_script` is added unless it would be dust, in which case the remainder goes to the fee.
    """
    target = sum(o.value for o in payments)
    scripts = [o.script_pubkey for o in payments]
    usable = [c for c in coins if c.mature]
    ordered = sorted(usable, key=lambda c: (c.confirmations == 0, -c.value, c.outpoint.txid, c.outpoint.vout))
    chosen: list[Coin] = []
    total = 0
    for coin in ordered:
        chosen.append(coin)
        total += coin.value
        if total < target + fee_for(estimate_vsize(len(chosen), scripts), fee_rate):
            continue
        fee = fee_for(estimate_vsize(len(chosen), [*scripts, change_script]), fee_rate)
        change = total - target - fee
        if change >= dust_threshold(TxOut(change, change_script)):
            return Selection(tuple(chosen), fee, change)
        return Selection(tuple(chosen), total - target, 0)
    need = target + fee_for(estimate_vsize(max(len(ordered), 1), scripts), fee_rate)
    raise InsufficientFunds(
        f"insufficient funds: {format_btc(sum(c.value for c in usable))} BTC spendable, "
        f"about {format_btc(need)} BTC needed including the fee"
    )


@dataclass(frozen=True, slots=True)
class Payment:
    """A signed wallet transaction and the fee it pays."""

    tx: Tx
    """The signed transaction."""
    fee: int
    """Its fee in satoshis."""


class BitcoinWallet:
    """The coins of one key file's P2WPKH address, and payments from them."""

    def __init__(self, node: BitcoinNode, keyfile: KeyFile) -> None:
        self.node = node
        self.keyfile = keyfile
        self.script_pubkey = keyfile.script_pubkey

    def _chain_coins(self) -> list[Coin]:
        result = self.node.call("scantxoutset", "start", [f"addr({self.keyfile.btc_address})"])
        if not isinstance(result, dict) or not result.get("success", False):
            raise Critical(f"scantxoutset failed: {result!r}")
        return [
            Coin(
                OutPoint(bytes.fromhex(u["txid"])[::-1], int(u["vout"])),
                to_sats(u["amount"]),
                int(u.get("confirmations", 1)),
                bool(u.get("coinbase", False)),
            )
            for u in result["unspents"]
        ]

    def _mempool_txs(self) -> list[Tx]:
        txids = self.node.call("getrawmempool")
        if not txids:
            return []
        answers = self.node.batch([("getrawtransaction", [txid, 0]) for txid in txids])
        txs = []
        for answer in answers:
            if isinstance(answer, RPCError):
                # Mined or evicted between the two calls: the next look will see it where it went.
                if answer.code == RPC_INVALID_ADDRESS_OR_KEY:
                    continue
                raise answer
            txs.append(Tx.from_hex(answer))
        return txs

    def coins(self) -> tuple[list[Coin], list[Coin]]:
        """(chain coins not spent in the mempool, unspent mempool outputs paying the wallet)."""
        chain = self._chain_coins()
        mempool = self._mempool_txs()
        spent = {txin.prevout for tx in mempool for txin in tx.vin}
        pending = [
            Coin(OutPoint(tx.txid, i), out.value, 0)
            for tx in mempool
            for i, out in enumerate(tx.vout)
            if out.script_pubkey == self.script_pubkey and OutPoint(tx.txid, i) not in spent
        ]
        return [c for c in chain if c.outpoint not in spent], pending

    def balance(self) -> Balance:
        """Confirmed, unconfirmed and immature amounts (see Balance)."""
        chain, pending = self.coins()
        return Balance(
            confirmed=sum(c.value for c in chain if c.mature),
            unconfirmed=sum(c.value for c in pending),
            immature=sum(c.value for c in chain if not c.mature),
        )

    def build(self, payments: Sequence[TxOut], fee_rate: Decimal) -> Payment:
        """A signed transaction paying `payments` (in order) with change back to the wallet last."""
        for out in payments:
            if is_dust(out):
                raise InvalidInput(
                    f"output of {format_btc(out.value)} BTC is below the dust limit "
                    f"({format_btc(dust_threshold(out))} BTC)"
                )
        chain, pending = self.coins()
        selection = select_coins([*chain, *pending], payments, fee_rate, self.script_pubkey)
        outputs = list(payments)
        if selection.change:
            outputs.append(TxOut(selection.change, self.script_pubkey))
        vin = tuple(TxIn(c.outpoint, sequence=SEQUENCE_RBF) for c in selection.coins)
        unsigned = Tx(2, vin, tuple(outputs), 0)
        return Payment(self.sign(unsigned, selection.coins), selection.fee)

    def sign(self, tx: Tx, coins: Sequence[Coin]) -> Tx:
        """Sign every input of `tx`, each spending the matching coin of the wallet."""
        from btcl2.bitcoin.sign import PrevoutInfo, sign_transaction

        prevouts = {c.outpoint: PrevoutInfo(self.script_pubkey, c.value) for c in coins}
        result = sign_transaction(tx, [self.keyfile.key], prevouts)
        if not result.complete:
            raise Critical(f"could not sign the wallet's own inputs: {result.errors[0].error}")
        return result.tx

    def broadcast(self, tx: Tx) -> str:
        """testmempoolaccept, then sendrawtransaction; returns the txid (display order)."""
        raw = tx.encode().hex()
        verdict = self.node.call("testmempoolaccept", [raw])[0]
        if not verdict.get("allowed", False):
            raise TxRejected(f"the node rejects the transaction: {verdict.get('reject-reason', 'unknown')}")
        txid: str = self.node.call("sendrawtransaction", raw)
        return txid

    def send(self, payments: Sequence[TxOut], fee_rate: Decimal) -> Payment:
        """Build, sign and broadcast a payment; returns the transaction sent and its fee."""
        payment = self.build(payments, fee_rate)
        self.broadcast(payment.tx)
        return payment
