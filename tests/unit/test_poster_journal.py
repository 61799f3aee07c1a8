"""The poster's journal: entry encoding, the state machine, batch status, and the LevelDB store."""

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.errors import DecodeError
from btcl2.poster.journal import (
    NO_BLOCK,
    Journal,
    JournalEntry,
    JournalError,
    TxState,
    batch_anchor,
    live_entry,
    transition,
)
from btcl2.storage.db import Database


def _tx(tag: int) -> Tx:
    op = OutPoint(hashlib.sha256(tag.to_bytes(4, "big")).digest(), 1)
    return Tx(
        2, (TxIn(op, sequence=0xFFFFFFFD, witness=(b"\x30" * 71, b"\x02" * 33)),), (TxOut(0, b"\x6a"),), 0
    )


def _entry(batch: int = 0, chunk: int = 0, version: int = 0, count: int = 1) -> JournalEntry:
    return JournalEntry(
        batch, chunk, count, version, _tx(batch * 100 + chunk * 10 + version), 500, 2, TxState.JOURNALED, 110
    )


def test_entry_roundtrip_and_key_order() -> None:
    e = transition(_entry(7, 1, 2), TxState.CONFIRMED, block_hash=b"\x11" * 32, block_height=123)
    assert JournalEntry.decode(e.encode()) == e
    assert _entry(1, 0, 0).key() < _entry(1, 0, 1).key() < _entry(1, 1, 0).key() < _entry(2, 0, 0).key()
    with pytest.raises(DecodeError):
        JournalEntry.decode(e.encode() + b"\x00")


def test_state_machine() -> None:
    e = _entry()
    sent = transition(e, TxState.BROADCAST, sent_height=111)
    mined = transition(sent, TxState.CONFIRMED, block_hash=b"\x22" * 32, block_height=112)
    assert (mined.state, mined.block_height, mined.sent_height) == (TxState.CONFIRMED, 112, 111)
    back = transition(mined, TxState.BROADCAST, sent_height=113)  # a reorg put it back in the mempool
    assert back.block_hash == NO_BLOCK and back.block_height == 0
    assert transition(sent, TxState.REPLACED).state == TxState.REPLACED
    assert transition(transition(sent, TxState.REPLACED), TxState.CONFIRMED).state == TxState.CONFIRMED
    for bad_from, bad_to in [
        (mined, TxState.REPLACED),
        (transition(e, TxState.ABANDONED), TxState.BROADCAST),
        (transition(sent, TxState.REPLACED), TxState.BROADCAST),
        (sent, TxState.JOURNALED),
    ]:
        with pytest.raises(JournalError):
            transition(bad_from, bad_to)


def test_live_entry_and_batch_status() -> None:
    v0 = transition(_entry(), TxState.BROADCAST, sent_height=110)
    v1 = JournalEntry(0, 0, 1, 1, _tx(99), 900, 3, TxState.BROADCAST, 113)
    assert live_entry([transition(v0, TxState.REPLACED), v1]) == v1
    assert live_entry([v0, v1]) == v1  # newest pending version
    mined_old = transition(
        transition(v0, TxState.REPLACED), TxState.CONFIRMED, block_hash=b"\x01" * 32, block_height=114
    )
    assert live_entry([mined_old, v1]) == mined_old  # the one that confirmed wins
    assert live_entry([transition(v0, TxState.ABANDONED)]) is None

    assert batch_anchor([], 120, 2).status == "sealed"
    assert batch_anchor([_entry()], 120, 2).status == "sealed"  # journaled, not yet sent
    two = [transition(_entry(3, 0, 0, 2), TxState.BROADCAST, sent_height=1), _entry(3, 1, 0, 2)]
    assert batch_anchor(two[:1], 120, 2).status == "sealed"  # chunk 1 has no version at all
    sent = [transition(two[1], TxState.BROADCAST, sent_height=1), two[0]]
    a = batch_anchor(sent, 120, 2)
    assert (a.status, a.confirmations, len(a.txids)) == ("broadcast", 0, 2)
    one = [transition(sent[0], TxState.CONFIRMED, block_hash=b"\x05" * 32, block_height=120), sent[1]]
    assert batch_anchor(one, 125, 2).status == "broadcast"  # one chunk still unconfirmed
    both = [*one[:1], transition(sent[1], TxState.CONFIRMED, block_hash=b"\x06" * 32, block_height=119)]
    assert (batch_anchor(both, 120, 2).status, batch_anchor(both, 120, 2).confirmations) == ("anchored", 1)
    assert (batch_anchor(both, 121, 2).status, batch_anchor(both, 121, 2).confirmations) == ("final", 2)
    assert batch_anchor([mined_old, v1], 114, 2) == batch_anchor([mined_old], 114, 2)


def test_journal_store(tmp_path: Path) -> None:
    db = Database(tmp_path / "j")
    j = Journal(db)
    assert (j.next_batch, j.tip, list(j.entries())) == (0, 0, [])
    entries = [_entry(0, 0, 0, 2), _entry(0, 1, 0, 2)]
    j.write(entries, next_batch=1, tip=110)
    j.write([transition(entries[0], TxState.BROADCAST, sent_height=110), _entry(1)], next_batch=2)
    db.close()
    j = Journal(Database(tmp_path / "j"))
    assert (j.next_batch, j.tip) == (2, 110)
    assert [(e.batch, e.chunk, e.state) for e in j.entries()] == [
        (0, 0, TxState.BROADCAST),
        (0, 1, TxState.JOURNALED),
        (1, 0, TxState.JOURNALED),
    ]
    assert [e.batch for e in j.entries(1)] == [1]
    assert j.batch_anchor(0, 110, 2).status == "sealed"
    j.db.close()


def test_forget_from_moves_later_batches_aside(tmp_path: Path) -> None:
    """A batch number sealed again: its entries and every later batch's become stale in one write, and the
    number is the next to post; sealed twice more, both old versions stay listed."""
    j = Journal(Database(tmp_path / "j"))
    j.write([_entry(0), _entry(1, 0, 0, 2), _entry(1, 1, 0, 2), _entry(2)], next_batch=3, tip=50)
    assert j.forget_from(1) == 3
    assert (j.next_batch, [e.batch for e in j.entries()]) == (1, [0])
    assert [(e.batch, e.chunk) for e in j.stale_entries()] == [(1, 0), (1, 1), (2, 0)]
    assert j.batch_anchor(1, 50, 2).status == "sealed"  # nothing of the new version sent yet
    newer = replace(_entry(1, 0, 0, 1), tx=_tx(999))  # the new version of batch 1, same key
    j.write([newer], next_batch=2)
    assert j.forget_from(1) == 1 and j.next_batch == 1
    assert [(e.batch, e.tx.txid) for e in j.stale_entries()].count((1, newer.tx.txid)) == 1
    assert len(list(j.stale_entries())) == 4
    j.db.close()


def test_anchor_height_is_the_block_completing_every_chunk(tmp_path: Path) -> None:
    j = Journal(Database(tmp_path / "j"))
    first, second = _entry(4, 0, 0, 2), _entry(4, 1, 0, 2)
    j.write([first, second], next_batch=5)
    assert j.anchor_height(4) is None and j.anchor_height(9) is None
    mined = [
        transition(transition(e, TxState.BROADCAST, sent_height=110), TxState.CONFIRMED, block_hash=b"\x01" * 32, block_height=h)
        for e, h in ((first, 112), (second, 111))
    ]  # fmt: skip
    j.write(mined[:1])
    assert j.anchor_height(4) is None  # one chunk still unconfirmed
    j.write(mined[1:])
    assert j.anchor_height(4) == 112
    j.db.close()
