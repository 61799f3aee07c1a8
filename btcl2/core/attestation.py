"""Batch attestations: the federation's aggregated BLS12-381 signature over each batch it replayed.

Ciphersuite: the IETF BLS signature scheme with proof of possession, as Ethereum uses it (py-ecc
`G2ProofOfPossession`): public keys in G1 (48 bytes compressed), signatures in G2 (96 bytes compressed),
hash-to-curve BLS12381G2_XMD:SHA-256_SSWU_RO_ with DST `BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`. With
proofs of possession checked at registration, M signatures on one message aggregate into one signature
that FastAggregateVerify checks against the sum of the M public keys.

Formats (docs/PROTOCOL.md, "Attestations"): the signed message (117 bytes), the attestation record
(209 bytes, one OP_RETURN push of an authenticated attestation transaction), the signer bitmap (u32,
bit i = attestation key i of the parameters).
"""

import functools
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from eth_typing import BLSPubkey, BLSSignature
from py_ecc.bls.ciphersuites import G2ProofOfPossession as Bls

from btcl2.bitcoin.script import OP_RETURN, iter_ops, push_data
from btcl2.bitcoin.serialize import ByteReader
from btcl2.bitcoin.tx import Tx, TxOut
from btcl2.core.types import Hash32, decode_exact
from btcl2.errors import DecodeError, InvalidInput

# py-ecc raises the recursion limit to 100,000 when imported. With that limit, C code that recurses per level
# of its input (json's parser) overflows the C stack on deep input and kills the process (exit 139) before
# any RecursionError. Nothing py-ecc's optimized BLS does recurses deeply, so the default limit comes back.
# (bridge/attest.py imports py-ecc before this module; either import order ends here.)
sys.setrecursionlimit(1000)

DST = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
"""The hash-to-curve domain separation tag of signatures (proofs of possession use the _POP_ ..._POP_ one)."""
MESSAGE_MAGIC = b"BL2M"
"""First bytes of every signed attestation message."""
RECORD_MAGIC = b"BL2T"
"""First bytes of every attestation record on Bitcoin."""
VERSION = 1
"""Version byte of the message and of the record."""
MESSAGE_SIZE = 117
"""Bytes of an attestation message."""
RECORD_SIZE = 209
"""Bytes of an attestation record."""
SIGNATURE_SIZE = 96
"""A compressed G2 point."""
PUBKEY_SIZE = 48
"""A compressed G1 point."""
MAX_SIGNERS = 32
"""The bitmap is a u32."""
MAX_RECORDS_PER_TX = 400
"""Records one attestation transaction may carry: 400 * 212 bytes of scriptPubKey, within the 99,000 bytes
of OP_RETURN data the anchors' size policy allows per transaction."""


class AttestationError(InvalidInput):
    """Raised when an attestation is not valid for the batch and keys it is checked against."""


class MalformedAttestation(AttestationError, DecodeError):
    """Raised when attestation bytes are short, long, of another version or magic, or not one push."""


class TooFewSigners(AttestationError):
    """Raised when an attestation's bitmap names fewer than the M signers the parameters require."""


class UnknownSigner(AttestationError):
    """Raised when a bitmap names a signer index that has no registered key."""


class BadAggregate(AttestationError):
    """Raised when the aggregate signature does not verify for the message and the named signers' keys."""


class BadProofOfPossession(AttestationError):
    """Raised when a registered key's proof of possession is invalid, a key repeats or M is out of range."""


class AttestationMismatch(AttestationError):
    """Raised when an attestation names another batch hash, state root or exits root than replay derived."""


def attestation_message(
    chain_id: int, batch_number: int, batch_hash: bytes, post_state_root: bytes, exits_root: bytes
) -> bytes:
    """The 117 bytes a signer signs: "BL2M", version, chain id u64, batch number u64, batch hash, post-state
    root, exits root. The magic and chain id keep a signature from meaning anything to another chain or
    protocol; the hashes commit to the whole batch."""
    if len(batch_hash) != 32 or len(post_state_root) != 32 or len(exits_root) != 32:
        raise InvalidInput("batch hash, post-state root and exits root must be 32 bytes each")
    head = MESSAGE_MAGIC + bytes([VERSION]) + struct.pack("<QQ", chain_id, batch_number)
    return head + batch_hash + post_state_root + exits_root


def bitmap_of(indices: Sequence[int]) -> int:
    """The signer bitmap naming `indices` (each 0..31, no repeats)."""
    if len(set(indices)) != len(indices) or any(not 0 <= i < MAX_SIGNERS for i in indices):
        raise InvalidInput(f"signer indices must be distinct and in 0..{MAX_SIGNERS - 1}")
    return sum(1 << i for i in indices)


def signers_of(bitmap: int) -> list[int]:
    """The signer indices a bitmap names, ascending."""
    return [i for i in range(MAX_SIGNERS) if bitmap >> i & 1]


@dataclass(frozen=True, slots=True)
class Attestation:
    """M signers' aggregate signature over one batch: what an attestation record carries."""

    batch_number: int
    """The batch attested (u64)."""
    batch_hash: Hash32
    """Its hash."""
    post_state_root: Hash32
    """The state root after it."""
    exits_root: Hash32
    """The Merkle root of its exits (btcl2/core/exits.py)."""
    signers: int
    """Bitmap (u32): bit i set = attestation key i signed."""
    signature: bytes
    """The aggregate signature, 96 bytes (compressed G2)."""

    def message(self, chain_id: int) -> bytes:
        """The message every named signer signed."""
        return attestation_message(
            chain_id, self.batch_number, self.batch_hash, self.post_state_root, self.exits_root
        )

    def encode(self) -> bytes:
        """Magic "BL2T", version, batch number u64, batch hash, post-state root, exits root, bitmap u32,
        signature: 209 bytes."""
        head = RECORD_MAGIC + bytes([VERSION]) + struct.pack("<Q", self.batch_number)
        roots = self.batch_hash + self.post_state_root + self.exits_root
        return head + roots + struct.pack("<I", self.signers) + self.signature

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        """Read one record from a stream."""
        if r.read(4) != RECORD_MAGIC:
            raise MalformedAttestation("attestation record must start with BL2T")
        version = r.u8()
        if version != VERSION:
            raise MalformedAttestation(f"unknown attestation version {version}")
        number, batch_hash = r.u64(), Hash32(r.read(32))
        post, exits = Hash32(r.read(32)), Hash32(r.read(32))
        return cls(number, batch_hash, post, exits, r.u32(), r.read(SIGNATURE_SIZE))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly one record; MalformedAttestation otherwise."""
        try:
            return decode_exact(data, cls.read)
        except MalformedAttestation:
            raise
        except DecodeError as exc:
            raise MalformedAttestation(str(exc)) from exc

    def output(self) -> TxOut:
        """The OP_RETURN output carrying this record (value 0)."""
        return TxOut(0, bytes([OP_RETURN]) + push_data(self.encode()))


def _first_push(spk: bytes) -> bytes | None:
    if spk[:1] != bytes([OP_RETURN]):
        return None
    try:
        first = next(iter_ops(spk[1:]), None)
    except DecodeError:
        return None
    return None if first is None else first[1]


def decode_attestation_tx(tx: Tx) -> list[Attestation]:
    """Every attestation record a transaction carries, in output order ([] when it carries none).

    A record candidate is any OP_RETURN output whose first push starts with b"BL2T"; it must be exactly
    OP_RETURN and one push of a well-formed record, else MalformedAttestation (the whole transaction)."""
    found = []
    for out in tx.vout:
        push = _first_push(out.script_pubkey)
        if push is None or not push.startswith(RECORD_MAGIC):
            continue
        try:
            ops = list(iter_ops(out.script_pubkey[1:]))
        except DecodeError as exc:
            raise MalformedAttestation(str(exc)) from exc
        if len(ops) != 1:
            raise MalformedAttestation("attestation output must be OP_RETURN and exactly one push")
        found.append(Attestation.decode(push))
    if len(found) > MAX_RECORDS_PER_TX:
        raise MalformedAttestation(
            f"{len(found)} attestation records > {MAX_RECORDS_PER_TX} in one transaction"
        )
    return found


@functools.lru_cache(maxsize=8)
def check_registration(pubkeys: tuple[bytes, ...], pops: tuple[bytes, ...], m: int) -> None:
    """Check the registered attestation keys: one valid proof of possession per key, no repeated key,
    1 <= m <= n <= 32. BadProofOfPossession otherwise. Without this check one member could register a
    key crafted from the others' (a rogue key) and forge an aggregate alone."""
    if len(pops) != len(pubkeys):
        raise BadProofOfPossession(f"{len(pubkeys)} attestation keys but {len(pops)} proofs of possession")
    if len(set(pubkeys)) != len(pubkeys):
        raise BadProofOfPossession("an attestation key is registered twice")
    if not 1 <= m <= len(pubkeys) <= MAX_SIGNERS:
        raise BadProofOfPossession(f"need 1 <= m <= n <= {MAX_SIGNERS}, got m={m} n={len(pubkeys)}")
    for i, (pk, pop) in enumerate(zip(pubkeys, pops, strict=True)):
        if (
            len(pk) != PUBKEY_SIZE
            or len(pop) != SIGNATURE_SIZE
            or not Bls.PopVerify(BLSPubkey(pk), BLSSignature(pop))
        ):
            raise BadProofOfPossession(
                f"attestation key {i} ({pk.hex()[:16]}...) has no valid proof of possession"
            )


def verify_attestation(att: Attestation, pubkeys: Sequence[bytes], m: int, chain_id: int) -> None:
    """Check the bitmap (only registered signers, at least `m`) and the aggregate signature
    (FastAggregateVerify of the message under the named keys). UnknownSigner, TooFewSigners, BadAggregate."""
    named = signers_of(att.signers)
    if any(i >= len(pubkeys) for i in named):
        raise UnknownSigner(
            f"bitmap {att.signers:#x} names a signer beyond the {len(pubkeys)} registered keys"
        )
    if len(named) < m:
        raise TooFewSigners(f"bitmap {att.signers:#x} names {len(named)} signer(s), {m} required")
    keys = [pubkeys[i] for i in named]
    try:
        ok = Bls.FastAggregateVerify(
            [BLSPubkey(k) for k in keys], att.message(chain_id), BLSSignature(att.signature)
        )
    except Exception as exc:  # py-ecc raises assorted errors for points off the curve or subgroup
        raise BadAggregate(
            f"aggregate signature of batch {att.batch_number} is not a valid point: {exc}"
        ) from exc
    if not ok:
        raise BadAggregate(
            f"aggregate signature of batch {att.batch_number} does not verify for signers {named}"
        )


def check_matches(att: Attestation, batch_hash: bytes, post_state_root: bytes, exits_root: bytes) -> None:
    """AttestationMismatch unless the attestation names exactly these hashes (as derived by replay)."""
    for name, got, want in (
        ("batch hash", att.batch_hash, batch_hash),
        ("post-state root", att.post_state_root, post_state_root),
        ("exits root", att.exits_root, exits_root),
    ):
        if got != want:
            raise AttestationMismatch(
                f"attestation of batch {att.batch_number} names {name} {got.hex()}, replay has {want.hex()}"
            )


def secret_from_seed(seed: bytes) -> int:
    """The BLS secret key of a seed (IETF KeyGen; the seed must be at least 32 bytes)."""
    return int(Bls.KeyGen(seed))


def public_key(secret: int) -> bytes:
    """The compressed G1 public key of a secret."""
    return bytes(Bls.SkToPk(secret))


def proof_of_possession(secret: int) -> bytes:
    """The proof of possession to register with the key."""
    return bytes(Bls.PopProve(secret))


def sign_message(secret: int, message: bytes) -> bytes:
    """One signer's 96-byte signature of an attestation message."""
    return bytes(Bls.Sign(secret, message))


def aggregate(signatures: Sequence[bytes]) -> bytes:
    """The aggregate of several signatures over one message (96 bytes)."""
    if not signatures:
        raise InvalidInput("nothing to aggregate")
    return bytes(Bls.Aggregate([BLSSignature(s) for s in signatures]))


def verify_one(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """Whether one signer's signature verifies (used by the aggregator before it combines)."""
    try:
        return bool(Bls.Verify(BLSPubkey(pubkey), message, BLSSignature(signature)))
    except Exception:  # py-ecc raises for malformed points: that is a bad signature too
        return False
