"""SPV proof building (btcl2.bridge.spv), ABI coding (btcl2.bridge.abi) and artifact loading: pure, no EVM."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from eth_abi.abi import encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from btcl2.bitcoin.block import Block, BlockHeader, merkle_root
from btcl2.bitcoin.hashes import sha256d
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bridge.abi import decode_log, decode_revert, encode_call, signature
from btcl2.bridge.artifacts import ArtifactError, load_artifact
from btcl2.bridge.deploy import REGTEST_GENESIS
from btcl2.bridge.evm import Contract, create_address, events_of
from btcl2.bridge.spv import (
    BadSpvProof,
    NotInBlock,
    check_mint_proof,
    headers_bytes,
    mint_proof,
    root_from_proof,
)


def _prevout(i: int) -> OutPoint:
    """Transaction 0 is the coinbase (the null outpoint)."""
    return OutPoint(b"\x00" * 32, 0xFFFFFFFF) if i == 0 else OutPoint(bytes([i]) * 32, i)


def _block(n_txs: int) -> Block:
    txs = tuple(
        Tx(2, (TxIn(_prevout(i), witness=(b"\x01" * 3,)),), (TxOut(1000 + i, b"\x51"),), 0)
        for i in range(n_txs)
    )
    root = merkle_root([t.txid for t in txs])
    return Block(BlockHeader(0x20000000, b"\x11" * 32, root, 1_700_000_000, 0x207FFFFF, 7), txs)


@pytest.mark.parametrize("n_txs", [1, 2, 3, 5, 8, 11])
def test_mint_proof_leads_to_the_root(n_txs: int) -> None:
    block = _block(n_txs)
    for index, tx in enumerate(block.txs):
        proof = mint_proof(block, tx.txid, 0)
        assert proof.tx_index == index
        assert proof.block_hash == block.hash
        assert proof.raw_tx_no_witness == tx.encode(include_witness=False)
        assert proof.raw_tx_no_witness != tx.encode(include_witness=True)
        assert root_from_proof(tx.txid, proof.merkle_proof, index) == block.header.merkle_root
        assert proof.coinbase_tx == block.txs[0].encode(include_witness=False)
        assert len(proof.coinbase_proof) == len(proof.merkle_proof)
        assert root_from_proof(block.txs[0].txid, proof.coinbase_proof, 0) == block.header.merkle_root
        assert proof.args() == (
            proof.raw_tx_no_witness,
            list(proof.merkle_proof),
            block.hash,
            index,
            0,
            proof.coinbase_tx,
            list(proof.coinbase_proof),
        )
        if index:
            check_mint_proof(proof, block.header.merkle_root)
        else:
            with pytest.raises(BadSpvProof):
                check_mint_proof(proof, block.header.merkle_root)


def _coinbase_block(second_leaf: bytes) -> tuple[Block, Tx]:
    coinbase = Tx(
        1, (TxIn(OutPoint(b"\x00" * 32, 0xFFFFFFFF), script_sig=b"\x01\x07"),), (TxOut(0, b"\x51"),)
    )
    root = merkle_root([coinbase.txid, second_leaf])
    return Block(
        BlockHeader(0x20000000, b"\x11" * 32, root, 1_700_000_000, 0x207FFFFF, 7), (coinbase,)
    ), coinbase


def test_check_mint_proof_refuses_a_branch_through_a_64_byte_transaction() -> None:
    """The block is [coinbase, X] with X a 64-byte transaction left || txid(fake): the fake's branch, one
    level deeper than the coinbase's, reaches the root through X read as an inner node."""
    fake = _block(2).txs[1]
    left = b"\x22" * 32
    block, coinbase = _coinbase_block(sha256d(left + fake.txid))
    proof = replace(
        mint_proof(replace(block, txs=(coinbase, coinbase)), coinbase.txid, 0),
        raw_tx_no_witness=fake.encode(include_witness=False),
        merkle_proof=(left, coinbase.txid),
        tx_index=3,
    )
    assert root_from_proof(fake.txid, proof.merkle_proof, 3) == block.header.merkle_root
    with pytest.raises(BadSpvProof, match="depths differ"):
        check_mint_proof(proof, block.header.merkle_root)
    deeper = replace(proof, coinbase_proof=(b"\x00" * 32, *proof.coinbase_proof))
    with pytest.raises(BadSpvProof, match="coinbase's branch"):
        check_mint_proof(deeper, block.header.merkle_root)


def test_check_mint_proof_refuses_a_false_coinbase() -> None:
    block = _block(4)
    proof = mint_proof(block, block.txs[2].txid, 0)
    not_coinbase = replace(proof, coinbase_tx=proof.raw_tx_no_witness)
    with pytest.raises(BadSpvProof, match="not a coinbase"):
        check_mint_proof(not_coinbase, block.header.merkle_root)
    inner = replace(proof, coinbase_tx=b"\x00" * 64)
    with pytest.raises(BadSpvProof, match="64-byte"):
        check_mint_proof(inner, block.header.merkle_root)


def test_mint_proof_rejects_unknown_tx_and_output() -> None:
    block = _block(3)
    with pytest.raises(NotInBlock):
        mint_proof(block, b"\x00" * 32, 0)
    with pytest.raises(NotInBlock):
        mint_proof(block, block.txs[1].txid, 1)


def test_headers_bytes() -> None:
    a, b = _block(1), _block(2)
    data = headers_bytes([a, b.header])
    assert data == a.header.encode() + b.header.encode() and len(data) == 160


def test_regtest_genesis_checkpoint() -> None:
    assert (
        REGTEST_GENESIS.hash[::-1].hex() == "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
    )


def test_create_address() -> None:
    # anvil's first account deploying with nonce 0 (a widely published address)
    assert (
        create_address("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", 0)
        == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    )


ABI = [
    {
        "type": "function",
        "name": "f",
        "inputs": [{"name": "a", "type": "uint64"}, {"name": "b", "type": "bytes"}],
    },
    {
        "type": "error",
        "name": "Nope",
        "inputs": [{"name": "x", "type": "bytes32"}, {"name": "n", "type": "uint256"}],
    },
    {
        "type": "event",
        "name": "Ev",
        "anonymous": False,
        "inputs": [
            {"name": "id", "type": "uint256", "indexed": True},
            {"name": "who", "type": "address", "indexed": True},
            {"name": "amount", "type": "uint64", "indexed": False},
            {"name": "script", "type": "bytes", "indexed": False},
        ],
    },
]


def test_encode_call_and_decode_revert() -> None:
    assert encode_call(ABI, "f", [5, b"\x01"]) == keccak(text="f(uint64,bytes)")[:4] + encode(
        ["uint64", "bytes"], [5, b"\x01"]
    )
    data = keccak(text="Nope(bytes32,uint256)")[:4] + encode(["bytes32", "uint256"], [b"\x02" * 32, 9])
    reason = decode_revert(ABI, data)
    assert (reason.name, reason.args) == ("Nope", (b"\x02" * 32, 9))
    assert decode_revert(ABI, b"\xde\xad\xbe\xef").name == ""
    msg = keccak(text="Error(string)")[:4] + encode(["string"], ["boom"])
    assert decode_revert(ABI, msg).args == ("boom",)


def _log(address: str) -> dict[str, object]:
    who = "0x" + "00" * 12 + "ab" * 20
    return {
        "address": address,
        "topics": ["0x" + keccak(text=signature(ABI[2])).hex(), "0x" + encode(["uint256"], [7]).hex(), who],
        "data": "0x" + encode(["uint64", "bytes"], [123, b"\x00\x14" + b"\x01" * 20]).hex(),
        "blockNumber": "0x5",
        "transactionHash": "0x" + "cd" * 32,
        "logIndex": "0x0",
    }


def test_events_only_from_the_contract_address(tmp_path: Path) -> None:
    art = {"contractName": "X", "abi": ABI, "bytecode": "0x", "deployedBytecode": "0x"}
    (tmp_path / "X.json").write_text(json.dumps({**art, "solcVersion": "v", "sourceHash": "h"}))
    contract = Contract("0x" + "11" * 20, load_artifact("X", tmp_path))
    mine, other = _log("0x" + "11" * 20), _log("0x" + "22" * 20)
    events = events_of(contract, [other, mine, other])
    assert len(events) == 1
    ev = events[0]
    assert ev.name == "Ev" and ev.block_number == 5 and ev.tx_hash == b"\xcd" * 32
    assert ev.args == {
        "id": 7,
        "who": to_checksum_address("0x" + "ab" * 20),
        "amount": 123,
        "script": b"\x00\x14" + b"\x01" * 20,
    }
    assert decode_log(ABI, {**mine, "topics": ["0x" + "00" * 32]}) is None


def test_missing_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError):
        load_artifact("Nothing", tmp_path)
    (tmp_path / "Bad.json").write_text("{}")
    with pytest.raises(ArtifactError):
        load_artifact("Bad", tmp_path)
