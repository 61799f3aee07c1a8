"""Script primitives, Core's Solver, asm rendering and relay policy."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btcl2.bitcoin import script as s
from btcl2.bitcoin.tx import TxOut
from btcl2.errors import DecodeError

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
PUB33 = bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
PUB65 = bytes.fromhex(
    "0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
    "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"
)
SIG_ALL = bytes.fromhex(
    "304502210096a75056c9e2cc62b7214777b3d2a592cfda7092520126d4ebfcd6d590c99bd8"
    "022051bb746359cf98c0603f3004477eac68701132380db8facba19c89dc5ab5c5e201"
)


@given(st.binary(max_size=70_000))
def test_push_data_round_trips(data: bytes) -> None:
    assert list(s.iter_ops(s.push_data(data))) == [(s.push_data(data)[0], data)]


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_op_return_chunks_round_trip(chunks: list[bytes]) -> None:
    ops = list(s.iter_ops(s.op_return(*chunks)))
    assert ops[0] == (s.OP_RETURN, None)
    assert [d for _, d in ops[1:]] == chunks


@pytest.mark.parametrize(
    ("n", "hexed"),
    [
        (0, "00"),
        (1, "51"),
        (16, "60"),
        (-1, "4f"),
        (17, "0111"),
        (-2, "0182"),
        (127, "017f"),
        (128, "028000"),
        (255, "02ff00"),
        (-255, "02ff80"),
        (0x7FFFFFFF, "04ffffff7f"),
        (2**31, "050000008000"),
    ],
)
def test_push_int_matches_core(n: int, hexed: str) -> None:
    assert s.push_int(n).hex() == hexed


@given(st.integers(min_value=-(2**31) + 1, max_value=2**31 - 1))
def test_script_num_round_trip(n: int) -> None:
    assert s.script_num_decode(s.script_num_encode(n), require_minimal=True) == n


def test_script_num_rejects_non_minimal_and_long() -> None:
    with pytest.raises(DecodeError):
        s.script_num_decode(b"\x01\x00", require_minimal=True)
    assert s.script_num_decode(b"\x01\x00") == 1
    with pytest.raises(DecodeError):
        s.script_num_decode(b"\x00" * 5)


@pytest.mark.parametrize("truncated", ["01", "4c", "4c02ff", "4d0100", "4e01000000"])
def test_iter_ops_truncated_push(truncated: str) -> None:
    with pytest.raises(DecodeError):
        list(s.iter_ops(bytes.fromhex(truncated)))


def test_templates_and_solver() -> None:
    h20, h32 = bytes(range(20)), bytes(range(32))
    cases = [
        (s.p2pkh(h20), s.ScriptType.PUBKEYHASH, [h20]),
        (s.p2sh(h20), s.ScriptType.SCRIPTHASH, [h20]),
        (s.p2wpkh(h20), s.ScriptType.WITNESS_V0_KEYHASH, [h20]),
        (s.p2wsh(h32), s.ScriptType.WITNESS_V0_SCRIPTHASH, [h32]),
        (s.p2tr(h32), s.ScriptType.WITNESS_V1_TAPROOT, [h32]),
        (s.p2a(), s.ScriptType.ANCHOR, []),
        (s.p2pk(PUB33), s.ScriptType.PUBKEY, [PUB33]),
        (s.p2pk(PUB65), s.ScriptType.PUBKEY, [PUB65]),
        (s.op_return(b"hello"), s.ScriptType.NULLDATA, []),
        (bytes([s.OP_RETURN]), s.ScriptType.NULLDATA, []),
        (s.witness_program(2, b"\xee\xee"), s.ScriptType.WITNESS_UNKNOWN, [b"\x02", b"\xee\xee"]),
        (bytes.fromhex("0010") + bytes(16), s.ScriptType.NONSTANDARD, []),
        (b"", s.ScriptType.NONSTANDARD, []),
    ]
    for spk, kind, sol in cases:
        assert s.solve(spk) == (kind, sol), spk.hex()


def test_multisig_solutions() -> None:
    spk = s.multisig(2, [PUB33, PUB65, PUB33])
    assert spk[0] == s.OP_2 and spk[-2:] == bytes([s.OP_3, s.OP_CHECKMULTISIG])
    assert s.solve(spk) == (s.ScriptType.MULTISIG, [b"\x02", PUB33, PUB65, PUB33, b"\x03"])
    # m > n, a non-key push, or trailing garbage are not multisig
    assert (
        s.solve(bytes([s.OP_2]) + s.push_data(PUB33) + bytes([s.OP_1, s.OP_CHECKMULTISIG]))[0]
        == "nonstandard"
    )
    assert s.solve(bytes([s.OP_1]) + s.push_data(b"\x05" * 33) + bytes([s.OP_1, 0xAE]))[0] == "nonstandard"


def test_standardness() -> None:
    keys = [PUB33] * 4
    assert s.is_standard_output(s.multisig(1, keys[:3]))
    assert not s.is_standard_output(s.multisig(1, keys[:4]))
    assert not s.is_standard_output(s.multisig(1, keys[:2]), permit_bare_multisig=False)
    assert s.is_standard_output(s.op_return(b"\x00" * 100_000))  # v30: no per-output size limit
    assert not s.is_standard_output(bytes([s.OP_RETURN, s.OP_NOP]))
    assert s.is_standard_output(s.witness_program(16, b"\x00" * 40))
    assert not s.is_standard_output(bytes([s.OP_TRUE]))


@pytest.mark.parametrize(
    ("spk", "threshold"),
    [
        (s.p2pkh(bytes(20)), 546),
        (s.p2sh(bytes(20)), 540),
        (s.p2wpkh(bytes(20)), 294),
        (s.p2wsh(bytes(32)), 330),
        (s.p2tr(bytes(32)), 330),
        (s.p2a(), 240),
        (s.op_return(b"x"), 0),
        (b"\x51" * 10_001, 0),
    ],
)
def test_dust_threshold(spk: bytes, threshold: int) -> None:
    assert s.dust_threshold(TxOut(0, spk)) == threshold
    if threshold:
        assert s.is_dust(TxOut(threshold - 1, spk))
    assert not s.is_dust(TxOut(threshold, spk))


def test_dust_threshold_rounds_up() -> None:
    # 34 + 148 = 182 bytes at 1001 sat/kvB = 182.182 -> 183
    assert s.dust_threshold(TxOut(0, s.p2pkh(bytes(20))), 1001) == 183


def test_predicates() -> None:
    assert s.is_push_only(bytes.fromhex("00510150"))  # OP_RESERVED counts as a push
    assert not s.is_push_only(bytes([s.OP_DUP]))
    assert not s.is_push_only(b"\x02\x01")
    assert s.is_unspendable(bytes([s.OP_RETURN]))
    assert not s.is_unspendable(b"")
    assert s.is_witness_program(s.p2a()) == (1, b"\x4e\x73")
    assert s.is_witness_program(bytes.fromhex("0001ff")) is None
    assert s.sigop_count(s.multisig(2, [PUB33] * 3), accurate=True) == 3
    assert s.sigop_count(s.multisig(2, [PUB33] * 3), accurate=False) == 20
    assert s.sigop_count(s.p2pkh(bytes(20)), accurate=False) == 1


def test_der_signatures() -> None:
    assert s.is_valid_der_signature(SIG_ALL)
    assert s.is_low_der_signature(SIG_ALL)
    assert not s.is_valid_der_signature(SIG_ALL[:-2] + SIG_ALL[-1:])
    assert not s.is_valid_der_signature(b"\x30" + SIG_ALL[1:4] + b"\x80" + SIG_ALL[5:])
    high_s = (s.SECP256K1_ORDER - 1).to_bytes(32, "big")
    r = bytes([0x01] * 32)
    sig = bytes([0x30, 4 + 32 + 33, 0x02, 32]) + r + bytes([0x02, 33, 0x00]) + high_s + b"\x01"
    assert s.is_valid_der_signature(sig)
    assert not s.is_low_der_signature(sig)


def test_asm_matches_core_decodescript() -> None:
    for hexed, expected in json.loads((VECTORS / "rpc_decodescript.json").read_text()):
        assert s.to_asm(bytes.fromhex(hexed)) == expected["asm"]
        assert s.solve(bytes.fromhex(hexed))[0] == expected["type"]


@pytest.mark.parametrize(
    ("hexed", "asm"),
    [
        ("", ""),
        ("00", "0"),
        ("4f", "-1"),
        ("0181", "-1"),
        ("04ffffffff", "-2147483647"),
        ("0500000000ff", "00000000ff"),
        ("4c00", "0"),
        ("b1b2", "OP_CHECKLOCKTIMEVERIFY OP_CHECKSEQUENCEVERIFY"),
        ("ff", "OP_INVALIDOPCODE"),
        ("c0", "OP_UNKNOWN"),
        ("76a9", "OP_DUP OP_HASH160"),
        ("4d0100", "[error]"),
        ("51 4c".replace(" ", ""), "1 [error]"),
    ],
)
def test_asm_edge_cases(hexed: str, asm: str) -> None:
    assert s.to_asm(bytes.fromhex(hexed)) == asm


def test_asm_sighash_decoding() -> None:
    script_sig = s.push_data(SIG_ALL) + s.push_data(PUB65)
    assert s.to_asm(script_sig, True) == SIG_ALL[:-1].hex() + "[ALL] " + PUB65.hex()
    assert s.to_asm(script_sig) == SIG_ALL.hex() + " " + PUB65.hex()
    acp = SIG_ALL[:-1] + b"\x82"
    assert s.to_asm(s.push_data(acp), True) == SIG_ALL[:-1].hex() + "[NONE|ANYONECANPAY]"
    undefined = SIG_ALL[:-1] + b"\x05"
    assert s.to_asm(s.push_data(undefined), True) == undefined.hex()
    # data after OP_RETURN is never read as a signature
    assert s.to_asm(bytes([s.OP_RETURN]) + s.push_data(SIG_ALL), True) == "OP_RETURN " + SIG_ALL.hex()
