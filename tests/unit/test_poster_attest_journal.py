"""The attestation poster's journal in the poster's LevelDB: each change one atomic write that survives a
restart; an earlier version's JSON journal is imported once."""

import json
from pathlib import Path

import pytest

from btcl2.errors import Critical
from btcl2.poster.attest import AttestationJournal
from btcl2.storage import schema
from btcl2.storage.db import Database

TX_A = {"txid": "aa" * 32, "hex": "0200", "batches": [0, 1]}
TX_B = {"txid": "bb" * 32, "hex": "0201", "batches": [2]}


def test_write_reopen_and_drop(tmp_path: Path) -> None:
    db = Database(tmp_path / "poster")
    journal = AttestationJournal(db)
    assert journal.next_batch() == 0 and journal.pending() == []
    journal.write(2, add=[TX_A])
    journal.write(3, add=[TX_B])
    db.close()
    db = Database(tmp_path / "poster")  # what a restarted poster reads
    journal = AttestationJournal(db)
    assert journal.next_batch() == 3
    assert sorted(p["txid"] for p in journal.pending()) == [TX_A["txid"], TX_B["txid"]]
    journal.write(2, drop=[TX_B["txid"]])  # gone: batch 2 is attested again
    assert journal.next_batch() == 2 and journal.pending() == [TX_A]
    db.close()


def test_corrupt_entry_is_critical(tmp_path: Path) -> None:
    db = Database(tmp_path / "poster")
    with db.batch() as wb:
        wb.put(schema.POSTER_ATTEST_TX + b"cc" * 32, b"{not json")
    with pytest.raises(Critical):
        AttestationJournal(db).pending()
    db.close()


def test_legacy_json_is_imported_once(tmp_path: Path) -> None:
    legacy = tmp_path / "attestations.json"
    legacy.write_text(json.dumps({"next": 5, "pending": [{**TX_A, "confirmed": 0}]}))
    db = Database(tmp_path / "poster")
    journal = AttestationJournal(db)
    journal.import_legacy(legacy)
    assert journal.next_batch() == 5 and journal.pending() == [TX_A]
    assert not legacy.exists() and (tmp_path / "attestations.json.imported").exists()
    legacy.write_text(json.dumps({"next": 9, "pending": []}))  # the database's journal wins
    journal.import_legacy(legacy)
    assert journal.next_batch() == 5
    db.close()
