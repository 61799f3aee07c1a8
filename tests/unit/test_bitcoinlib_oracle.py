"""btcl2/bitcoin checked against an independent implementation, python-bitcoinlib (import name `bitcoin`), on
random inputs: transaction and block serialization and hashes, legacy and segwit v0 (BIP143) signature hashes,
script push encoding, Base58Check and Bech32 v0 addresses on three networks, and WIF keys.

python-bitcoinlib has no taproot and no Bech32m, so those stay with btcl2's own vectors. Its chain parameters
are one global (`bitcoin.SelectParams`): every test that needs them selects a network explicitly through
`chain()` and puts the previous one back.
"""

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import bitcoin
import bitcoin.base58
import bitcoin.core
import bitcoin.core.script as bs
import bitcoin.wallet as bw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btcl2.bitcoin import address as addr
from btcl2.bitcoin import script as sc
from btcl2.bitcoin.block import Block, BlockHeader, merkle_root, witness_merkle_root
from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import SECP256K1_ORDER, PrivateKey
from btcl2.bitcoin.sighash import legacy_sighash, segwit_v0_sighash
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bitcoin.verify import verify_input

EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NETWORKS = {"mainnet": addr.MAINNET, "testnet": addr.TESTNET, "regtest": addr.REGTEST}
"""python-bitcoinlib's chain name -> btcl2's network."""
_PARAMS_NAMES = {
    bitcoin.MainParams: "mainnet",
    bitcoin.TestNetParams: "testnet",
    bitcoin.RegTestParams: "regtest",
    bitcoin.SigNetParams: "signet",
}

HASH_TYPES = [
    bs.SIGHASH_ALL,
    bs.SIGHASH_NONE,
    bs.SIGHASH_SINGLE,
    bs.SIGHASH_ALL | bs.SIGHASH_ANYONECANPAY,
    bs.SIGHASH_NONE | bs.SIGHASH_ANYONECANPAY,
    bs.SIGHASH_SINGLE | bs.SIGHASH_ANYONECANPAY,
]


@contextmanager
def chain(name: str) -> Iterator[addr.Network]:
    """python-bitcoinlib switched to chain `name` for the block; the previous chain restored after."""
    before = _PARAMS_NAMES[type(bitcoin.params)]
    bitcoin.SelectParams(name)
    try:
        yield NETWORKS[name]
    finally:
        bitcoin.SelectParams(before)


# --- strategies ------------------------------------------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)
i32 = st.integers(-(2**31), 2**31 - 1)
hash32 = st.binary(min_size=32, max_size=32)
h160 = st.binary(min_size=20, max_size=20)
# Sizes around every push-opcode boundary (75/76, 255/256), plus a PUSHDATA2 size.
push_payload = st.one_of(
    st.binary(max_size=80), st.binary(min_size=250, max_size=260), st.binary(min_size=300, max_size=300)
)
opcode = st.sampled_from([0x00, 0x4F, 0x51, 0x60, 0x61, 0x63, 0x68, 0x69, 0x76, 0x87, 0x88, 0xA9, 0xAB, 0xAC])


@st.composite
def scripts(draw: st.DrawFn) -> bytes:
    """A well-formed script: opcodes (OP_CODESEPARATOR among them) and data pushes."""
    parts = draw(st.lists(st.one_of(opcode.map(lambda o: bytes([o])), push_payload.map(sc.push_data)), max_size=8))
    return b"".join(parts)


@st.composite
def txs(draw: st.DrawFn, witness: bool | None = None) -> Tx:
    n_in = draw(st.integers(1, 4))
    vin = []
    for _ in range(n_in):
        stack = draw(st.lists(st.binary(max_size=80), max_size=3))
        script_sig = draw(st.one_of(st.just(b""), scripts()))
        vin.append(TxIn(OutPoint(draw(hash32), draw(u32)), script_sig, draw(u32), tuple(stack)))
    if witness is False:
        vin = [TxIn(i.prevout, i.script_sig, i.sequence) for i in vin]
    elif witness is True and not any(i.witness for i in vin):
        first = vin[0]
        vin[0] = TxIn(first.prevout, first.script_sig, first.sequence, (draw(st.binary(max_size=72)),))
    values = st.integers(0, 21_000_000 * 100_000_000)
    vout = draw(st.lists(st.builds(TxOut, values, scripts()), max_size=4))
    return Tx(draw(i32), tuple(vin), tuple(vout), draw(u32))


def to_bitcoinlib(tx: Tx) -> bitcoin.core.CTransaction:
    """The same transaction built field by field in python-bitcoinlib (never through bytes)."""
    vin = [
        bitcoin.core.CTxIn(
            bitcoin.core.COutPoint(i.prevout.txid, i.prevout.vout), bs.CScript(i.script_sig), i.sequence
        )
        for i in tx.vin
    ]
    vout = [bitcoin.core.CTxOut(o.value, bs.CScript(o.script_pubkey)) for o in tx.vout]
    wit = bitcoin.core.CTxWitness(
        [bitcoin.core.CTxInWitness(bs.CScriptWitness(list(i.witness))) for i in tx.vin]
    )
    return bitcoin.core.CTransaction(vin, vout, tx.locktime, tx.version, wit)


# --- transactions and blocks -----------------------------------------------------------------------------


@EXAMPLES
@given(txs())
def test_transaction_serialization_and_ids(tx: Tx) -> None:
    theirs = to_bitcoinlib(tx)
    assert tx.encode() == theirs.serialize()
    assert tx.encode(include_witness=False) == theirs.serialize(params={"include_witness": False})
    assert tx.has_witness == theirs.has_witness()
    assert tx.txid == theirs.GetTxid()
    assert tx.wtxid == theirs.GetHash()
    assert tx.weight == (theirs.calc_weight() if tx.vout else tx.weight)
    # Both ways through bytes: theirs parses ours field for field, ours parses theirs.
    parsed = bitcoin.core.CTransaction.deserialize(tx.encode())
    assert parsed.serialize() == tx.encode() and parsed.GetTxid() == tx.txid
    assert [txin.prevout.n for txin in parsed.vin] == [i.prevout.vout for i in tx.vin]
    assert [o.nValue for o in parsed.vout] == [o.value for o in tx.vout]
    assert Tx.decode(theirs.serialize()) == tx


@EXAMPLES
@given(txs(witness=False))
def test_non_segwit_transaction_txid_is_wtxid(tx: Tx) -> None:
    theirs = to_bitcoinlib(tx)
    assert not tx.has_witness and tx.txid == tx.wtxid == theirs.GetTxid() == theirs.GetHash()
    assert tx.encode() == theirs.serialize() and Tx.decode(theirs.serialize()) == tx


@EXAMPLES
@given(i32, hash32, hash32, u32, u32, u32)
def test_block_header_serialization_and_hash(
    version: int, prev: bytes, root: bytes, time: int, bits: int, nonce: int
) -> None:
    ours = BlockHeader(version, prev, root, time, bits, nonce)
    theirs = bitcoin.core.CBlockHeader(version, prev, root, time, bits, nonce)
    assert ours.encode() == theirs.serialize() and len(ours.encode()) == 80
    assert ours.hash == theirs.GetHash()
    assert BlockHeader.decode(theirs.serialize()) == ours
    back = bitcoin.core.CBlockHeader.deserialize(ours.encode())
    assert (back.nVersion, back.nTime, back.nBits, back.nNonce) == (version, time, bits, nonce)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(txs(), min_size=1, max_size=5), txs(witness=True), i32, hash32, u32, u32, u32)
def test_block_serialization_and_merkle_roots(
    first: list[Tx], last: Tx, version: int, prev: bytes, time: int, bits: int, nonce: int
) -> None:
    body = [*first, last]  # python-bitcoinlib computes a witness root only for a block with witness data
    root = merkle_root([t.txid for t in body])
    block = Block(BlockHeader(version, prev, root, time, bits, nonce), tuple(body))
    theirs = bitcoin.core.CBlock(version, prev, root, time, bits, nonce, [to_bitcoinlib(t) for t in body])
    assert block.encode() == theirs.serialize() and block.hash == theirs.GetHash()
    assert root == theirs.calc_merkle_root()
    # BIP141: the coinbase's wtxid counts as zero; python-bitcoinlib does the same.
    assert witness_merkle_root(body) == theirs.calc_witness_merkle_root()
    assert Block.decode(theirs.serialize()) == block


# --- signature hashes ------------------------------------------------------------------------------------


@st.composite
def spends(draw: st.DrawFn) -> tuple[Tx, int, int, int]:
    """A transaction, one of its inputs, that input's amount, and a hash type (the six defined ones mostly,
    sometimes any byte: an undefined type is hashed too, with its base type taken from the low 5 bits).

    The lock time stays below 2**31: python-bitcoinlib's BIP143 code packs nLockTime as a signed int32 and
    raises above that, where Core (uint32) and btcl2 hash it as unsigned (test_bip143_high_locktime)."""
    tx = replace(draw(txs()), locktime=draw(st.integers(0, 2**31 - 1)))
    index = draw(st.integers(0, len(tx.vin) - 1))
    amount = draw(st.integers(0, 21_000_000 * 100_000_000))
    hash_type = draw(st.one_of(st.sampled_from(HASH_TYPES), st.integers(0, 0xFF)))
    return tx, index, amount, hash_type


@EXAMPLES
@given(spends(), h160)
def test_bip143_sighash_p2wpkh(spend: tuple[Tx, int, int, int], keyhash: bytes) -> None:
    tx, index, amount, hash_type = spend
    script_code = sc.p2pkh(keyhash)  # BIP143: P2WPKH signs the P2PKH script of its key hash
    theirs = bs.SignatureHash(
        bs.CScript(script_code), to_bitcoinlib(tx), index, hash_type, amount, bs.SIGVERSION_WITNESS_V0
    )
    assert segwit_v0_sighash(tx, index, script_code, amount, hash_type) == theirs


@EXAMPLES
@given(spends(), scripts())
def test_bip143_sighash_p2wsh(spend: tuple[Tx, int, int, int], witness_script: bytes) -> None:
    tx, index, amount, hash_type = spend
    theirs = bs.SignatureHash(
        bs.CScript(witness_script), to_bitcoinlib(tx), index, hash_type, amount, bs.SIGVERSION_WITNESS_V0
    )
    assert segwit_v0_sighash(tx, index, witness_script, amount, hash_type) == theirs


@pytest.mark.parametrize("hash_type", HASH_TYPES)
def test_bip143_sighash_each_defined_type(hash_type: int) -> None:
    """Every defined type, on a shape where SINGLE has and lacks its output (inputs 0 and 2 of 3, 1 output)."""
    vin = tuple(TxIn(OutPoint(bytes([i]) * 32, i), b"", 0xFFFFFFF0 + i, (b"\x01",)) for i in range(3))
    tx = Tx(2, vin, (TxOut(5_000, sc.p2wpkh(b"\x07" * 20)),), 99)
    for index in (0, 2):
        for script_code in (sc.p2pkh(b"\x09" * 20), sc.multisig(1, [b"\x02" + b"\x11" * 32])):
            theirs = bs.SignatureHash(
                bs.CScript(script_code), to_bitcoinlib(tx), index, hash_type, 70_000, bs.SIGVERSION_WITNESS_V0
            )
            assert segwit_v0_sighash(tx, index, script_code, 70_000, hash_type) == theirs


@EXAMPLES
@given(spends(), scripts())
def test_legacy_sighash(spend: tuple[Tx, int, int, int], script_code: bytes) -> None:
    """Well-formed script codes only: python-bitcoinlib raises on a truncated push, where Core cuts the script
    code there (that case is covered by Core's sighash.json in test_sighash.py)."""
    tx, index, _, hash_type = spend
    theirs, _ = bs.RawSignatureHash(bs.CScript(script_code), to_bitcoinlib(tx), index, hash_type)
    assert legacy_sighash(tx, index, script_code, hash_type) == theirs


@pytest.mark.parametrize("locktime", [2**31, 0xFFFFFFFE])
def test_bip143_high_locktime_against_core(locktime: int) -> None:
    """Where the two disagree: python-bitcoinlib cannot hash a lock time >= 2**31 (struct.error, it packs a
    signed int32), Core serializes nLockTime as uint32. btcl2's digest for such a transaction, signed,
    must satisfy libbitcoinkernel (Core's own interpreter)."""
    key = PrivateKey(b"\x05" * 32)
    spk = sc.p2wpkh(hash160(key.pubkey()))
    unsigned = Tx(2, (TxIn(OutPoint(b"\x03" * 32, 1), b"", 0xFFFFFFFE),), (TxOut(9_000, spk),), locktime)
    with pytest.raises(struct.error):
        bs.SignatureHash(bs.CScript(sc.p2pkh(hash160(key.pubkey()))), to_bitcoinlib(unsigned), 0,
                         bs.SIGHASH_ALL, 10_000, bs.SIGVERSION_WITNESS_V0)  # fmt: skip
    digest = segwit_v0_sighash(unsigned, 0, sc.p2pkh(hash160(key.pubkey())), 10_000, bs.SIGHASH_ALL)
    witness = (key.sign_ecdsa(digest) + bytes([bs.SIGHASH_ALL]), key.pubkey())
    signed = replace(unsigned, vin=(replace(unsigned.vin[0], witness=witness),))
    assert verify_input(signed, 0, [TxOut(10_000, spk)])
    flipped = replace(signed, locktime=locktime ^ 1)  # the lock time is committed to
    assert not verify_input(flipped, 0, [TxOut(10_000, spk)])


# --- scripts ---------------------------------------------------------------------------------------------


@EXAMPLES
@given(st.lists(st.one_of(push_payload, st.integers(-(2**40), 2**40)), max_size=6))
def test_push_encoding(items: list[bytes | int]) -> None:
    ours = b"".join(sc.push_data(i) if isinstance(i, bytes) else sc.push_int(i) for i in items)
    assert ours == bytes(bs.CScript(items))
    # Reading the script back: the same opcodes and pushes, in order.
    assert [(op, data) for op, data in sc.iter_ops(ours)] == [(op, data) for op, data, _ in bs.CScript(ours).raw_iter()]


# --- addresses and keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NETWORKS))
@EXAMPLES
@given(h160, hash32)
def test_base58_and_bech32_v0_addresses(name: str, keyhash: bytes, script_hash: bytes) -> None:
    with chain(name) as net:
        cases = [
            (sc.p2pkh(keyhash), bw.P2PKHBitcoinAddress.from_bytes(keyhash)),
            (sc.p2sh(keyhash), bw.P2SHBitcoinAddress.from_bytes(keyhash)),
            (sc.p2wpkh(keyhash), bw.P2WPKHBitcoinAddress.from_bytes(0, keyhash)),
            (sc.p2wsh(script_hash), bw.P2WSHBitcoinAddress.from_bytes(0, script_hash)),
        ]
        for spk, theirs in cases:
            text = addr.script_to_address(spk, net)
            assert text == str(theirs)
            assert text == str(bw.CBitcoinAddress.from_scriptPubKey(bs.CScript(spk)))
            assert addr.address_to_script(str(theirs), net) == spk
            assert bw.CBitcoinAddress(text).to_scriptPubKey() == spk
        # A Base58 payload of any version byte, and its checksum, agree too.
        payload = bytes([keyhash[0]]) + keyhash
        assert addr.base58check_encode(payload) == str(bitcoin.base58.CBase58Data.from_bytes(payload[1:], payload[0]))
        assert addr.base58check_decode(addr.base58check_encode(payload), 21) == payload


def test_chain_restores_python_bitcoinlibs_global_params() -> None:
    before = type(bitcoin.params)
    with chain("regtest"):
        assert bitcoin.params.BECH32_HRP == "bcrt"
        with chain("testnet"):
            assert bitcoin.params.BECH32_HRP == "tb"
        assert bitcoin.params.BECH32_HRP == "bcrt"
    assert type(bitcoin.params) is before


@EXAMPLES
@given(st.binary(max_size=40))
def test_base58(data: bytes) -> None:
    assert addr.base58_encode(data) == bitcoin.base58.encode(data)
    assert addr.base58_decode(bitcoin.base58.encode(data), 100) == data == bitcoin.base58.decode(addr.base58_encode(data))


@pytest.mark.parametrize("name", sorted(NETWORKS))
@EXAMPLES
@given(st.integers(1, SECP256K1_ORDER - 1), st.booleans())
def test_wif(name: str, n: int, compressed: bool) -> None:
    secret = n.to_bytes(32, "big")
    with chain(name) as net:
        theirs = bw.CBitcoinSecret.from_secret_bytes(secret, compressed)
        assert addr.encode_wif(secret, net, compressed) == str(theirs)
        assert addr.decode_wif(str(theirs), net) == (secret, compressed)
        back = bw.CBitcoinSecret(addr.encode_wif(secret, net, compressed))
        assert (bytes(back)[:32], back.is_compressed) == (secret, compressed)
        assert PrivateKey.from_wif(str(theirs))[:2] == (PrivateKey(secret), compressed)


@pytest.mark.parametrize("secret", [0, SECP256K1_ORDER, 2**256 - 1])
def test_wif_out_of_range_secret_is_refused_as_core_does(secret: int) -> None:
    """Where the two disagree: python-bitcoinlib encodes and decodes any 32 bytes, Core's DecodeSecret refuses
    a secret that is not in [1, n-1] (CKey::IsValid), and so does btcl2."""
    raw = secret.to_bytes(32, "big")
    with chain("regtest") as net:
        text = str(bw.CBitcoinSecret.from_secret_bytes(raw, True))
        assert bytes(bw.CBitcoinSecret(text))[:32] == raw
        assert addr.decode_wif(text, net) is None
