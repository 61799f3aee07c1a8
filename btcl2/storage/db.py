"""The one plyvel wrapper: every state change goes through an atomic write batch, synced (state) or handed
to the OS (a mempool, which must outlive the process, not the machine).

A database is checked when it is opened: LevelDB's paranoid checks cover the manifest and the log, and a full
scan with block checksums covers every table file, so a corrupted or truncated file is reported at startup with a
recovery path instead of being read later as if it were good. Corruption found by a later read is raised the same
way. Nothing in btcl2 ever "repairs" a database in place: the state is rebuilt from its source of truth. The
one database without a source of truth is a federation signer's record of what it signed: its damage is reported
with SIGNER_RECOVERY instead, which never advises starting afresh.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import plyvel

from btcl2.errors import Critical

RECOVERY = (
    "nothing was read from it. Move it aside and restart: the node rebuilds its state from its source of truth "
    "(Bitcoin for the L2 state — `btcl2 replay --datadir` derives it —, the chain for the watcher and the relayer)"
)
SIGNER_RECOVERY = (
    "nothing was read from it, and the signer will not sign with it. Do NOT delete it or start the signer on a "
    "new database: it is this signer's record of every payout it signed, which nothing can rebuild exactly, and "
    "a signer that forgot a payout could sign a second one for the same withdrawal (a double payment once M "
    "members do). Keep the damaged copy and restore the database from a backup taken while the signer was "
    "stopped. Without one, start it on an empty database only while the coordinator has no payout in flight: "
    "it then rebuilds its record from the federation's spends on its own Bitcoin node (chain from from_height, "
    'and mempool) before it signs anything (docs/PROTOCOL.md, "Signer record")'
)


class CorruptDatabase(Critical):
    """Raised when a LevelDB database fails its checksums or cannot be read; it is never used half-broken."""


class Database:
    """A LevelDB database; reads are direct, writes only through `batch()`."""

    def __init__(self, path: str | Path, *, verify: bool = True, recovery: str = RECOVERY) -> None:
        self.path = Path(path)
        self._recovery = recovery
        """What the operator is told to do when the database is damaged."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._db: Any = plyvel.DB(str(path), create_if_missing=True, paranoid_checks=True)
        except plyvel.IOError as e:
            if "lock" in str(e).lower():
                raise Critical(f"database {path} is in use by another process ({e})") from e
            raise CorruptDatabase(f"database {path} cannot be opened ({e}); {self._recovery}") from e
        except plyvel.Error as e:
            raise CorruptDatabase(f"database {path} is corrupt ({e}); {self._recovery}") from e
        if verify:
            self._verify()

    def _verify(self) -> None:
        """Read every block with its checksum once, so damage shows now and not in the middle of a batch."""
        try:
            for _ in self._db.iterator(include_value=True, verify_checksums=True, fill_cache=False):
                pass
        except plyvel.Error as e:
            self._db.close()
            raise CorruptDatabase(f"database {self.path} failed its checksums ({e}); {self._recovery}") from e

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key, verify_checksums=True)
        except plyvel.Error as e:
            raise CorruptDatabase(f"database {self.path}: {e}; {self._recovery}") from e
        return value

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key without prefix, value) for every key under prefix, in key order."""
        try:
            for key, value in self._db.iterator(prefix=prefix, verify_checksums=True):
                yield key[len(prefix) :], value
        except plyvel.Error as e:
            raise CorruptDatabase(f"database {self.path}: {e}; {self._recovery}") from e

    @contextmanager
    def batch(self) -> Iterator[Any]:
        """An atomic write batch, synced to disk when the block exits without an exception."""
        with self._db.write_batch(transaction=True, sync=True) as wb:
            yield wb

    @contextmanager
    def batch_unsynced(self) -> Iterator[Any]:
        """An atomic write batch handed to the OS but not synced: it survives the process (kill -9), not a
        power loss. For what may be lost with the machine but not with the process (a mempool)."""
        with self._db.write_batch(transaction=True, sync=False) as wb:
            yield wb

    def put_unsynced(self, key: bytes, value: bytes) -> None:
        """One atomic put handed to the OS but not synced (see batch_unsynced), without a batch's overhead."""
        self._db.put(key, value, sync=False)

    def close(self) -> None:
        self._db.close()
