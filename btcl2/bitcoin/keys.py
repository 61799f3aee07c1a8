"""secp256k1 keys: WIF encoding, ECDSA (DER, low-S, low-R like Bitcoin Core) and BIP340 Schnorr signatures.

coincurve (libsecp256k1) does the curve arithmetic; this module adds Bitcoin's conventions on top.
"""

import os
import struct
from dataclasses import dataclass, field
from typing import Self

import coincurve
from coincurve._libsecp256k1 import ffi

from btcl2.bitcoin.hashes import sha256d, tagged_hash
from btcl2.errors import InvalidInput

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_ORDER = SECP256K1_ORDER // 2
WIF_PREFIX_MAINNET = 0x80
WIF_PREFIX_TESTNET = 0xEF
"""Shared by testnet, testnet4, signet and regtest."""
_KNOWN_WIF_PREFIXES = frozenset({WIF_PREFIX_MAINNET, WIF_PREFIX_TESTNET})
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_SPACE = " \f\n\r\t\v"


class InvalidKey(InvalidInput):
    """Raised when a private or public key is malformed or out of range."""


def _b58check_decode(text: str) -> bytes | None:
    # Core tolerates surrounding whitespace but nothing else outside the alphabet.
    text = text.strip(_SPACE)
    if not text or any(c not in _B58_INDEX for c in text):
        return None
    n = 0
    for c in text:
        n = n * 58 + _B58_INDEX[c]
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    data = b"\x00" * zeros + body
    if len(data) < 4 or sha256d(data[:-4])[:4] != data[-4:]:
        return None
    return data[:-4]


def _b58check_encode(payload: bytes) -> str:
    data = payload + sha256d(payload)[:4]
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58_ALPHABET[rem])
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + "".join(reversed(out))


def _der_has_low_r(der: bytes) -> bool:
    # R is "low" when its top bit is clear, which DER shows as an R of at most 32 bytes (no 0x00 pad).
    return der[3] <= 32


def _der_s(der: bytes) -> int | None:
    """S of a strictly DER-encoded ECDSA signature (no sighash byte), or None if not strict DER."""
    if len(der) < 8 or len(der) > 72 or der[0] != 0x30 or der[1] != len(der) - 2:
        return None
    if der[2] != 0x02:
        return None
    r_len = der[3]
    if r_len == 0 or 5 + r_len >= len(der) or der[4 + r_len] != 0x02:
        return None
    s_len = der[5 + r_len]
    if s_len == 0 or 6 + r_len + s_len != len(der):
        return None
    for start, length in ((4, r_len), (6 + r_len, s_len)):
        if der[start] & 0x80:
            return None
        if length > 1 and der[start] == 0 and not der[start + 1] & 0x80:
            return None
    return int.from_bytes(der[6 + r_len :], "big")


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A secp256k1 private key."""

    secret: bytes = field(repr=False)
    """The 32-byte secret scalar, big-endian, in [1, n-1]."""

    def __post_init__(self) -> None:
        if len(self.secret) != 32 or not 0 < int.from_bytes(self.secret, "big") < SECP256K1_ORDER:
            raise InvalidKey("private key out of range")

    @classmethod
    def generate(cls) -> Self:
        """A fresh key from the operating system's random source."""
        while True:
            secret = os.urandom(32)
            if 0 < int.from_bytes(secret, "big") < SECP256K1_ORDER:
                return cls(secret)

    @classmethod
    def from_bytes(cls, b32: bytes) -> Self:
        """Wrap a 32-byte secret; raises InvalidKey when it is out of range."""
        return cls(bytes(b32))

    @classmethod
    def from_wif(cls, wif: str) -> tuple[Self, bool, int]:
        """Decode WIF into (key, compressed, wif_prefix); raises InvalidKey like Core's DecodeSecret."""
        data = _b58check_decode(wif)
        bad = InvalidKey("Invalid private key encoding")
        if data is None or data[0] not in _KNOWN_WIF_PREFIXES:
            raise bad
        if len(data) == 33:
            compressed = False
        elif len(data) == 34 and data[-1] == 1:
            compressed = True
        else:
            raise bad
        try:
            key = cls(data[1:33])
        except InvalidKey:
            raise bad from None
        return key, compressed, data[0]

    def to_wif(self, wif_prefix: int, compressed: bool = True) -> str:
        """Encode as WIF (0x80 mainnet, 0xef test networks)."""
        return _b58check_encode(bytes([wif_prefix]) + self.secret + (b"\x01" if compressed else b""))

    def _cc(self) -> coincurve.PrivateKey:
        return coincurve.PrivateKey(self.secret)

    def pubkey(self, compressed: bool = True) -> bytes:
        """SEC-encoded public key (33 bytes compressed, 65 uncompressed)."""
        return bytes(self._cc().public_key.format(compressed=compressed))

    def xonly_pubkey(self) -> bytes:
        """BIP340 32-byte x-only public key."""
        return self.pubkey()[1:]

    def sign_ecdsa(self, digest32: bytes) -> bytes:
        """DER signature of a 32-byte digest: RFC6979 nonces, low S, and R ground low as Core does."""
        if len(digest32) != 32:
            raise ValueError("digest must be 32 bytes")
        cc = self._cc()
        der = bytes(cc.sign(digest32, hasher=None))
        counter = 0
        # Core retries with a counter as extra entropy until R is low: 71-byte signatures, same bytes as Core.
        while not _der_has_low_r(der):
            counter += 1
            extra = ffi.new("unsigned char[32]", struct.pack("<I", counter) + b"\x00" * 28)
            der = bytes(cc.sign(digest32, hasher=None, custom_nonce=(ffi.NULL, extra)))
        s = _der_s(der)
        assert s is not None and s <= _HALF_ORDER, "libsecp256k1 must produce low-S signatures"
        return der

    def sign_schnorr(self, digest32: bytes, aux: bytes | None = None) -> bytes:
        """BIP340 signature of a 32-byte digest; aux defaults to 32 zero bytes (deterministic, as Core)."""
        if len(digest32) != 32:
            raise ValueError("digest must be 32 bytes")
        return bytes(self._cc().sign_schnorr(digest32, aux if aux is not None else b"\x00" * 32))

    def tweak_taproot(self, merkle_root: bytes | None = None) -> "PrivateKey":
        """The BIP341 output key's secret for this internal key (key-path spending)."""
        d = int.from_bytes(self.secret, "big")
        if self.pubkey()[0] == 0x03:
            # BIP340 keys are the even-y point; negate so the tweak applies to that point.
            d = SECP256K1_ORDER - d
        t = int.from_bytes(taproot_tweak(self.xonly_pubkey(), merkle_root), "big")
        if t >= SECP256K1_ORDER:
            raise InvalidKey("taproot tweak out of range")
        tweaked = (d + t) % SECP256K1_ORDER
        if tweaked == 0:
            raise InvalidKey("tweaked key is zero")
        return PrivateKey(tweaked.to_bytes(32, "big"))


def taproot_tweak(xonly: bytes, merkle_root: bytes | None = None) -> bytes:
    """BIP341 TapTweak hash of an internal key and an optional script tree root."""
    return tagged_hash("TapTweak", xonly + (merkle_root or b""))


def tweak_xonly_pubkey(xonly: bytes, merkle_root: bytes | None = None) -> bytes:
    """The BIP341 output key (x-only) for an internal key; raises InvalidKey for a bad key or tweak."""
    return taproot_output_key(xonly, merkle_root)[0]


def taproot_output_key(xonly: bytes, merkle_root: bytes | None = None) -> tuple[bytes, int]:
    """The BIP341 output key (x-only) for an internal key and its parity (the low bit a script-path spend's
    control block must carry); raises InvalidKey for a bad key or tweak."""
    try:
        pk = coincurve.PublicKeyXOnly(bytes(xonly))
        pk.tweak_add(taproot_tweak(xonly, merkle_root))
        return bytes(pk.format()), int(pk.parity)
    except ValueError as e:
        raise InvalidKey(str(e)) from e


def verify_ecdsa(pubkey: bytes, der_sig: bytes, digest32: bytes) -> bool:
    """Check a strict-DER, low-S ECDSA signature (no sighash byte) over a digest."""
    s = _der_s(der_sig)
    if s is None or s > _HALF_ORDER or len(digest32) != 32:
        return False
    try:
        return bool(coincurve.PublicKey(bytes(pubkey)).verify(bytes(der_sig), bytes(digest32), hasher=None))
    except ValueError:
        return False


def verify_schnorr(xonly: bytes, sig64: bytes, digest32: bytes) -> bool:
    """Check a BIP340 signature."""
    if len(sig64) != 64 or len(xonly) != 32 or len(digest32) != 32:
        return False
    try:
        return bool(coincurve.PublicKeyXOnly(bytes(xonly)).verify(bytes(sig64), bytes(digest32)))
    except ValueError:
        return False


def is_valid_pubkey(b: bytes) -> bool:
    """True for a valid SEC public key (compressed, uncompressed or hybrid, as Core's IsFullyValid)."""
    if len(b) not in (33, 65):
        return False
    try:
        coincurve.PublicKey(bytes(b))
    except ValueError:
        return False
    return True


def compress(pubkey: bytes) -> bytes:
    """The 33-byte compressed form of a SEC public key."""
    if not is_valid_pubkey(pubkey):
        raise InvalidKey("invalid public key")
    return bytes(coincurve.PublicKey(bytes(pubkey)).format(compressed=True))
