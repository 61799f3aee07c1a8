"""The watcher's typed events, the consumer interface, and how events are stored in the event log.

Delivery contract (at-least-once, exactly-once by sequence number):
  * every event gets a sequence number, starting at 1 and increasing by one per event, never reused;
  * an event and the chain change that caused it are written in one atomic batch BEFORE the event is
    delivered, so a crash can never lose an event;
  * a crash after delivery but before the watcher records that delivery makes the watcher deliver the
    same event again, with the same sequence number and the same content, after it restarts;
  * so a consumer must apply each event at most once: it stores the last sequence number it applied (in the
    same atomic write as the effect of the event) and ignores any event whose number is not larger.

Deposits are whatever the deposit parser returns. The event log stores the raw transaction a deposit came
from and parses it again when it reads the log back, so the parser must be a pure function of the
transaction (same transaction, same answer, in every process and after every restart).
"""

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, is_dataclass
from enum import Enum
from typing import Any, Protocol

from btcl2.bitcoin.serialize import ByteReader, ser_bytes, ser_compact_size
from btcl2.bitcoin.tx import OutPoint, Tx
from btcl2.errors import DecodeError


class DepositLike(Protocol):
    """What the watcher needs from a parsed deposit (accepted or rejected): where it is and how much."""

    @property
    def outpoint(self) -> OutPoint: ...

    @property
    def amount(self) -> int: ...


DepositParser = Callable[[Tx], DepositLike | None]
"""Classifies one transaction: a deposit, a rejected deposit (has a `reason` attribute), or None."""


def is_rejected(result: DepositLike) -> bool:
    """True for a rejected deposit: the parser marks rejections by giving them a `reason`."""
    return getattr(result, "reason", None) is not None


@dataclass(frozen=True, slots=True)
class BlockDisconnected:
    """Emitted when a block leaves the best chain; undo everything taken from it.

    Disconnections come tip first, down to (not including) the fork point, before any block of the new
    branch is connected.
    """

    height: int
    """Height the block had."""
    hash: bytes
    """Block hash, internal byte order."""


@dataclass(frozen=True, slots=True)
class BlockConnected:
    """Emitted when a block joins the best chain on top of the previous tip."""

    height: int
    """Height of the block."""
    hash: bytes
    """Block hash, internal byte order."""
    deposits: tuple[DepositLike, ...]
    """Deposits the block contains, in block order; not yet confirmed."""
    rejected_deposits: tuple[DepositLike, ...]
    """Payments to the federation the parser rejected, in block order."""


@dataclass(frozen=True, slots=True)
class DepositConfirmed:
    """Emitted once when the block holding a deposit reaches K confirmations; credit it now."""

    deposit: DepositLike
    """The deposit."""
    height: int
    """Height of the block that holds it."""
    block_hash: bytes
    """Hash of the block that holds it, internal byte order."""


@dataclass(frozen=True, slots=True)
class DepositReorged:
    """Emitted when the block of an already confirmed deposit is disconnected; roll the credit back.

    It follows the BlockDisconnected of that block. If the transaction is mined again in the new branch,
    the deposit is connected and confirmed again, with new events.
    """

    deposit: DepositLike
    """The deposit that is no longer confirmed."""
    height: int
    """Height of the disconnected block that held it."""
    block_hash: bytes
    """Hash of the disconnected block, internal byte order."""


WatcherEvent = BlockDisconnected | BlockConnected | DepositConfirmed | DepositReorged


class EventConsumer(Protocol):
    """Receives the watcher's events in sequence order; must ignore a sequence number it already applied."""

    def on_event(self, seq: int, event: WatcherEvent) -> Awaitable[None] | None: ...


# --- the event log encoding -------------------------------------------------------------------------

_DISCONNECTED, _CONNECTED, _CONFIRMED, _REORGED = 1, 2, 3, 4


def _source_tx(deposit: DepositLike, txs: dict[bytes, Tx]) -> Tx:
    try:
        return txs[deposit.outpoint.txid]
    except KeyError:
        raise ValueError(f"no transaction for deposit {deposit.outpoint.txid_hex}") from None


def encode_event(event: WatcherEvent, txs: dict[bytes, Tx]) -> bytes:
    """Encode an event for the log; `txs` maps txid -> the transaction each deposit was parsed from."""
    if isinstance(event, BlockDisconnected):
        return bytes([_DISCONNECTED]) + struct.pack(">I", event.height) + event.hash
    if isinstance(event, BlockConnected):
        # One transaction per deposit or rejection; parsing them again splits them, each in its order.
        seen: dict[bytes, Tx] = {}
        for d in (*event.deposits, *event.rejected_deposits):
            seen.setdefault(d.outpoint.txid, _source_tx(d, txs))
        body = ser_compact_size(len(seen)) + b"".join(ser_bytes(tx.encode()) for tx in seen.values())
        return bytes([_CONNECTED]) + struct.pack(">I", event.height) + event.hash + body
    tag = _CONFIRMED if isinstance(event, DepositConfirmed) else _REORGED
    tx = _source_tx(event.deposit, txs)
    return bytes([tag]) + struct.pack(">I", event.height) + event.block_hash + ser_bytes(tx.encode())


def _parse_one(tx: Tx, parser: DepositParser) -> DepositLike:
    result = parser(tx)
    if result is None:
        raise DecodeError(f"logged transaction {tx.txid_hex} is no longer a deposit: is the parser pure?")
    return result


def decode_event(data: bytes, parser: DepositParser) -> WatcherEvent:
    """Decode a logged event, parsing its transactions again with the deposit parser."""
    r = ByteReader(data)
    tag = r.u8()
    height = struct.unpack(">I", r.read(4))[0]
    block_hash = r.read(32)
    event: WatcherEvent
    if tag == _DISCONNECTED:
        event = BlockDisconnected(height, block_hash)
    elif tag == _CONNECTED:
        results = [_parse_one(Tx.decode(r.var_bytes()), parser) for _ in range(r.compact_size())]
        event = BlockConnected(
            height,
            block_hash,
            tuple(d for d in results if not is_rejected(d)),
            tuple(d for d in results if is_rejected(d)),
        )
    elif tag in (_CONFIRMED, _REORGED):
        deposit = _parse_one(Tx.decode(r.var_bytes()), parser)
        cls = DepositConfirmed if tag == _CONFIRMED else DepositReorged
        event = cls(deposit, height, block_hash)
    else:
        raise DecodeError(f"unknown watcher event tag {tag}")
    r.end()
    return event


# --- JSON view (the `python -m btcl2.watcher` output) ---------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, OutPoint):
        return f"{value.txid_hex}:{value.vout}"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def event_to_json(seq: int, event: WatcherEvent) -> dict[str, Any]:
    """A JSON object for one event: its sequence number, type, and fields (hashes in display order)."""
    out: dict[str, Any] = {"seq": seq, "type": type(event).__name__}
    for f in fields(event):
        value = getattr(event, f.name)
        if f.name in ("hash", "block_hash"):
            out[f.name] = value[::-1].hex()
        else:
            out[f.name] = _jsonable(value)
    return out


# --- a minimal parser: every payment to one script is a deposit ------------------------------------------


@dataclass(frozen=True, slots=True)
class Payment:
    """A payment to a watched script, the simplest kind of deposit."""

    outpoint: OutPoint
    """The output that pays the script."""
    amount: int
    """Its value in satoshis."""


def payments_to(script_pubkey: bytes) -> DepositParser:
    """A parser that treats the first output of a transaction paying script_pubkey as a deposit."""

    def parse(tx: Tx) -> DepositLike | None:
        if tx.is_coinbase:
            return None
        for vout, out in enumerate(tx.vout):
            if out.script_pubkey == script_pubkey:
                return Payment(OutPoint(tx.txid, vout), out.value)
        return None

    return parse
