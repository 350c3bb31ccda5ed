"""Little-endian bincode primitives shared by encoders and decoders (private)."""

from __future__ import annotations

import struct
from typing import Final

from solders.hash import Hash
from solders.pubkey import Pubkey

U8_MAX: Final = 2**8 - 1
U32_MAX: Final = 2**32 - 1
U64_MAX: Final = 2**64 - 1
I64_MIN: Final = -(2**63)
I64_MAX: Final = 2**63 - 1


class TruncatedError(ValueError):
    """The data ended before a field could be read."""


def u8(value: int) -> bytes:
    return struct.pack("<B", value)


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def i64(value: int) -> bytes:
    return struct.pack("<q", value)


def rust_string(value: str) -> bytes:
    """bincode ``String``: u64 length then UTF-8 bytes."""
    raw = value.encode()
    return u64(len(raw)) + raw


class Reader:
    """Sequential reader over instruction or account data."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self._data = data
        self._pos = offset

    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise TruncatedError(
                f"needed {n} bytes at offset {self._pos}, data is {len(self._data)} bytes"
            )
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def i64(self) -> int:
        return int(struct.unpack("<q", self.take(8))[0])

    def pubkey(self) -> Pubkey:
        return Pubkey.from_bytes(self.take(32))

    def hash(self) -> Hash:
        return Hash.from_bytes(self.take(32))

    def rust_string(self) -> str:
        n = self.u64()
        if n > self.remaining():
            raise TruncatedError(f"string of {n} bytes at offset {self._pos} overruns the data")
        return self.take(n).decode()

    def expect_end(self) -> None:
        if self.remaining():
            raise ValueError(f"{self.remaining()} unexpected trailing bytes")
