"""The payout transaction: one deterministic form that every signer can check on its own (docs/PROTOCOL.md,
"Federation").

A payout spends federation outputs and pays a batch of withdrawals:

* version 2, locktime 0, every input's sequence 0xfffffffd (replaceable: payouts are fee-bumped by RBF);
* inputs sorted by outpoint (txid in internal byte order, then vout), each spending the federation's P2WSH;
* one output per withdrawal, exactly `amount - withdrawal_fee_sats` to exactly `script`, in the order of
  the withdrawal refs;
* then at most one change output to the federation's scriptPubKey;
* then the payout tag `OP_RETURN <"BL2P" || 0x01 || count u16 || ref ...>` naming every withdrawal paid,
  in the same order, so that Bitcoin alone shows which withdrawal each output pays.

Every withdrawal pays the protocol's `withdrawal_fee_sats` (kept by the federation, see `paid_value`),
which funds the payout's Bitcoin fee; the mining fee itself comes out of the change, and an RBF
replacement keeps every payout output and only lowers the change.
"""

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from btcl2.bitcoin.script import dust_threshold, push_data
from btcl2.bitcoin.serialize import ByteReader, ser_compact_size
from btcl2.bitcoin.sighash import SIGHASH_ALL, segwit_v0_sighash
from btcl2.bitcoin.tx import MAX_MONEY, OutPoint, Tx, TxIn, TxOut
from btcl2.core.params import Params
from btcl2.core.types import decode_exact
from btcl2.errors import InvalidInput
from btcl2.federation.errors import InsufficientFunds, NotCanonical
from btcl2.hexstr import from_hex

PAYOUT_VERSION = 2
"""nVersion of every payout."""
PAYOUT_SEQUENCE = 0xFFFFFFFD
"""nSequence of every input: signals BIP125 replaceability."""
TAG_MAGIC = b"BL2P"
"""First bytes of the payout tag's push."""
TAG_VERSION = 1
"""The tag format version."""
MAX_PAYOUT_WITHDRAWALS = 200
"""Most withdrawals one payout carries (keeps the tag and the transaction well inside policy limits)."""
SIGNATURE_SIZE = 72
"""A low-R DER signature (71 bytes) and its sighash byte: what every btcl2 signer produces."""


class WithdrawalKind(IntEnum):
    """Where a withdrawal was requested."""

    L2 = 1
    """An L2 Withdrawal transaction; id = its tx hash."""
    EVM = 2
    """A Bridge burn; id = the Bridge's content-bound bytes32 withdrawal id (Bridge.withdrawalId)."""


@dataclass(frozen=True, slots=True, order=True)
class WithdrawalRef:
    """A withdrawal's identity; payouts order their outputs by the 33-byte encoding."""

    kind: WithdrawalKind
    """L2 or EVM."""
    id: bytes
    """32 bytes: L2 tx hash, or the Bridge's bytes32 withdrawal id."""

    def __post_init__(self) -> None:
        if len(self.id) != 32:
            raise InvalidInput("withdrawal id must be 32 bytes")

    def encode(self) -> bytes:
        """kind u8 || id (32)."""
        return bytes([self.kind]) + self.id

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        """Read one ref; an unknown kind is a DecodeError."""
        kind = r.u8()
        if kind not in (WithdrawalKind.L2, WithdrawalKind.EVM):
            raise NotCanonical(f"unknown withdrawal kind {kind}")
        return cls(WithdrawalKind(kind), r.read(32))

    @classmethod
    def evm(cls, withdrawal_id: bytes) -> Self:
        """The ref of the Bridge withdrawal whose bytes32 id is `withdrawal_id`."""
        return cls(WithdrawalKind.EVM, bytes(withdrawal_id))

    @property
    def text(self) -> str:
        """ "l2:0x<hash>" or "evm:0x<id>", as the CLI shows and parses it."""
        return f"{'l2' if self.kind == WithdrawalKind.L2 else 'evm'}:0x{self.id.hex()}"

    @classmethod
    def parse(cls, text: str) -> Self:
        """The inverse of `text`; a bare 0x hash is an L2 withdrawal. EVM ids are 32-byte hashes: the
        counters of earlier Bridges ("evm:7") are refused, a reorg could hand them to another burn."""
        kind, _, body = text.strip().rpartition(":")
        body = body.strip()
        try:
            if kind in ("l2", "evm", "") and body[:2] in ("0x", "0X") and len(body) == 66:
                raw = from_hex(body[2:])
                return cls(WithdrawalKind.EVM if kind == "evm" else WithdrawalKind.L2, raw)
        except ValueError:
            pass
        raise InvalidInput(f"invalid withdrawal id {text!r}: expected l2:0x<64 hex> or evm:0x<64 hex>")


@dataclass(frozen=True, slots=True)
class PayoutItem:
    """One withdrawal to pay."""

    ref: WithdrawalRef
    """Which withdrawal."""
    script: bytes
    """The scriptPubKey it names."""
    amount: int
    """Satoshis it requested (the payout output is this less the withdrawal fee, `paid_value`)."""

    def txout(self, params: Params) -> TxOut:
        """The payout output."""
        return TxOut(paid_value(self.amount, params), self.script)


def paid_value(amount: int, params: Params) -> int:
    """What a withdrawal of `amount` receives on Bitcoin: `amount - withdrawal_fee_sats`."""
    return amount - params.withdrawal_fee_sats


def paid_total(items: list[PayoutItem] | tuple[PayoutItem, ...], params: Params) -> int:
    """The sum of the payout outputs of `items`."""
    return sum(paid_value(i.amount, params) for i in items)


@dataclass(frozen=True, slots=True)
class FederationCoin:
    """A federation output a payout may spend."""

    outpoint: OutPoint
    """Where it is."""
    amount: int
    """Its value."""


def encode_tag(refs: list[WithdrawalRef] | tuple[WithdrawalRef, ...]) -> bytes:
    """The payout tag's scriptPubKey for these refs (in the given order)."""
    payload = (
        TAG_MAGIC + bytes([TAG_VERSION]) + struct.pack("<H", len(refs)) + b"".join(r.encode() for r in refs)
    )
    return b"\x6a" + push_data(payload)


def _tag_payload(spk: bytes) -> bytes | None:
    """The single push of an OP_RETURN script, or None if it has another shape."""
    if len(spk) < 2 or spk[0] != 0x6A:
        return None
    op, rest = spk[1], spk[2:]
    if op < 0x4C:
        size, body = op, spk[2:]
    elif op == 0x4C and rest:
        size, body = rest[0], rest[1:]
    elif op == 0x4D and len(rest) >= 2:
        size, body = int.from_bytes(rest[:2], "little"), rest[2:]
    else:
        return None
    return body if len(body) == size else None


def decode_tag(spk: bytes) -> tuple[WithdrawalRef, ...] | None:
    """The refs of a payout tag; None if `spk` is not one; NotCanonical if it is a malformed one."""
    payload = _tag_payload(spk)
    if payload is None or not payload.startswith(TAG_MAGIC):
        return None

    def read(r: ByteReader) -> tuple[WithdrawalRef, ...]:
        r.read(4)
        version = r.u8()
        if version != TAG_VERSION:
            raise NotCanonical(f"unknown payout tag version {version}")
        count = struct.unpack("<H", r.read(2))[0]
        return tuple(WithdrawalRef.read(r) for _ in range(count))

    try:
        refs = decode_exact(payload, read)
    except InvalidInput as exc:
        raise NotCanonical(f"malformed payout tag: {exc}") from exc
    if spk != encode_tag(refs):
        raise NotCanonical("payout tag is not minimally pushed")
    return refs


def witness_size(params: Params) -> int:
    """Bytes of one signed federation input's witness: count, empty item, M signatures, witness script."""
    ws = len(params.federation_script)
    return 1 + 1 + params.federation_m * (1 + SIGNATURE_SIZE) + len(ser_compact_size(ws)) + ws


def estimate_vsize(n_inputs: int, outputs: list[TxOut] | tuple[TxOut, ...], params: Params) -> int:
    """The virtual size of the payout once M signatures are in (exact for btcl2's 72-byte signatures)."""
    base = 4 + len(ser_compact_size(n_inputs)) + n_inputs * 41 + len(ser_compact_size(len(outputs)))
    base += sum(len(o.encode()) for o in outputs) + 4
    witness = 2 + n_inputs * witness_size(params)
    return (base * 4 + witness + 3) // 4


def _outputs(items: list[PayoutItem], change: int | None, params: Params) -> list[TxOut]:
    outs = [i.txout(params) for i in items]
    if change is not None:
        outs.append(TxOut(change, params.federation_script_pubkey))
    outs.append(TxOut(0, encode_tag([i.ref for i in items])))
    return outs


def min_change(params: Params) -> int:
    """Smallest change output: below it the remainder goes to the fee (never a dust output)."""
    return dust_threshold(TxOut(0, params.federation_script_pubkey))


def sort_items(items: list[PayoutItem] | tuple[PayoutItem, ...]) -> list[PayoutItem]:
    """Withdrawals in payout order; InvalidInput for a repeated ref, or too many."""
    ordered = sorted(items, key=lambda i: i.ref.encode())
    if len({i.ref for i in ordered}) != len(ordered):
        raise InvalidInput("a withdrawal appears twice in one payout")
    if not 1 <= len(ordered) <= MAX_PAYOUT_WITHDRAWALS:
        raise InvalidInput(f"a payout pays 1..{MAX_PAYOUT_WITHDRAWALS} withdrawals, not {len(ordered)}")
    return ordered


def build_payout(
    items: list[PayoutItem] | tuple[PayoutItem, ...],
    coins: list[FederationCoin] | tuple[FederationCoin, ...],
    params: Params,
    fee_rate: int,
) -> Tx:
    """The payout of `items` from exactly `coins` at `fee_rate` sat/vB (fee rounded up), change to the federation.

    InsufficientFunds when the coins do not cover the withdrawals and the fee.
    """
    ordered = sort_items(items)
    inputs = sorted({c.outpoint: c for c in coins}.values(), key=lambda c: c.outpoint.encode())
    total_in = sum(c.amount for c in inputs)
    total_out = paid_total(ordered, params)
    fee = fee_rate * estimate_vsize(len(inputs), _outputs(ordered, 0, params), params)
    change: int | None = total_in - total_out - fee
    assert change is not None
    if change < min_change(params):
        no_change_fee = fee_rate * estimate_vsize(len(inputs), _outputs(ordered, None, params), params)
        if total_in - total_out < no_change_fee:
            raise InsufficientFunds(
                f"federation coins {total_in} sats do not cover payouts {total_out} + fee {no_change_fee}"
            )
        change = None
    vin = tuple(TxIn(c.outpoint, sequence=PAYOUT_SEQUENCE) for c in inputs)
    return Tx(PAYOUT_VERSION, vin, tuple(_outputs(ordered, change, params)), 0)


def select_coins(
    available: list[FederationCoin], items: list[PayoutItem], params: Params, fee_rate: int
) -> list[FederationCoin]:
    """Deterministic coin selection: largest first (ties by outpoint) until withdrawals, fee and change fit."""
    ordered = sort_items(items)
    need = paid_total(ordered, params)
    chosen: list[FederationCoin] = []
    for coin in sorted(available, key=lambda c: (-c.amount, c.outpoint.encode())):
        chosen.append(coin)
        fee = fee_rate * estimate_vsize(len(chosen), _outputs(ordered, 0, params), params)
        if sum(c.amount for c in chosen) >= need + fee + min_change(params):
            return chosen
    have = sum(c.amount for c in available)
    raise InsufficientFunds(f"federation holds {have} sats in usable coins, payouts need {need} plus fee")


@dataclass(frozen=True, slots=True)
class ParsedPayout:
    """A payout transaction read back into its parts (shape checked, nothing else)."""

    tx: Tx
    """The unsigned transaction."""
    items: tuple[PayoutItem, ...]
    """The withdrawals it pays, in order, each with the amount its output implies (value + withdrawal fee)."""
    change: int | None
    """The change output's value, None without one."""
    fee: int
    """Inputs minus outputs."""
    vsize: int
    """Virtual size once signed."""
    amounts: tuple[int, ...]
    """The spent outputs' values, in input order."""

    @property
    def fee_rate(self) -> float:
        """sat/vB once signed."""
        return self.fee / self.vsize


def parse_payout(tx: Tx, amounts: list[int] | tuple[int, ...], params: Params) -> ParsedPayout:
    """Check that `tx` has exactly the deterministic shape and split it into withdrawals, change and fee.

    `amounts` are the values of the spent outputs, in input order. NotCanonical on any deviation.
    """
    if tx.version != PAYOUT_VERSION or tx.locktime != 0:
        raise NotCanonical(
            f"version {tx.version} / locktime {tx.locktime}: payouts use version 2, locktime 0"
        )
    if not tx.vin or len(amounts) != len(tx.vin):
        raise NotCanonical("one amount per input is required")
    keys = [i.prevout.encode() for i in tx.vin]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        raise NotCanonical("inputs are not sorted by outpoint (or repeat one)")
    for txin in tx.vin:
        if txin.sequence != PAYOUT_SEQUENCE or txin.script_sig or txin.witness:
            raise NotCanonical(
                f"input {txin.prevout.txid_hex}:{txin.prevout.vout} is not an unsigned payout input"
            )
    if any(not 0 <= a <= MAX_MONEY for a in amounts):
        raise NotCanonical("input amount out of range")
    refs = decode_tag(tx.vout[-1].script_pubkey) if tx.vout else None
    if refs is None or tx.vout[-1].value != 0:
        raise NotCanonical("the last output must be the payout tag, with value 0")
    if list(refs) != sorted(refs, key=WithdrawalRef.encode) or len(set(refs)) != len(refs) or not refs:
        raise NotCanonical("payout tag refs are not sorted, repeat one, or are empty")
    body = tx.vout[:-1]
    if len(body) not in (len(refs), len(refs) + 1):
        raise NotCanonical(f"{len(body)} outputs for {len(refs)} withdrawals")
    change = None
    if len(body) == len(refs) + 1:
        if body[-1].script_pubkey != params.federation_script_pubkey or body[-1].value < min_change(params):
            raise NotCanonical("the output after the withdrawals must be change to the federation")
        change = body[-1].value
    # Each output pays its withdrawal's amount less the withdrawal fee: the item carries the amount it
    # implies, which the signer compares with the request (WrongPayout when they differ).
    fee_w = params.withdrawal_fee_sats
    items = tuple(PayoutItem(r, o.script_pubkey, o.value + fee_w) for r, o in zip(refs, body, strict=False))
    for item in items:
        if item.script == params.federation_script_pubkey:
            raise NotCanonical(f"withdrawal {item.ref.text} pays the federation itself")
    fee = sum(amounts) - sum(o.value for o in tx.vout)
    vsize = estimate_vsize(len(tx.vin), tx.vout, params)
    return ParsedPayout(tx, items, change, fee, vsize, tuple(amounts))


def input_sighash(tx: Tx, index: int, amount: int, params: Params) -> bytes:
    """The BIP143 SIGHASH_ALL digest a federation key signs for input `index`."""
    return segwit_v0_sighash(tx, index, params.federation_script, amount, SIGHASH_ALL)


def finalize(tx: Tx, signatures: dict[bytes, list[bytes]], params: Params) -> Tx:
    """The signed payout: for each input, M signatures (with sighash byte) in the script's key order.

    `signatures` maps a federation public key to its signature for every input; InvalidInput when fewer
    than M keys signed.
    """
    ws = params.federation_script
    ordered = [pk for pk in sorted(params.federation_pubkeys) if pk in signatures][: params.federation_m]
    if len(ordered) < params.federation_m:
        raise InvalidInput(f"{len(ordered)} of {params.federation_m} signatures")
    vin = tuple(
        TxIn(txin.prevout, b"", txin.sequence, (b"", *(signatures[pk][i] for pk in ordered), ws))
        for i, txin in enumerate(tx.vin)
    )
    return Tx(tx.version, vin, tx.vout, tx.locktime)


def unsigned(tx: Tx) -> Tx:
    """The transaction with every scriptSig and witness emptied (what signers are shown)."""
    return Tx(tx.version, tuple(TxIn(i.prevout, b"", i.sequence) for i in tx.vin), tx.vout, tx.locktime)


def paid_refs(tx: Tx, params: Params) -> tuple[WithdrawalRef, ...]:
    """The withdrawals a confirmed transaction pays, if it is a federation payout (spends with the federation
    script in its witness and carries a tag), else ()."""
    ws = params.federation_script
    if not any(i.witness and i.witness[-1] == ws for i in tx.vin) or not tx.vout:
        return ()
    try:
        refs = decode_tag(tx.vout[-1].script_pubkey)
    except NotCanonical:
        return ()
    return refs or ()
