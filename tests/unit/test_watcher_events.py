"""Watcher events: the event-log encoding round trip, its errors, the JSON view, the payment parser."""

import json

import pytest

from btcl2.bitcoin.tx import NULL_TXID, OutPoint, Tx, TxIn, TxOut
from btcl2.errors import DecodeError
from btcl2.watcher.events import (
    BlockConnected,
    BlockDisconnected,
    DepositConfirmed,
    DepositReorged,
    Payment,
    WatcherEvent,
    decode_event,
    encode_event,
    event_to_json,
    payments_to,
)

FED = b"\x00\x20" + b"\xab" * 32
OTHER = b"\x00\x14" + b"\xcd" * 20
parse = payments_to(FED)


def tx_paying(*outs: tuple[int, bytes], salt: int = 0) -> Tx:
    return Tx(2, (TxIn(OutPoint(bytes([salt]) * 32, 1)),), tuple(TxOut(v, s) for v, s in outs))


def test_payments_to() -> None:
    tx = tx_paying((5, OTHER), (700, FED), (800, FED))
    assert parse(tx) == Payment(OutPoint(tx.txid, 1), 700)
    assert parse(tx_paying((5, OTHER))) is None
    coinbase = Tx(2, (TxIn(OutPoint(NULL_TXID, 0xFFFFFFFF), b"\x01\x01"),), (TxOut(700, FED),))
    assert parse(coinbase) is None


def sample_events() -> tuple[list[WatcherEvent], dict[bytes, Tx]]:
    a, b = tx_paying((1000, FED), salt=1), tx_paying((1, OTHER), (2000, FED), salt=2)
    da, db = parse(a), parse(b)
    assert da is not None and db is not None
    h = b"\x42" * 32
    events: list[WatcherEvent] = [
        BlockDisconnected(7, h),
        BlockConnected(8, h, (da, db), ()),
        BlockConnected(9, h, (), ()),
        DepositConfirmed(da, 8, h),
        DepositReorged(db, 8, h),
    ]
    return events, {a.txid: a, b.txid: b}


def test_round_trip() -> None:
    events, txs = sample_events()
    for event in events:
        assert decode_event(encode_event(event, txs), parse) == event


def test_decode_errors() -> None:
    events, txs = sample_events()
    data = encode_event(events[1], txs)
    with pytest.raises(DecodeError):
        decode_event(data + b"\x00", parse)
    with pytest.raises(DecodeError):
        decode_event(data[:-3], parse)
    with pytest.raises(DecodeError):
        decode_event(b"\x09" + data[1:], parse)
    # A parser that no longer recognises a logged deposit is an error, not a silent drop.
    with pytest.raises(DecodeError):
        decode_event(data, payments_to(OTHER))


def test_encode_needs_source_tx() -> None:
    events, _ = sample_events()
    with pytest.raises(ValueError):
        encode_event(events[3], {})


def test_json_view() -> None:
    events, _ = sample_events()
    out = event_to_json(5, events[3])
    assert isinstance(events[3], DepositConfirmed)
    dep = events[3].deposit
    assert out == {
        "seq": 5,
        "type": "DepositConfirmed",
        "deposit": {"outpoint": f"{dep.outpoint.txid_hex}:0", "amount": 1000},
        "height": 8,
        "block_hash": "42" * 32,
    }
    connected = event_to_json(6, events[1])
    assert [d["amount"] for d in connected["deposits"]] == [1000, 2000]
    json.dumps(connected)
