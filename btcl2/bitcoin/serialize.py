"""Bitcoin's wire encoding primitives: little-endian integers and CompactSize-prefixed data."""

import struct

from btcl2.errors import DecodeError

MAX_SIZE = 0x02000000  # Core's MAX_SIZE: no vector on the wire is longer than 32 MiB


def ser_compact_size(n: int) -> bytes:
    """Encode a CompactSize unsigned integer."""
    if n < 0:
        raise ValueError("compact size cannot be negative")
    if n < 253:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def ser_bytes(data: bytes) -> bytes:
    """Encode a byte vector with its CompactSize length."""
    return ser_compact_size(len(data)) + data


class ByteReader:
    """Reads Bitcoin-encoded values from a buffer, raising DecodeError on short or non-canonical input."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def read(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise DecodeError(f"unexpected end of data: wanted {n} bytes, {self.remaining} left")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def peek(self, n: int) -> bytes:
        return self._data[self._pos : self._pos + n]

    def u8(self) -> int:
        return self.read(1)[0]

    def u16(self) -> int:
        return int(struct.unpack("<H", self.read(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.read(4))[0])

    def i32(self) -> int:
        return int(struct.unpack("<i", self.read(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.read(8))[0])

    def i64(self) -> int:
        return int(struct.unpack("<q", self.read(8))[0])

    def compact_size(self) -> int:
        first = self.u8()
        if first < 253:
            n = first
        elif first == 253:
            n = self.u16()
            if n < 253:
                raise DecodeError("non-canonical compact size")
        elif first == 254:
            n = self.u32()
            if n <= 0xFFFF:
                raise DecodeError("non-canonical compact size")
        else:
            n = self.u64()
            if n <= 0xFFFFFFFF:
                raise DecodeError("non-canonical compact size")
        if n > MAX_SIZE:
            raise DecodeError("compact size too large")
        return n

    def var_bytes(self) -> bytes:
        return self.read(self.compact_size())

    def end(self) -> None:
        """Raise DecodeError unless every byte was consumed."""
        if self.remaining:
            raise DecodeError(f"{self.remaining} trailing bytes")
