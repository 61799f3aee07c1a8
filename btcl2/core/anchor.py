"""Anchors: how a sealed batch is written to Bitcoin, and read back (docs/PROTOCOL.md, "Anchors").

A batch is encoded, compressed with one codec, and the compressed payload is split into chunks, one per
Bitcoin transaction. Each anchor transaction carries, from output 0:

* one commitment output, `OP_RETURN <push of COMMITMENT_SIZE bytes>` naming the batch (magic, version,
  codec, batch number, batch hash, post-state root, data hash, chunk index, chunk count);
* then one or more data outputs, `OP_RETURN <one push>`, whose pushes concatenated are the chunk.

The sum of the OP_RETURN scriptPubKey sizes of one transaction stays within MAX_ANCHOR_SCRIPT_BYTES so the
transaction passes Bitcoin Core v30's policy (-datacarriersize 100,000 and 400,000 weight units) with room
for its inputs and change. Pure: no I/O.
"""

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Self

from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey, verify_ecdsa
from btcl2.bitcoin.script import OP_RETURN, dust_threshold, iter_ops, p2pkh, p2wpkh, push_data
from btcl2.bitcoin.sighash import SIGHASH_ALL, segwit_v0_sighash
from btcl2.bitcoin.sign import PrevoutInfo, sign_transaction
from btcl2.bitcoin.tx import MAX_MONEY, OutPoint, Tx, TxIn, TxOut
from btcl2.core.hashing import keccak256
from btcl2.core.types import Batch, Hash32
from btcl2.errors import DecodeError, InvalidInput

ANCHOR_MAGIC = b"BL2A"
"""First four bytes of every commitment push."""
ANCHOR_VERSION = 1
"""The only anchor format version defined."""
COMMITMENT_SIZE = 4 + 1 + 1 + 8 + 32 + 32 + 32 + 2 + 2
"""magic, version u8, codec u8, batch number u64, batch hash, post-state root, data hash, index u16, count u16."""
MAX_DATA_PUSH = 9_996
"""Largest push in one data output: the scriptPubKey (OP_RETURN, PUSHDATA2, data) then stays within
MAX_SCRIPT_SIZE (10,000 bytes), which every script tool accepts, for 0.1% overhead."""
MAX_ANCHOR_SCRIPT_BYTES = 99_000
"""Budget for the OP_RETURN scriptPubKeys of one anchor transaction: under Core v30's 100,000-byte
datacarrier limit, leaving about 900 vbytes of the 100,000-vbyte standard size for inputs and change."""
MAX_CHUNKS = 0xFFFF
"""Most chunks (transactions) one batch may take."""
MAX_BATCH_BYTES = 16 * 1024 * 1024
"""Largest decompressed batch encoding accepted, so a small payload cannot expand without bound."""

LZMA_FILTERS: list[dict[str, int]] = [
    {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": MAX_BATCH_BYTES}
]
"""The one LZMA2 setting of Codec.LZMA (a raw stream carries no settings, so both sides fix them)."""

_COMMITMENT_SCRIPT_SIZE = 1 + len(push_data(bytes(COMMITMENT_SIZE)))
_DATA_OUTPUT_SCRIPT_MAX = 1 + len(push_data(bytes(MAX_DATA_PUSH)))


class Codec(IntEnum):
    """How the batch encoding is compressed; the byte is in every commitment so the choice can change."""

    NONE = 0
    """Stored as is."""
    ZLIB = 1
    """zlib stream (RFC 1950), level 9."""
    LZMA = 2
    """Raw LZMA2 stream (no container: the data hash already guards integrity), preset 9 | EXTREME with a
    16 MiB dictionary, the decoder's only setting (LZMA_FILTERS)."""
    BZ2 = 3
    """bzip2 stream, level 9."""


DEFAULT_CODEC = Codec.LZMA
"""The codec new anchors use: the fewest vbytes per transfer among those measured (btcl2/bench/anchor.py)."""


class AnchorError(InvalidInput):
    """Raised when anchor transactions do not yield the batch they commit to; the anchor is rejected."""


class MalformedAnchor(AnchorError, DecodeError):
    """Raised when a commitment or data output is not in the anchor format, or the batch bytes are not a batch."""


class MissingChunk(AnchorError):
    """Raised when a chunk of a batch's payload is absent."""


class DuplicateChunk(AnchorError):
    """Raised when two different chunks claim the same index of one payload."""


class MisorderedChunk(AnchorError):
    """Raised when chunks are not given in index order (the reassembly input contract)."""


class InconsistentChunks(AnchorError):
    """Raised when chunks meant to form one payload name different batches, hashes, codecs or counts."""


class DataHashMismatch(AnchorError):
    """Raised when the reassembled payload does not hash to the commitment's data hash."""


class BadCodec(AnchorError):
    """Raised when the codec byte is unknown or unavailable, or the payload does not decompress."""


class CommitmentMismatch(AnchorError):
    """Raised when the decoded batch's hash, number or post-state root differs from the commitment."""


@dataclass(frozen=True, slots=True)
class Commitment:
    """What every anchor transaction of one batch states; chunks of one payload share all of it."""

    codec: Codec
    """How the payload is compressed."""
    batch_number: int
    """The batch's number (u64)."""
    batch_hash: Hash32
    """keccak256 of the batch header."""
    post_state_root: Hash32
    """The state root after the batch (so a reader can follow roots without decoding)."""
    data_hash: Hash32
    """keccak256 of the whole compressed payload (all chunks, in index order)."""
    chunk_count: int
    """How many chunks (transactions) the payload is split into, 1..65535."""


@dataclass(frozen=True, slots=True)
class AnchorChunk:
    """One anchor transaction read back: the commitment, which chunk it is, and its data."""

    commitment: Commitment
    """The batch this chunk belongs to."""
    chunk_index: int
    """0-based position of `data` in the payload."""
    data: bytes
    """This chunk of the compressed payload."""

    def encode_commitment(self) -> bytes:
        """The COMMITMENT_SIZE-byte commitment push (see docs/PROTOCOL.md, "Anchors")."""
        c = self.commitment
        return b"".join(
            (
                ANCHOR_MAGIC,
                bytes([ANCHOR_VERSION, c.codec]),
                struct.pack("<Q", c.batch_number),
                c.batch_hash,
                c.post_state_root,
                c.data_hash,
                struct.pack("<HH", self.chunk_index, c.chunk_count),
            )
        )

    def outputs(self) -> list[TxOut]:
        """The commitment output and the data outputs of this chunk, all of value 0."""
        outs = [TxOut(0, bytes([OP_RETURN]) + push_data(self.encode_commitment()))]
        for start in range(0, len(self.data), MAX_DATA_PUSH):
            outs.append(TxOut(0, bytes([OP_RETURN]) + push_data(self.data[start : start + MAX_DATA_PUSH])))
        return outs

    @classmethod
    def decode_commitment(cls, push: bytes, data: bytes) -> Self:
        """Parse a commitment push (which starts with ANCHOR_MAGIC) and attach the chunk's data."""
        if len(push) != COMMITMENT_SIZE:
            raise MalformedAnchor(f"commitment is {len(push)} bytes, expected {COMMITMENT_SIZE}")
        if push[4] != ANCHOR_VERSION:
            raise MalformedAnchor(f"unknown anchor version {push[4]}")
        try:
            codec = Codec(push[5])
        except ValueError as exc:
            raise BadCodec(f"unknown codec {push[5]}") from exc
        (number,) = struct.unpack_from("<Q", push, 6)
        index, count = struct.unpack_from("<HH", push, 110)
        if count == 0 or index >= count:
            raise MalformedAnchor(f"chunk index {index} outside a count of {count}")
        hashes = (Hash32(push[14:46]), Hash32(push[46:78]), Hash32(push[78:110]))
        return cls(Commitment(codec, number, *hashes, count), index, data)


def _single_push(spk: bytes) -> bytes | None:
    """The data of an `OP_RETURN <one push>` script, None if the script has another shape."""
    if spk[:1] != bytes([OP_RETURN]):
        return None
    try:
        ops = list(iter_ops(spk[1:]))
    except DecodeError:
        return None
    if len(ops) != 1 or ops[0][1] is None:
        return None
    return ops[0][1]


def _is_commitment(spk: bytes) -> bool:
    """Whether an output is a commitment candidate: OP_RETURN whose first push starts with the magic."""
    if spk[:1] != bytes([OP_RETURN]):
        return False
    try:
        first = next(iter_ops(spk[1:]), None)
    except DecodeError:
        return False
    return first is not None and first[1] is not None and first[1].startswith(ANCHOR_MAGIC)


def is_authenticated_anchor(tx: Tx, spent: TxOut, poster_pubkey: bytes) -> bool:
    """Whether the first input of `tx`, which spends `spent`, is the poster's signed P2WPKH spend.

    `spent` is the output that input spends, as the node's chain holds it (value and scriptPubKey). It must
    be exactly P2WPKH(hash160(poster_pubkey)); the input must have an empty scriptSig and the witness
    [signature, poster_pubkey]; the signature must be strict DER, low S, with sighash type exactly
    SIGHASH_ALL, and verify under the poster key over the BIP143 digest of input 0 (which commits to the
    spent amount and every output). Reading the witness alone is not enough: the same two items are a
    valid taproot script-path spend (unknown leaf version) of an output anyone can make.
    """
    if not tx.vin or not 0 <= spent.value <= MAX_MONEY:
        return False
    keyhash = hash160(poster_pubkey)
    if spent.script_pubkey != p2wpkh(keyhash):
        return False
    first = tx.vin[0]
    if first.script_sig or len(first.witness) != 2:
        return False
    sig, pubkey = first.witness
    if pubkey != poster_pubkey or not sig or sig[-1] != SIGHASH_ALL:
        return False
    digest = segwit_v0_sighash(tx, 0, p2pkh(keyhash), spent.value, SIGHASH_ALL)
    return verify_ecdsa(pubkey, sig[:-1], digest)


def decode_anchor_tx(tx: Tx) -> AnchorChunk | None:
    """The anchor chunk a Bitcoin transaction carries, None if it has no commitment output.

    A commitment candidate is any OP_RETURN output whose first push starts with b"BL2A"; there must be
    exactly one, of the exact shape, immediately followed by one or more data outputs (OP_RETURN and
    exactly one push each); the data ends at the first output that is not such a data output.
    Raises MalformedAnchor (or BadCodec) for a transaction that has a candidate but breaks the format.
    """
    positions = [i for i, out in enumerate(tx.vout) if _is_commitment(out.script_pubkey)]
    if not positions:
        return None
    if len(positions) > 1:
        raise MalformedAnchor("more than one commitment output")
    first = positions[0]
    push = _single_push(tx.vout[first].script_pubkey)
    if push is None:
        raise MalformedAnchor("commitment output must be OP_RETURN and exactly one push")
    pieces: list[bytes] = []
    for out in tx.vout[first + 1 :]:
        piece = _single_push(out.script_pubkey)
        if piece is None:
            break
        pieces.append(piece)
    if not pieces:
        raise MalformedAnchor("commitment output is not followed by a data output")
    return AnchorChunk.decode_commitment(push, b"".join(pieces))


# --- compression ------------------------------------------------------------------------------------


def compress(data: bytes, codec: Codec) -> bytes:
    """Compress `data` with `codec` at its strongest standard setting."""
    if codec == Codec.NONE:
        return data
    if codec == Codec.ZLIB:
        return zlib.compress(data, 9)
    if codec == Codec.LZMA:
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
    if codec == Codec.BZ2:
        return bz2.compress(data, 9)
    raise BadCodec(f"unknown codec {codec}")


def _bounded(decompressor: Any, data: bytes, limit: int) -> bytes:
    """Run a zlib/lzma/bz2-style decompressobj, refusing more than `limit` bytes of output."""
    out = decompressor.decompress(data, limit + 1)
    if len(out) > limit:
        raise BadCodec(f"payload decompresses to more than {limit} bytes")
    if not decompressor.eof:
        raise BadCodec("payload is truncated")
    if decompressor.unused_data:
        raise BadCodec("payload has bytes after the compressed stream")
    result: bytes = out
    return result


_DECOMPRESSORS: dict[Codec, Callable[[bytes, int], bytes]] = {
    Codec.ZLIB: lambda d, n: _bounded(zlib.decompressobj(), d, n),
    Codec.LZMA: lambda d, n: _bounded(lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=LZMA_FILTERS), d, n),
    Codec.BZ2: lambda d, n: _bounded(bz2.BZ2Decompressor(), d, n),
}


def decompress(data: bytes, codec: Codec, limit: int = MAX_BATCH_BYTES) -> bytes:
    """Decompress a payload; BadCodec if it is corrupt, truncated, trailed or larger than `limit`."""
    if codec == Codec.NONE:
        if len(data) > limit:
            raise BadCodec(f"payload larger than {limit} bytes")
        return data
    try:
        return _DECOMPRESSORS[codec](data, limit)
    except BadCodec:
        raise
    except KeyError as exc:
        raise BadCodec(f"unknown codec {codec}") from exc
    except Exception as exc:  # each library raises its own error type for corrupt input
        raise BadCodec(f"payload does not decompress with {codec.name.lower()}: {exc}") from exc


# --- encoding and reassembly -------------------------------------------------------------------------


def chunk_capacity(max_script_bytes: int = MAX_ANCHOR_SCRIPT_BYTES) -> int:
    """Payload bytes one anchor transaction carries when its OP_RETURN scripts may total `max_script_bytes`."""
    left = max_script_bytes - _COMMITMENT_SCRIPT_SIZE
    full, rest = divmod(left, _DATA_OUTPUT_SCRIPT_MAX)
    # A partial last output costs OP_RETURN plus at most a 3-byte push header (PUSHDATA2).
    return full * MAX_DATA_PUSH + max(0, rest - 4)


def encode_anchor_chunks(
    batch: Batch, codec: Codec = DEFAULT_CODEC, max_script_bytes: int = MAX_ANCHOR_SCRIPT_BYTES
) -> list[AnchorChunk]:
    """The chunks anchoring `batch`: its encoding compressed with `codec`, split to fit each transaction."""
    payload = compress(batch.encode(), codec)
    capacity = chunk_capacity(max_script_bytes)
    if capacity <= 0:
        raise InvalidInput(f"max_script_bytes {max_script_bytes} leaves no room for data")
    pieces = [payload[i : i + capacity] for i in range(0, len(payload), capacity)] or [b""]
    if len(pieces) > MAX_CHUNKS:
        raise InvalidInput(f"batch needs {len(pieces)} anchor transactions, more than {MAX_CHUNKS}")
    header = batch.header
    commitment = Commitment(
        codec, header.number, batch.hash, header.post_state_root, Hash32(keccak256(payload)), len(pieces)
    )
    return [AnchorChunk(commitment, i, piece) for i, piece in enumerate(pieces)]


def encode_anchor_outputs(
    batch: Batch, codec: Codec = DEFAULT_CODEC, max_script_bytes: int = MAX_ANCHOR_SCRIPT_BYTES
) -> list[list[TxOut]]:
    """The OP_RETURN outputs anchoring `batch`: one list per Bitcoin transaction, in chunk order."""
    return [chunk.outputs() for chunk in encode_anchor_chunks(batch, codec, max_script_bytes)]


def _check_chunk_set(chunks: Sequence[AnchorChunk]) -> Commitment:
    """The shared commitment of a complete, ordered chunk list, else the first thing wrong with it."""
    if not chunks:
        raise MissingChunk("no chunks")
    commitment = chunks[0].commitment
    for chunk in chunks[1:]:
        if chunk.commitment != commitment:
            raise InconsistentChunks(
                f"chunk {chunk.chunk_index} names another commitment than chunk {chunks[0].chunk_index}"
            )
    seen: dict[int, bytes] = {}
    for chunk in chunks:
        if chunk.chunk_index in seen:
            raise DuplicateChunk(f"chunk {chunk.chunk_index} of {commitment.chunk_count} given twice")
        seen[chunk.chunk_index] = chunk.data
    missing = [i for i in range(commitment.chunk_count) if i not in seen]
    if missing:
        raise MissingChunk(f"missing chunk {missing[0]} of {commitment.chunk_count}")
    indexes = [c.chunk_index for c in chunks]
    if indexes != sorted(indexes):
        raise MisorderedChunk(f"chunks given in order {indexes}, not by index")
    return commitment


def reassemble(chunks: Sequence[AnchorChunk]) -> Batch:
    """The batch a complete set of chunks (in index order) carries, checked against its commitment.

    Raises InconsistentChunks, DuplicateChunk, MissingChunk, MisorderedChunk, DataHashMismatch,
    BadCodec, MalformedAnchor (the bytes are not a batch) or CommitmentMismatch.
    """
    commitment = _check_chunk_set(chunks)
    payload = b"".join(c.data for c in chunks)
    data_hash = keccak256(payload)
    if data_hash != commitment.data_hash:
        raise DataHashMismatch(
            f"data hash: commitment {commitment.data_hash.hex()}, payload {data_hash.hex()}"
        )
    encoded = decompress(payload, commitment.codec)
    try:
        batch = Batch.decode(encoded)
    except DecodeError as exc:
        raise MalformedAnchor(f"payload is not a batch: {exc}") from exc
    if batch.hash != commitment.batch_hash:
        raise CommitmentMismatch(
            f"batch hash: commitment {commitment.batch_hash.hex()}, decoded {batch.hash.hex()}"
        )
    if batch.header.number != commitment.batch_number:
        raise CommitmentMismatch(
            f"batch number: commitment {commitment.batch_number}, decoded {batch.header.number}"
        )
    if batch.header.post_state_root != commitment.post_state_root:
        raise CommitmentMismatch(
            f"post-state root: commitment {commitment.post_state_root.hex()}, "
            f"header {batch.header.post_state_root.hex()}"
        )
    return batch


# --- building anchor transactions ---------------------------------------------------------------------

MAX_STANDARD_TX_WEIGHT = 400_000
"""Bitcoin Core's largest standard transaction."""


def _fee(tx: Tx, fee_rate: int) -> int:
    """The fee of `tx` at `fee_rate` sat/vB once each (P2WPKH) input carries its witness.

    The witness is at most 108 bytes per input: item count, a signature of at most 72 bytes, a 33-byte key.
    """
    weight = len(tx.encode(include_witness=False)) * 4 + 2 + len(tx.vin) * (1 + 1 + 72 + 1 + 33)
    return -(-weight // 4) * fee_rate


def build_anchor_transactions(
    outputs: Sequence[Sequence[TxOut]],
    funding_utxos: Sequence[tuple[OutPoint, TxOut]],
    change_script: bytes,
    fee_rate: int,
    key: PrivateKey,
    locktime: int = 0,
) -> list[Tx]:
    """Signed anchor transactions, one per list of `outputs`, each paying `fee_rate` sat/vB, with nLockTime
    `locktime` (the poster sets l1_origin_height + K - 1, so no block below origin + K can hold them).

    The transactions do not spend each other: Core v30 limits a mempool cluster to 101 kvB, so two full
    anchor transactions could never wait in the mempool as parent and child. Each takes, largest first,
    as many of the `funding_utxos` (P2WPKH outputs of `key`) as its fee needs, and returns the rest to
    `change_script` (dropped into the fee when below the dust threshold). InvalidInput when funds run out
    or a transaction would exceed MAX_STANDARD_TX_WEIGHT.
    """
    if fee_rate < 0:
        raise InvalidInput("fee rate must not be negative")
    coins = sorted(funding_utxos, key=lambda c: c[1].value, reverse=True)
    result: list[Tx] = []
    for n, outs in enumerate(outputs):
        chosen: list[tuple[OutPoint, TxOut]] = []
        while True:
            if not coins:
                raise InvalidInput(f"funding exhausted at anchor transaction {n}")
            chosen.append(coins.pop(0))
            tx = _anchor_tx(outs, chosen, change_script, fee_rate, locktime)
            if tx is not None:
                break
        prevouts = {op: PrevoutInfo(out.script_pubkey, out.value) for op, out in chosen}
        signed = sign_transaction(tx, [key], prevouts)
        if not signed.complete:
            raise InvalidInput(f"cannot sign anchor transaction {n}: {signed.errors[0].error}")
        if signed.tx.weight > MAX_STANDARD_TX_WEIGHT:
            raise InvalidInput(f"anchor transaction {n} weighs {signed.tx.weight} > {MAX_STANDARD_TX_WEIGHT}")
        result.append(signed.tx)
    return result


def _anchor_tx(
    outs: Sequence[TxOut],
    coins: Sequence[tuple[OutPoint, TxOut]],
    change_script: bytes,
    fee_rate: int,
    locktime: int,
) -> Tx | None:
    """The unsigned transaction spending `coins` into `outs` plus change, None if they do not cover the fee.
    Its inputs' nSequence (BIP125 replaceable) also makes nLockTime binding."""
    vin = tuple(TxIn(op, sequence=0xFFFFFFFD) for op, _ in coins)
    total = sum(out.value for _, out in coins) - sum(out.value for out in outs)
    with_change = Tx(2, vin, (*outs, TxOut(0, change_script)), locktime)
    change = TxOut(total - _fee(with_change, fee_rate), change_script)
    if change.value >= dust_threshold(change):
        return Tx(2, vin, (*outs, change), locktime)
    without = Tx(2, vin, tuple(outs), locktime)
    return without if total >= _fee(without, fee_rate) else None
