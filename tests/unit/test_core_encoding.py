"""L2 wire encodings: round trips, fixed vectors, every decode rejection, and decode fuzzing."""

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btcl2.bitcoin.tx import MAX_MONEY, OutPoint
from btcl2.core import eip712
from btcl2.core.errors import MalformedEncoding, UnknownTxType
from btcl2.core.merkle import EMPTY_MERKLE_ROOT, merkle_branch, merkle_root, verify_branch
from btcl2.core.state import Account
from btcl2.core.types import (
    Address20,
    Batch,
    BatchHeader,
    DepositCredit,
    Hash32,
    Sats,
    SignedTx,
    Transfer,
    Withdrawal,
    WithdrawalRecord,
    decode_tx,
)
from btcl2.errors import DecodeError

VECTORS = Path(__file__).parent.parent / "vectors" / "l2_encodings.json"
KEY = bytes.fromhex("01" * 32)
CHAIN = 7702


def sample_objects() -> dict[str, Any]:
    """The fixed objects behind tests/vectors/l2_encodings.json."""
    transfer = Transfer(Address20(bytes(range(20))), Sats(123_456_789), Sats(1_000), 7)
    withdrawal = Withdrawal(Sats(50_000), Sats(250), 8, bytes.fromhex("0014" + "ab" * 20))
    s_transfer = eip712.sign(transfer, KEY, CHAIN)
    s_withdrawal = eip712.sign(withdrawal, KEY, CHAIN)
    credit = DepositCredit(OutPoint(bytes(range(32)), 1), Address20(b"\xcd" * 20), Sats(2_500_000))
    record = WithdrawalRecord(s_withdrawal.tx_hash, Address20(b"\x42" * 20), Sats(50_000), withdrawal.script)
    header = BatchHeader(
        number=5,
        parent_hash=Hash32(b"\x11" * 32),
        l1_origin_height=210,
        l1_origin_hash=Hash32(b"\x22" * 32),
        pre_state_root=Hash32(b"\x33" * 32),
        post_state_root=Hash32(b"\x44" * 32),
        transactions_root=Hash32(merkle_root([s_transfer.tx_hash, s_withdrawal.tx_hash])),
        deposits=(credit,),
        withdrawals_root=Hash32(b"\x55" * 32),
        timestamp=1_700_000_000,
    )
    return {
        "transfer": transfer,
        "withdrawal": withdrawal,
        "signed_transfer": s_transfer,
        "signed_withdrawal": s_withdrawal,
        "deposit_credit": credit,
        "withdrawal_record": record,
        "batch_header": header,
        "batch": Batch(header, (s_transfer, s_withdrawal)),
        "account": Account(Sats(99), 3),
    }


DECODERS: dict[str, Any] = {
    "transfer": decode_tx,
    "withdrawal": decode_tx,
    "signed_transfer": SignedTx.decode,
    "signed_withdrawal": SignedTx.decode,
    "deposit_credit": DepositCredit.decode,
    "withdrawal_record": WithdrawalRecord.decode,
    "batch_header": BatchHeader.decode,
    "batch": Batch.decode,
    "account": Account.decode,
}


def _vector(name: str, obj: Any) -> dict[str, str]:
    entry = {"name": name, "encoding": obj.encode().hex()}
    if isinstance(obj, SignedTx):
        entry["tx_hash"] = obj.tx_hash.hex()
        entry["signing_digest"] = eip712.signing_digest(obj.tx, CHAIN).hex()
        entry["sender"] = eip712.recover_sender(obj, CHAIN).hex()
    if isinstance(obj, BatchHeader | Batch):
        entry["hash"] = obj.hash.hex()
    return entry


def test_vectors_match() -> None:
    vectors = json.loads(VECTORS.read_text())
    assert vectors["chain_id"] == CHAIN and vectors["private_key"] == KEY.hex()
    computed = [_vector(n, o) for n, o in sample_objects().items()]
    assert vectors["vectors"] == computed


@pytest.mark.parametrize("name", list(DECODERS))
def test_round_trip(name: str) -> None:
    obj = sample_objects()[name]
    data = obj.encode()
    assert DECODERS[name](data) == obj
    with pytest.raises(MalformedEncoding):
        DECODERS[name](data + b"\x00")
    for cut in range(len(data)):
        with pytest.raises(MalformedEncoding):
            DECODERS[name](data[:cut])


def test_known_sizes() -> None:
    objs = sample_objects()
    assert len(objs["signed_transfer"].encode()) == 1 + 20 + 24 + 65
    assert len(objs["signed_withdrawal"].encode()) == 1 + 24 + 1 + 22 + 65
    assert len(objs["deposit_credit"].encode()) == 64
    assert len(objs["account"].encode()) == 16


def test_unknown_tx_type() -> None:
    data = bytearray(sample_objects()["signed_transfer"].encode())
    data[0] = 0x04
    with pytest.raises(UnknownTxType):
        SignedTx.decode(bytes(data))


@pytest.mark.parametrize("offset", [21, 29])  # amount, fee of a transfer
def test_amount_above_max_money(offset: int) -> None:
    data = bytearray(sample_objects()["transfer"].encode())
    data[offset : offset + 8] = (MAX_MONEY + 1).to_bytes(8, "little")
    with pytest.raises(MalformedEncoding, match="MAX_MONEY"):
        decode_tx(bytes(data))


def test_withdrawal_script_too_long() -> None:
    tx = Withdrawal(Sats(1), Sats(0), 0, b"\x51" * 43)
    with pytest.raises(MalformedEncoding, match="exceeds"):
        decode_tx(tx.encode())


def test_header_version_and_deposit_amount() -> None:
    header = sample_objects()["batch_header"]
    data = bytearray(header.encode())
    data[0] = 2
    with pytest.raises(MalformedEncoding, match="version"):
        BatchHeader.decode(bytes(data))
    credit = DepositCredit(OutPoint(b"\x00" * 32, 0), Address20(b"\x00" * 20), Sats(MAX_MONEY + 1))
    with pytest.raises(MalformedEncoding):
        DepositCredit.decode(credit.encode())


def test_non_bytes_input() -> None:
    with pytest.raises(MalformedEncoding):
        SignedTx.decode("00")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), which=st.sampled_from(list(DECODERS)))
def test_random_bytes_only_raise_decode_error(data: bytes, which: str) -> None:
    with contextlib.suppress(DecodeError):
        DECODERS[which](data)


@settings(max_examples=200, deadline=None)
@given(which=st.sampled_from(list(DECODERS)), pos=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_mutated_encodings_only_raise_decode_error(which: str, pos: int, byte: int) -> None:
    data = bytearray(sample_objects()[which].encode())
    data[pos % len(data)] = byte
    try:
        obj = DECODERS[which](bytes(data))
    except DecodeError:
        return
    assert obj.encode() == bytes(data)  # whatever decodes re-encodes to the same bytes (canonical)


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=17), st.data())
def test_merkle_branches(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    root = merkle_root(leaves)
    assert verify_branch(root, leaves[index], merkle_branch(leaves, index))
    assert (
        not verify_branch(root, b"\xff" * 32, merkle_branch(leaves, index)) or leaves[index] == b"\xff" * 32
    )


def test_merkle_edges() -> None:
    assert merkle_root([]) == EMPTY_MERKLE_ROOT
    assert merkle_root([b"\x01" * 32]) == b"\x01" * 32
    a, b = b"\x01" * 32, b"\x02" * 32
    assert merkle_root([a, b, a]) != merkle_root([a, b, a, a])
