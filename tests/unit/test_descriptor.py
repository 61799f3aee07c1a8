"""BIP380 checksums, Core's inferred descriptors and scantxoutset scan objects."""

import json
from pathlib import Path

import pytest

from btcl2.bitcoin import descriptor as d
from btcl2.bitcoin import script as s
from btcl2.bitcoin.address import MAINNET, REGTEST, encode_wif, script_to_address
from btcl2.bitcoin.hashes import hash160
from btcl2.errors import InvalidInput

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
G = bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
G_UNCOMPRESSED = bytes.fromhex(
    "0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
    "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"
)


def test_bip380_checksums() -> None:
    assert d.descsum_create("raw(deadbeef)") == "raw(deadbeef)#89f8spxm"
    assert d.descsum_check("raw(deadbeef)#89f8spxm")
    for bad in (
        "raw(deadbeef)#",
        "raw(deadbeef)#89f8spxmx",
        "raw(deadbeef)#89f8spx",
        "raw(dedbeef)#89f8spxm",
        "raw(deadbeef)##9f8spxm",
        "raw(deadbeef)#x9f8spxm",
        "raw(deadbeef)",
    ):
        assert not d.descsum_check(bad), bad
    assert d.descriptor_checksum("raw(\u00dc)") == ""


@pytest.mark.parametrize(
    ("desc", "message"),
    [
        ("raw(deadbeef)#89f8spxm#89f8spxm", "Multiple '#' symbols"),
        ("raw(deadbeef)#89f8spx", "Expected 8 character checksum, not 7 characters"),
        ("raw(dedbeef)#89f8spxm", "Provided checksum '89f8spxm' does not match computed checksum '9gnngwzm'"),
        ("raw(\u00dc)#00000000", "Invalid characters in payload"),
        ("", "'' is not a valid descriptor function"),
        ("foo(00)", "'foo(00)' is not a valid descriptor function"),
        ("raw(0)", "Raw script is not hex"),
        ("raw()", "Raw script is not hex"),
        ("addr(bc1qxyz)", "Address is not valid"),
        ("sh(raw(00))", "Can only have raw() at top level"),
        ("sh(addr(x))", "Can only have addr() at top level"),
        ("sh(combo(00))", "Can only have combo() at top level"),
        ("sh(sh(raw(00)))", "Can only have sh() at top level"),
        ("sh(00)", "A function is needed within P2SH"),
        ("pk( " + G.hex() + ")", "pk(): Key ' " + G.hex() + "' is invalid due to whitespace"),
        ("pkh(" + "02" + "00" * 32 + ")", "pkh(): Pubkey '02" + "00" * 32 + "' is invalid"),
        ("wpkh(" + G_UNCOMPRESSED.hex() + ")", "wpkh(): Uncompressed keys are not allowed"),
        ("pkh(06" + G_UNCOMPRESSED.hex()[2:] + ")", "pkh(): Hybrid public keys are not allowed"),
        ("pkh(zz)", "pkh(): key 'zz' is not valid"),
        ("pkh()", "pkh(): No key provided"),
        ("rawtr(" + G.hex() + "," + G.hex() + ")", "rawtr(): only one key expected."),
    ],
)
def test_parse_errors(desc: str, message: str) -> None:
    with pytest.raises(d.DescriptorError) as err:
        d.parse_scan_objects([desc], MAINNET)
    assert str(err.value) == message
    assert err.value.rpc_code == d.RPC_INVALID_ADDRESS_OR_KEY
    assert isinstance(err.value, InvalidInput)


@pytest.mark.parametrize(
    ("obj", "message", "code"),
    [
        ({"desc": "desc", "range": -1}, "End of range is too high", -8),
        ({"desc": "desc", "range": [-1, 10]}, "Range should be greater or equal than 0", -8),
        ({"desc": "desc", "range": [(2 << 32) - 1000000, 2 << 32]}, "End of range is too high", -8),
        (
            {"desc": "desc", "range": [2, 1]},
            "Range specified as [begin,end] must not have begin after end",
            -8,
        ),
        ({"desc": "desc", "range": [0, 1000001]}, "Range is too large", -8),
        ({"desc": "desc", "range": "x"}, "Range must be specified as end or as [begin,end]", -8),
        ({"range": 1}, "Descriptor needs to be provided in scan object", -8),
        ({"desc": 1}, "JSON value of type number is not of expected type string", -3),
        ({"desc": "desc", "range": 5}, "'desc' is not a valid descriptor function", -5),
    ],
)
def test_scan_object_errors(obj: dict[str, object], message: str, code: int) -> None:
    with pytest.raises(d.DescriptorError) as err:
        d.parse_scan_objects([obj], REGTEST)
    assert (str(err.value), err.value.rpc_code) == (message, code)


def test_infer_matches_core_decodescript() -> None:
    for hexed, expected in json.loads((VECTORS / "rpc_decodescript.json").read_text()):
        assert d.infer_descriptor(bytes.fromhex(hexed), REGTEST) == expected["desc"]


def test_infer_each_type() -> None:
    def infer(spk: bytes) -> str:
        desc = d.infer_descriptor(spk, MAINNET)
        assert d.descsum_check(desc)
        return desc.split("#")[0]

    assert infer(s.p2pk(G)) == f"pk({G.hex()})"
    assert infer(s.p2pk(G_UNCOMPRESSED)) == f"pk({G_UNCOMPRESSED.hex()})"
    hybrid = b"\x06" + G_UNCOMPRESSED[1:]
    assert infer(s.p2pk(hybrid)) == f"raw({s.p2pk(hybrid).hex()})"
    assert infer(s.p2pkh(hash160(G))) == f"addr({script_to_address(s.p2pkh(hash160(G)), MAINNET)})"
    assert infer(s.p2wpkh(hash160(G))).startswith("addr(bc1q")
    assert infer(s.p2tr(G[1:])) == f"rawtr({G[1:].hex()})"
    not_on_curve = bytes(32)
    assert infer(s.p2tr(not_on_curve)) == f"addr({script_to_address(s.p2tr(not_on_curve), MAINNET)})"
    assert infer(s.multisig(1, [G, G_UNCOMPRESSED])) == f"multi(1,{G.hex()},{G_UNCOMPRESSED.hex()})"
    assert infer(s.multisig(1, [hybrid])) == f"raw({s.multisig(1, [hybrid]).hex()})"
    assert infer(s.p2a()) == "addr(bc1pfeessrawgf)"
    assert infer(s.op_return(b"hi")) == "raw(6a026869)"
    assert infer(b"") == "raw()"


def test_scan_single_key_descriptors() -> None:
    h = hash160(G)
    targets = d.parse_scan_objects(
        [f"pkh({G.hex()})", {"desc": f"wpkh({G.hex()})", "range": 10}, f"sh(wpkh({G.hex()}))"], REGTEST
    )
    assert [t.script_pubkey for t in targets] == [s.p2pkh(h), s.p2wpkh(h), s.p2sh(hash160(s.p2wpkh(h)))]
    assert [t.desc.split("#")[0] for t in targets] == [
        f"pkh({G.hex()})",
        f"wpkh({G.hex()})",
        f"sh(wpkh({G.hex()}))",
    ]
    assert all(d.descsum_check(t.desc) for t in targets)


def test_scan_combo_and_dedup() -> None:
    h = hash160(G)
    targets = d.parse_scan_objects([d.descsum_create(f"combo({G.hex()})"), f"pk({G.hex()})"], REGTEST)
    assert [t.desc.split("#")[0] for t in targets] == [
        f"pk({G.hex()})",
        f"pkh({G.hex()})",
        f"wpkh({G.hex()})",
        f"sh(wpkh({G.hex()}))",
    ]
    assert targets[1].script_pubkey == s.p2pkh(h)
    uncompressed = d.parse_scan_objects([f"combo({G_UNCOMPRESSED.hex()})"], REGTEST)
    assert [t.script_pubkey for t in uncompressed] == [
        s.p2pk(G_UNCOMPRESSED),
        s.p2pkh(hash160(G_UNCOMPRESSED)),
    ]


def test_scan_addr_raw_rawtr_wif() -> None:
    addr = script_to_address(s.p2pkh(bytes(20)), REGTEST)
    assert addr is not None
    (target,) = d.parse_scan_objects([f"addr({addr})"], REGTEST)
    assert target.script_pubkey == s.p2pkh(bytes(20))
    assert target.desc == d.infer_descriptor(s.p2pkh(bytes(20)), REGTEST)
    (raw,) = d.parse_scan_objects(["raw(6a00)#ncfmkl43"], REGTEST)
    assert (raw.script_pubkey, raw.desc) == (bytes.fromhex("6a00"), "raw(6a00)#ncfmkl43")
    (tr,) = d.parse_scan_objects([f"rawtr({G[1:].hex()})"], REGTEST)
    assert tr.script_pubkey == s.p2tr(G[1:]) and tr.desc.startswith(f"rawtr({G[1:].hex()})#")
    wif = encode_wif((1).to_bytes(32, "big"), REGTEST)
    (from_wif,) = d.parse_scan_objects([f"wpkh({wif})"], REGTEST)
    assert from_wif.script_pubkey == s.p2wpkh(hash160(G))
    assert from_wif.desc.startswith(f"wpkh({G.hex()})#")
