"""The one plyvel wrapper: every state change goes through an atomic, synced write batch."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import plyvel

from btcl2.errors import Critical


class Database:
    """A LevelDB database; reads are direct, writes only through `batch()`."""

    def __init__(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        try:
            self._db: Any = plyvel.DB(str(path), create_if_missing=True, paranoid_checks=True)
        except plyvel.Error as e:
            raise Critical(f"cannot open database {path}: {e}") from e
        self.path = Path(path)

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key without prefix, value) for every key under prefix, in key order."""
        for key, value in self._db.iterator(prefix=prefix):
            yield key[len(prefix) :], value

    @contextmanager
    def batch(self) -> Iterator[Any]:
        """An atomic write batch, synced to disk when the block exits without an exception."""
        with self._db.write_batch(transaction=True, sync=True) as wb:
            yield wb

    def close(self) -> None:
        self._db.close()
