"""The LevelDB wrapper: atomic batches, and corruption reported at open with a recovery path."""

import os
from pathlib import Path

import pytest

from btcl2.errors import Critical
from btcl2.federation.store import SignerStore
from btcl2.storage.db import CorruptDatabase, Database


def _fill(path: Path, n: int = 5_000) -> None:
    db = Database(path)
    with db.batch() as wb:
        for i in range(n):
            wb.put(b"k%08d" % i, os.urandom(64))
    db.close()
    # Reopen with compaction so the data sits in table files, not only in the log.
    import plyvel

    raw = plyvel.DB(str(path))
    raw.compact_range()
    raw.close()


def test_batch_is_atomic(tmp_path: Path) -> None:
    db = Database(tmp_path / "db")
    with pytest.raises(RuntimeError), db.batch() as wb:
        wb.put(b"a", b"1")
        raise RuntimeError("crash in the middle")
    assert db.get(b"a") is None
    with db.batch() as wb:
        wb.put(b"a", b"1")
        wb.put(b"b", b"2")
    assert [k for k, _ in db.iterate(b"")] == [b"a", b"b"]
    db.close()


def test_corrupted_table_file_is_detected_at_open(tmp_path: Path) -> None:
    path = tmp_path / "db"
    _fill(path)
    table = next(p for p in path.iterdir() if p.suffix == ".ldb")
    data = bytearray(table.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    table.write_bytes(bytes(data))
    with pytest.raises(CorruptDatabase, match="Move it aside"):
        Database(path)


def test_a_signer_record_is_never_to_be_moved_aside(tmp_path: Path) -> None:
    """A signer's record cannot be rebuilt from a source of truth: its recovery text must not say it can."""
    path = tmp_path / "signer"
    _fill(path)
    (path / "CURRENT").write_text("MANIFEST-999999\n")
    with pytest.raises(CorruptDatabase) as e:
        SignerStore(path)
    message = str(e.value)
    assert "Move it aside" not in message
    assert "Do NOT delete it" in message and "double payment" in message and "backup" in message


def test_truncated_table_file_is_detected_at_open(tmp_path: Path) -> None:
    path = tmp_path / "db"
    _fill(path)
    table = next(p for p in path.iterdir() if p.suffix == ".ldb")
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    with pytest.raises(CorruptDatabase):
        Database(path)


def test_missing_manifest_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "db"
    _fill(path, 100)
    (path / "CURRENT").write_text("MANIFEST-999999\n")
    with pytest.raises(CorruptDatabase):
        Database(path)


def test_a_database_in_use_is_a_clear_error(tmp_path: Path) -> None:
    db = Database(tmp_path / "db")
    with pytest.raises(Critical, match="in use"):
        Database(tmp_path / "db")
    db.close()
