"""The relayer's attestation records: encodings round-trip, a submission is journaled with its record in one
write and finished with its outcome in one write; exit ids parse."""

from dataclasses import replace
from pathlib import Path

import pytest

from btcl2.bridge.exits import parse_exit_id
from btcl2.bridge.journal import (
    ATTEST_DONE,
    AttestRecord,
    AttestStatus,
    Purpose,
    RelayerStore,
    SignedVersion,
    TxEntry,
    TxStatus,
)
from btcl2.errors import DecodeError, InvalidInput
from btcl2.storage.db import Database

VERSION = SignedVersion(b"\x02raw", b"\x11" * 32, 3 * 10**9, 10**9, 1_700_000_000_000)


def test_attest_record_round_trip_and_bad_bytes() -> None:
    rec = AttestRecord(
        7, b"\x05" * 32, AttestStatus.ALREADY_ATTESTED, 3, b"\x06" * 32, "BatchAlreadyAttested"
    )
    assert AttestRecord.decode(rec.encode()) == rec
    for bad in (rec.encode()[:-1], rec.encode() + b"\x00"):
        with pytest.raises(DecodeError):
            AttestRecord.decode(bad)


def test_submission_journaled_with_its_record(tmp_path: Path) -> None:
    store = RelayerStore(Database(tmp_path / "db"))
    rec = AttestRecord(4, b"\x05" * 32, AttestStatus.RETRY)
    entry = TxEntry(0, Purpose.ATTEST, (4).to_bytes(8, "big"), 0, b"\x22" * 20, b"\x01", 10, (VERSION,))
    begun = store.begin(entry, rec)
    found = store.attestation(4)
    assert found is not None and found.status == AttestStatus.SUBMITTING and found.journal_id == begun.id
    assert [e.id for e in store.open_entries()] == [begun.id]
    mined = replace(begun, status=TxStatus.MINED, mined_hash=VERSION.tx_hash, block_number=9)
    store.finish(mined, replace(found, status=AttestStatus.ATTESTED, evm_tx=VERSION.tx_hash))
    done = store.attestation(4)
    assert done is not None and done.status in ATTEST_DONE and store.open_entries() == []
    assert [a.batch_number for a in store.attestations()] == [4]
    store.db.close()


def test_parse_exit_id() -> None:
    h = "0x" + "ab" * 32
    assert parse_exit_id(h) == bytes.fromhex("ab" * 32) == parse_exit_id("l2:" + h)
    for bad in ("0x12", "ab" * 32, "0x" + "zz" * 32, "evm:5"):
        with pytest.raises(InvalidInput):
            parse_exit_id(bad)
