"""Fuzz every decoder with inputs mutated from real encodings: Bitcoin transactions (Core's
decoderawtransaction vector) and blocks built from them, L2 types (tests/vectors/l2_encodings.json),
anchors, payout tags, deposit tags and attestations. Each either decodes (and then round-trips) or raises
a typed InvalidInput, never anything else."""

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btcl2.bitcoin.block import Block, BlockHeader, merkle_root
from btcl2.bitcoin.tx import Tx, TxOut
from btcl2.core import types
from btcl2.core.anchor import decode_anchor_tx, encode_anchor_outputs
from btcl2.core.deposits import DepositKind, deposit_tag_script, parse_deposit
from btcl2.core.params import Params
from btcl2.core.smt import Proof
from btcl2.errors import InvalidInput
from btcl2.federation.payout import WithdrawalRef, decode_tag, encode_tag

VECTORS = Path(__file__).parent.parent / "vectors"
EXAMPLES = 300
"""Inputs tried per decoder (bounded: the whole file runs in seconds)."""


def _real_txs() -> list[bytes]:
    doc = json.loads((VECTORS / "decoderawtransaction_txcreatesignv1.json").read_text())
    found: list[bytes] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "hex" and isinstance(value, str) and len(value) > 100:
                    found.append(bytes.fromhex(value))
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    for name in ("tx_valid.json",):
        path = VECTORS / name
        if path.exists():
            walk(json.loads(path.read_text()))
    return [raw for raw in found if _decodes(Tx.decode, raw)]


def _decodes(fn: Callable[[bytes], Any], raw: bytes) -> bool:
    try:
        fn(raw)
    except InvalidInput:
        return False
    return True


def _coinbase() -> Tx:
    from btcl2.bitcoin.tx import OutPoint, TxIn

    return Tx(2, (TxIn(OutPoint(bytes(32), 0xFFFFFFFF), b"\x01\x65"),), (TxOut(50 * 10**8, b"\x51"),), 0)


TX_CORPUS = _real_txs() or [_coinbase().encode()]
L2_CORPUS = {
    v["name"]: bytes.fromhex(v["encoding"])
    for v in json.loads((VECTORS / "l2_encodings.json").read_text())["vectors"]
}


def _block_corpus() -> list[bytes]:
    txs = (_coinbase(), *(Tx.decode(raw) for raw in TX_CORPUS[:3]))
    header = BlockHeader(
        0x20000000, bytes(32), merkle_root([t.txid for t in txs]), 1_700_000_000, 0x207FFFFF, 7
    )
    return [Block(header, txs).encode(), Block(header, txs[:1]).encode()]


BLOCK_CORPUS = _block_corpus()


def mutated(corpus: list[bytes]) -> st.SearchStrategy[bytes]:
    """A corpus entry with random edits: byte flips, a cut, an insertion, or random bytes outright."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(corpus)))
        for _ in range(draw(st.integers(0, 4))):
            op = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
            pos = draw(st.integers(0, max(len(data) - 1, 0)))
            if op == "flip" and data:
                data[pos] ^= 1 << draw(st.integers(0, 7))
            elif op == "cut":
                del data[pos:]
            elif op == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=9))
            elif data:
                data[pos] = draw(st.sampled_from([0x00, 0xFD, 0xFE, 0xFF, 0x80, 0x7F]))
        return bytes(data)

    return st.one_of(build(), st.binary(max_size=200))


def check(decode: Callable[[bytes], Any], encode: Callable[[Any], bytes] | None, data: bytes) -> None:
    """`decode` succeeds (then re-encodes to the same bytes when `encode` is given) or raises InvalidInput."""
    try:
        value = decode(data)
    except InvalidInput:
        return
    if encode is not None:
        assert encode(value) == data


FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated(TX_CORPUS))
def test_fuzz_bitcoin_tx(data: bytes) -> None:
    try:
        tx = Tx.decode(data)
    except InvalidInput:
        return
    # A transaction with witnesses may also have a legacy encoding of the same bytes; both must agree.
    assert Tx.decode(tx.encode()) == tx


@FUZZ
@given(mutated(BLOCK_CORPUS))
def test_fuzz_bitcoin_block(data: bytes) -> None:
    try:
        block = Block.decode(data)
    except InvalidInput:
        return
    assert Block.decode(block.encode()) == block


@FUZZ
@given(mutated([b[:80] for b in BLOCK_CORPUS]))
def test_fuzz_block_header(data: bytes) -> None:
    check(BlockHeader.decode, lambda h: h.encode(), data)


L2_DECODERS: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], bytes]]] = {
    "transfer": (types.decode_tx, lambda t: t.encode()),
    "withdrawal": (types.decode_tx, lambda t: t.encode()),
    "signed_transfer": (types.SignedTx.decode, lambda t: t.encode()),
    "signed_withdrawal": (types.SignedTx.decode, lambda t: t.encode()),
    "deposit_credit": (types.DepositCredit.decode, lambda t: t.encode()),
    "withdrawal_record": (types.WithdrawalRecord.decode, lambda t: t.encode()),
    "batch_header": (types.BatchHeader.decode, lambda t: t.encode()),
    "batch": (types.Batch.decode, lambda t: t.encode()),
}


@FUZZ
@given(st.sampled_from(sorted(L2_DECODERS)), st.data())
def test_fuzz_l2_types(name: str, data: st.DataObject) -> None:
    decode, encode = L2_DECODERS[name]
    check(decode, encode, data.draw(mutated([L2_CORPUS[name]])))


@FUZZ
@given(mutated([bytes(8) + bytes(32) * 2]))
def test_fuzz_smt_proof(data: bytes) -> None:
    check(Proof.decode, None, data)


def _anchor_tx(batch: bytes) -> Tx:
    outputs = encode_anchor_outputs(types.Batch.decode(batch))
    return Tx(2, Tx.decode(TX_CORPUS[0]).vin, tuple(outputs[0]), 0)


ANCHOR_CORPUS = [_anchor_tx(L2_CORPUS["batch"]).encode()]


@FUZZ
@given(mutated(ANCHOR_CORPUS))
def test_fuzz_anchor(data: bytes) -> None:
    try:
        tx = Tx.decode(data)
    except InvalidInput:
        return
    with contextlib.suppress(InvalidInput):
        decode_anchor_tx(tx)


TAG_CORPUS = [
    encode_tag([WithdrawalRef.evm(b"\x07" * 32)]),
    encode_tag([WithdrawalRef.evm(b"\x01" * 32), WithdrawalRef.evm(b"\x02" * 32)]),
]


@FUZZ
@given(mutated(TAG_CORPUS))
def test_fuzz_payout_tag(data: bytes) -> None:
    try:
        refs = decode_tag(data)
    except InvalidInput:
        return
    if refs:
        assert decode_tag(encode_tag(refs)) == refs


PARAMS = Params()
DEPOSIT_CORPUS = [
    deposit_tag_script(DepositKind.L2, bytes(range(20))),
    deposit_tag_script(DepositKind.EVM, bytes(20)),
]


@FUZZ
@given(mutated(DEPOSIT_CORPUS), st.integers(0, 2 * 10**8))
def test_fuzz_deposit_tag(tag: bytes, amount: int) -> None:
    base = Tx.decode(TX_CORPUS[0])
    tx = Tx(2, base.vin, (TxOut(amount, PARAMS.federation_script_pubkey), TxOut(0, tag)), 0)
    with contextlib.suppress(InvalidInput):
        parse_deposit(tx, PARAMS.federation_script_pubkey, PARAMS)


def _attestation_corpus() -> list[bytes]:
    try:
        from btcl2.core import attestation
    except ImportError:
        return []
    return [bytes(a) for a in getattr(attestation, "EXAMPLES", [])] or [bytes(200)]


@FUZZ
@given(mutated(_attestation_corpus() or [b""]))
def test_fuzz_attestation(data: bytes) -> None:
    try:
        from btcl2.core.attestation import Attestation
    except ImportError:
        return
    check(Attestation.decode, None, data)
