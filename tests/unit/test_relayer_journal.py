"""The relayer's journal: encodings round-trip and reject bad bytes; store writes keep queue and records in step."""

from dataclasses import replace
from pathlib import Path

import pytest

from btcl2.bitcoin.tx import OutPoint
from btcl2.bridge.journal import (
    DepositRecord,
    DepositStatus,
    Purpose,
    RelayerStore,
    SignedVersion,
    TxEntry,
    TxStatus,
    outpoint_from_key,
    outpoint_key,
)
from btcl2.errors import DecodeError
from btcl2.storage.db import Database

VERSION = SignedVersion(b"\x02raw", b"\x11" * 32, 3 * 10**9, 10**9, 1_700_000_000_000)


def entry(subject: bytes = b"s", nonce: int = 7) -> TxEntry:
    return TxEntry(0, Purpose.MINT, subject, nonce, b"\x22" * 20, b"\xab\xcd", 123_456, (VERSION,))


def record(n: int, height: int, status: DepositStatus = DepositStatus.CONFIRMED) -> DepositRecord:
    return DepositRecord(OutPoint(bytes([n]) * 32, n), b"\x33" * 20, 50_000 + n, height, b"\x44" * 32, status)


@pytest.fixture
def store(tmp_path: Path) -> RelayerStore:
    return RelayerStore(Database(tmp_path / "db"))


def test_round_trips() -> None:
    e = entry()
    assert TxEntry.decode(e.encode()) == e
    done = TxEntry(5, Purpose.HEADERS, b"h" * 32, 1, b"\x01" * 20, b"", 9, (VERSION, VERSION), TxStatus.DROPPED,
                   b"\x11" * 32, 99, "nonce 1 was used by another transaction")  # fmt: skip
    assert TxEntry.decode(done.encode()) == done
    r = record(3, 120, DepositStatus.ALREADY_MINTED)
    assert DepositRecord.decode(r.encode()) == r
    op = OutPoint(b"\x01" * 32, 0x01020304)
    assert outpoint_from_key(outpoint_key(op)) == op


def test_decode_rejects_bad_bytes() -> None:
    data = entry().encode()
    for bad in (data[:-1], data + b"\x00", data[:8] + b"\x09" + data[9:]):
        with pytest.raises(DecodeError):
            TxEntry.decode(bad)
    with pytest.raises(DecodeError):
        DepositRecord.decode(record(1, 1).encode()[:-1])
    with pytest.raises(DecodeError):
        outpoint_from_key(b"\x00" * 35)


def test_queue_follows_chain_order_and_status(store: RelayerStore) -> None:
    store.apply_event(1, record(2, 130))
    store.apply_event(2, record(1, 120))
    store.apply_event(3)
    assert store.last_seq() == 3
    assert [r.height for r in store.queued()] == [120, 130]
    # Journaling a mint takes its deposit out of the queue in the same write.
    begun = store.begin(entry(outpoint_key(record(1, 120).outpoint)), record(1, 120))
    assert begun.id == 1 and store.next_id() == 2
    assert [r.height for r in store.queued()] == [130]
    minting = replace(record(1, 120), status=DepositStatus.MINTING, journal_id=1)
    assert store.deposit(record(1, 120).outpoint) == minting
    assert [e.id for e in store.open_entries()] == [1]
    # A replacement is a new version of the same entry.
    again = store.add_version(begun, VERSION)
    assert len(store.open_entries()[0].versions) == 2 == len(again.versions)
    # Dropped: back in the queue, entry closed.
    store.finish(replace(again, status=TxStatus.DROPPED), record(1, 120))
    assert store.open_entries() == []
    assert [r.height for r in store.queued()] == [120, 130]
    # A deposit confirmed again in another block moves in the queue.
    store.apply_event(4, record(2, 125))
    assert [r.height for r in store.queued()] == [120, 125]
    with pytest.raises(ValueError):
        store.finish(again)
