"""Anchor format: encode/decode round trips, every reassembly error, codecs, transaction building."""

import hashlib
from dataclasses import replace

import pytest

from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import op_return, p2wpkh
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.core import anchor
from btcl2.core.anchor import (
    MAX_ANCHOR_SCRIPT_BYTES,
    AnchorChunk,
    BadCodec,
    Codec,
    CommitmentMismatch,
    DataHashMismatch,
    DuplicateChunk,
    InconsistentChunks,
    MalformedAnchor,
    MisorderedChunk,
    MissingChunk,
    build_anchor_transactions,
    decode_anchor_tx,
    encode_anchor_chunks,
    encode_anchor_outputs,
    reassemble,
)
from btcl2.core.eip712 import address_from_private_key, sign
from btcl2.core.params import Params
from btcl2.core.state import State
from btcl2.core.transition import build_batch
from btcl2.core.types import Batch, DepositCredit, Hash32, Sats, Transfer

PARAMS = Params()


def _key(i: int) -> bytes:
    return hashlib.sha256(b"anchor test %d" % i).digest()


def make_batch(n_txs: int, n_accounts: int = 8) -> Batch:
    """Batch 1 holding n_txs transfers among n_accounts funded by batch 0."""
    keys = [_key(i) for i in range(n_accounts)]
    addrs = [address_from_private_key(k) for k in keys]
    credits = [
        DepositCredit(OutPoint(hashlib.sha256(b"%d" % i).digest(), 0), addrs[i], Sats(10**8))
        for i in range(n_accounts)
    ]
    first = build_batch(State(), PARAMS, credits, [], (10, Hash32(bytes(32))), 1_000)
    txs = [
        sign(
            Transfer(addrs[(i + 1) % n_accounts], Sats(1_000 + i), Sats(100), i // n_accounts),
            keys[i % n_accounts],
            PARAMS.l2_chain_id,
        )
        for i in range(n_txs)
    ]
    built = build_batch(first.state, PARAMS, [], txs, (11, Hash32(bytes(32))), 1_001)
    assert len(built.batch.transactions) == n_txs
    return built.batch


@pytest.fixture(scope="module")
def batch() -> Batch:
    return make_batch(40)


def _tx(outputs: list[TxOut]) -> Tx:
    return Tx(2, (TxIn(OutPoint(b"\x11" * 32, 0)),), tuple(outputs), 0)


def _chunks(batch: Batch, size: int, codec: Codec = Codec.NONE) -> list[AnchorChunk]:
    return encode_anchor_chunks(batch, codec, max_script_bytes=size)


@pytest.mark.parametrize("codec", list(Codec))
def test_round_trip_each_stdlib_codec(batch: Batch, codec: Codec) -> None:
    outputs = encode_anchor_outputs(batch, codec)
    assert len(outputs) == 1
    chunk = decode_anchor_tx(_tx(outputs[0]))
    assert chunk is not None
    assert chunk.commitment.codec == codec
    assert chunk.commitment.batch_number == batch.header.number
    assert chunk.commitment.post_state_root == batch.header.post_state_root
    assert reassemble([chunk]) == batch


def test_default_codec_is_recorded(batch: Batch) -> None:
    (outs,) = encode_anchor_outputs(batch)
    chunk = decode_anchor_tx(_tx(outs))
    assert chunk is not None and chunk.commitment.codec == anchor.DEFAULT_CODEC == Codec.LZMA
    push = outs[0].script_pubkey[3:]
    assert push[:4] == b"BL2A" and push[4] == 1 and push[5] == Codec.LZMA
    assert len(push) == anchor.COMMITMENT_SIZE == 114


def test_split_across_transactions_and_limits(batch: Batch) -> None:
    chunks = _chunks(batch, 1_000)
    assert len(chunks) > 3
    assert all(c.commitment == chunks[0].commitment for c in chunks)
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        outs = chunk.outputs()
        assert sum(len(o.script_pubkey) for o in outs) <= 1_000
        decoded = decode_anchor_tx(_tx([*outs, TxOut(5_000, b"\x00\x14" + bytes(20))]))
        assert decoded == chunk
    assert reassemble(chunks) == batch


def test_full_size_chunk_stays_within_policy() -> None:
    big = make_batch(1_400, n_accounts=64)
    outputs = encode_anchor_outputs(big, Codec.NONE)
    assert len(outputs) == 2
    for outs in outputs:
        assert sum(len(o.script_pubkey) for o in outs) <= MAX_ANCHOR_SCRIPT_BYTES
        assert all(len(o.script_pubkey) <= 10_000 for o in outs)


def test_not_an_anchor() -> None:
    assert decode_anchor_tx(_tx([TxOut(1, op_return(b"hello"))])) is None
    assert decode_anchor_tx(_tx([TxOut(1, p2wpkh(bytes(20)))])) is None


def test_malformed_commitments(batch: Batch) -> None:
    (outs,) = encode_anchor_outputs(batch, Codec.ZLIB)
    push = outs[0].script_pubkey[3:]
    cases = [
        [TxOut(0, op_return(push[:-1])), outs[1]],  # short commitment
        [TxOut(0, op_return(push[:4] + b"\x02" + push[5:])), outs[1]],  # unknown version
        [TxOut(0, op_return(push[:-2] + b"\x00\x00")), outs[1]],  # chunk count 0
        [TxOut(0, op_return(push[:-4] + b"\x01\x00\x01\x00")), outs[1]],  # index >= count
        [outs[0]],  # no data output
        [outs[0], outs[0], outs[1]],  # two commitments
        [TxOut(0, op_return(push, b"x")), outs[1]],  # commitment with two pushes
    ]
    for vout in cases:
        with pytest.raises(MalformedAnchor):
            decode_anchor_tx(_tx(vout))
    with pytest.raises(BadCodec, match="unknown codec 9"):
        decode_anchor_tx(_tx([TxOut(0, op_return(push[:5] + b"\x09" + push[6:])), outs[1]]))


def test_reassembly_errors(batch: Batch) -> None:
    chunks = _chunks(batch, 1_000)
    with pytest.raises(MissingChunk, match="missing chunk 1 of"):
        reassemble([chunks[0], *chunks[2:]])
    with pytest.raises(MissingChunk):
        reassemble([])
    with pytest.raises(DuplicateChunk, match=r"chunk 1 of .* given twice"):
        reassemble([chunks[0], chunks[1], chunks[1], *chunks[2:]])
    with pytest.raises(MisorderedChunk):
        reassemble([chunks[1], chunks[0], *chunks[2:]])
    other = replace(chunks[1], commitment=replace(chunks[1].commitment, batch_number=99))
    with pytest.raises(InconsistentChunks):
        reassemble([chunks[0], other, *chunks[2:]])
    flipped = replace(chunks[0], data=bytes([chunks[0].data[0] ^ 1]) + chunks[0].data[1:])
    with pytest.raises(DataHashMismatch, match="data hash"):
        reassemble([flipped, *chunks[1:]])
    swapped = [replace(chunks[0], data=chunks[1].data), replace(chunks[1], data=chunks[0].data), *chunks[2:]]
    with pytest.raises(DataHashMismatch):
        reassemble(swapped)


def _recommit(chunk: AnchorChunk, payload: bytes, **changes: object) -> AnchorChunk:
    commitment = replace(chunk.commitment, data_hash=Hash32(anchor.keccak256(payload)), **changes)  # type: ignore[arg-type]
    return AnchorChunk(commitment, 0, payload)


def test_commitment_and_codec_errors(batch: Batch) -> None:
    (chunk,) = _chunks(batch, MAX_ANCHOR_SCRIPT_BYTES, Codec.ZLIB)
    with pytest.raises(BadCodec, match="does not decompress"):
        reassemble([_recommit(chunk, b"not zlib")])
    with pytest.raises(BadCodec, match="after the compressed stream"):
        reassemble([_recommit(chunk, chunk.data + b"x")])
    with pytest.raises(BadCodec, match="truncated"):
        reassemble([_recommit(chunk, chunk.data[:-5])])
    bomb = anchor.compress(bytes(anchor.MAX_BATCH_BYTES + 1), Codec.ZLIB)
    with pytest.raises(BadCodec, match="more than"):
        reassemble([_recommit(chunk, bomb)])
    with pytest.raises(MalformedAnchor, match="not a batch"):
        reassemble([_recommit(chunk, anchor.compress(b"\x01garbage", Codec.ZLIB))])
    with pytest.raises(CommitmentMismatch, match="batch hash"):
        reassemble([replace(chunk, commitment=replace(chunk.commitment, batch_hash=Hash32(bytes(32))))])
    with pytest.raises(CommitmentMismatch, match="batch number"):
        reassemble([replace(chunk, commitment=replace(chunk.commitment, batch_number=7))])
    with pytest.raises(CommitmentMismatch, match="post-state root"):
        reassemble([replace(chunk, commitment=replace(chunk.commitment, post_state_root=Hash32(bytes(32))))])


def test_build_anchor_transactions_funds_and_signs(batch: Batch) -> None:
    key = PrivateKey.from_bytes(_key(100))
    spk = p2wpkh(hash160(key.pubkey()))
    outputs = [c.outputs() for c in _chunks(batch, 1_000)]
    coins = [(OutPoint(bytes([i]) * 32, 0), TxOut(100_000 + i, spk)) for i in range(len(outputs) + 2)]
    txs = build_anchor_transactions(outputs, coins, spk, 2, key, locktime=batch.header.l1_origin_height + 1)
    assert len(txs) == len(outputs)
    # nLockTime binds (every input signals BIP125, nSequence < 0xffffffff) and the signatures commit to it.
    assert all(t.locktime == batch.header.l1_origin_height + 1 for t in txs)
    assert all(i.sequence == 0xFFFFFFFD for t in txs for i in t.vin)
    spent = [i.prevout for t in txs for i in t.vin]
    assert len(spent) == len(set(spent))  # independent transactions, no coin twice
    for tx, outs in zip(txs, outputs, strict=True):
        assert list(tx.vout[: len(outs)]) == outs
        assert all(i.witness for i in tx.vin)
        value_in = sum(c[1].value for c in coins if c[0] in {i.prevout for i in tx.vin})
        fee = value_in - sum(o.value for o in tx.vout)
        assert 2 * tx.vsize <= fee <= 2 * tx.vsize + 4
        assert decode_anchor_tx(tx) is not None
    with pytest.raises(anchor.InvalidInput, match="funding exhausted"):
        build_anchor_transactions(outputs, coins[:1], spk, 2, key)
