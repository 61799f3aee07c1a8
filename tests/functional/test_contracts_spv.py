"""Attacks on the SPV checks of the Bridge and the header rules of the light client, against a real anvil.

The light client trusts proof of work only, so a block's header is all an attacker needs to control: the
blocks here are built and mined by the test (regtest's target takes a couple of tries) on top of the regtest
node's chain, as a miner would, and their transactions are whatever the attack needs.
"""

from dataclasses import replace
from typing import Any

import pytest
import test_contracts
from eth_account.signers.local import LocalAccount
from framework.node import RegtestNode
from framework.util import REGTEST_BITS, CoinPool, mine
from test_contracts import (
    FED,
    MINER,
    OWNER,
    STRANGER,
    USER,
    K,
    _deploy_light_client,
    assert_reverts,
    fed_vout,
    make_deposit,
    sync_headers,
    wbtc_balance,
)

from btcl2.bitcoin import script
from btcl2.bitcoin.block import BlockHeader, merkle_root
from btcl2.bitcoin.hashes import sha256d
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bridge.deploy import Checkpoint, Deployment
from btcl2.bridge.evm import Contract, EvmClient
from btcl2.bridge.spv import MintProof, mint_proof, root_from_proof
from btcl2.core.deposits import DepositKind, deposit_tag_script

pytestmark = pytest.mark.functional

# The module's fixtures, shared with test_contracts.
anvil, evm, stack = test_contracts.anvil, test_contracts.evm, test_contracts.stack


def _mine_header(h: BlockHeader) -> BlockHeader:
    target = (h.bits & 0xFFFFFF) << (8 * ((h.bits >> 24) - 3))
    while int.from_bytes(h.hash, "little") > target:
        h = replace(h, nonce=h.nonce + 1)
    return h


def _tip(node: RegtestNode) -> BlockHeader:
    best = node.rpc.call("getbestblockhash")
    return BlockHeader.decode(bytes.fromhex(node.rpc.call("getblockheader", best, False)))


def _coinbase(height: int) -> Tx:
    sig = script.push_int(height) + script.push_data(b"atk!")
    return Tx(
        2, (TxIn(OutPoint(b"\x00" * 32, 0xFFFFFFFF), script_sig=sig),), (TxOut(0, MINER.p2wpkh_script),)
    )


def _bury(
    evm: EvmClient, lc: Contract, parent: BlockHeader, root: bytes, sender: LocalAccount
) -> BlockHeader:
    """Mine a header with Merkle root `root` on `parent` and K - 1 children, and give them to the light client."""
    headers = [_mine_header(BlockHeader(0x20000000, parent.hash, root, parent.time + 1, REGTEST_BITS, 0))]
    for i in range(K - 1):
        prev = headers[-1]
        headers.append(
            _mine_header(BlockHeader(0x20000000, prev.hash, sha256d(bytes([i])), prev.time + 1, prev.bits, 0))
        )
    evm.transact(lc, "submitHeaders", b"".join(h.encode() for h in headers), sender=sender)
    return headers[0]


def test_branch_through_a_64_byte_transaction(evm: EvmClient, node: RegtestNode, stack: Deployment) -> None:
    """A block holds a 64-byte transaction X whose second half is the txid of a deposit that was never mined:
    the deposit's branch, one level longer than X's, leads to the block's root through X read as an inner node.
    (A real X must be a valid transaction; its 32 last bytes are the fake txid, which an attacker grinds.)"""
    fake = Tx(
        2,
        (TxIn(OutPoint(b"\x07" * 32, 0)),),
        (
            TxOut(5 * 10**8, FED),
            TxOut(0, deposit_tag_script(DepositKind.EVM, bytes.fromhex(USER.address[2:]))),
        ),
    )
    left = b"\x11" * 32
    x = left + fake.txid
    height = node.rpc.call("getblockcount") + 1
    coinbase = _coinbase(height)
    root = merkle_root([coinbase.txid, sha256d(x)])
    header = _bury(evm, stack.light_client, _tip(node), root, USER)
    assert evm.call(stack.light_client, "confirmations", header.hash) == K
    attack = MintProof(
        raw_tx_no_witness=fake.encode(include_witness=False),
        merkle_proof=(left, coinbase.txid),
        block_hash=header.hash,
        output_index=0,
        tx_index=0b11,  # right child of X, which is the right child of the root
        coinbase_tx=coinbase.encode(include_witness=False),
        coinbase_proof=(sha256d(x),),  # the honest proof of the coinbase: the tree is one level deep
    )
    # The fake is not a leaf (those are the coinbase and X), yet its branch reaches the root through X.
    assert root_from_proof(fake.txid, attack.merkle_proof, attack.tx_index) == root
    e = assert_reverts(
        "MerkleDepthMismatch", evm.transact, stack.bridge, "mintWithProof", *attack.args(), sender=USER
    )
    assert e.reason.args == (2, 1)
    assert wbtc_balance(evm, stack, USER.address) == 0


def test_coinbase_must_be_proven_at_the_deposit_depth(
    evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment
) -> None:
    tx, block = make_deposit(
        node, pool, 50_000, deposit_tag_script(DepositKind.EVM, bytes.fromhex(USER.address[2:]))
    )
    mine(node, K - 1, MINER.p2wpkh_address)
    sync_headers(evm, stack.light_client, node, USER)
    proof = mint_proof(block, tx.txid, fed_vout(tx))
    mint = evm.transact
    not_coinbase = replace(proof, coinbase_tx=proof.raw_tx_no_witness)
    assert_reverts("NotACoinbase", mint, stack.bridge, "mintWithProof", *not_coinbase.args(), sender=USER)
    short = replace(proof, coinbase_proof=proof.coinbase_proof[:-1])
    assert_reverts("MerkleDepthMismatch", mint, stack.bridge, "mintWithProof", *short.args(), sender=USER)
    wrong = replace(proof, coinbase_proof=(b"\x00" * 32, *proof.coinbase_proof[1:]))
    assert_reverts("BadCoinbaseProof", mint, stack.bridge, "mintWithProof", *wrong.args(), sender=USER)
    inner = replace(proof, coinbase_tx=proof.coinbase_proof[0] + proof.merkle_proof[0])
    assert_reverts(
        "SixtyFourByteTransaction", mint, stack.bridge, "mintWithProof", *inner.args(), sender=USER
    )
    mint(stack.bridge, "mintWithProof", *proof.args(), sender=USER)
    assert wbtc_balance(evm, stack, USER.address) == 50_000


def test_header_time_must_pass_median_time_past(evm: EvmClient, node: RegtestNode, stack: Deployment) -> None:
    lc = stack.light_client
    mine(node, 11, MINER.p2wpkh_address)
    sync_headers(evm, lc, node, USER)
    tip_hash = node.rpc.call("getbestblockhash")
    info = node.rpc.call("getblockheader", tip_hash)
    mtp = info["mediantime"]
    tip = _tip(node)
    at_mtp = _mine_header(BlockHeader(0x20000000, tip.hash, b"\x42" * 32, mtp, REGTEST_BITS, 0))
    e = assert_reverts("TimeTooOld", evm.transact, lc, "submitHeaders", at_mtp.encode(), sender=USER)
    assert e.reason.args == (at_mtp.hash, mtp, mtp)
    assert evm.call(lc, "medianTimePast", tip.hash) == mtp
    # One second later is fine, even when that is before the parent's own time (Core allows it too).
    after = _mine_header(replace(at_mtp, time=mtp + 1, nonce=0))
    evm.transact(lc, "submitHeaders", after.encode(), sender=USER)
    assert evm.call(lc, "bestHash") == after.hash


def _now(evm: EvmClient) -> int:
    block: dict[str, Any] = evm.rpc("eth_getBlockByNumber", "latest", False)
    return int(block["timestamp"], 16)


def test_mainnet_mode_rejects_far_future_headers(evm: EvmClient) -> None:
    """With the retarget rules (mainnet), a header more than 2 hours ahead of the EVM's clock is refused."""
    easy = 0x207FFFFF
    genesis = _mine_header(BlockHeader(1, b"\x00" * 32, b"\x01" * 32, _now(evm) - 3600, easy, 0))
    lc = _deploy_light_client(evm, Checkpoint(genesis.encode(), 0, 2), True, easy)
    far = _mine_header(BlockHeader(0x20000000, genesis.hash, b"\x02" * 32, _now(evm) + 4 * 3600, easy, 0))
    assert_reverts("TimeTooNew", evm.transact, lc, "submitHeaders", far.encode(), sender=STRANGER)
    near = _mine_header(replace(far, time=genesis.time + 600, nonce=0))
    evm.transact(lc, "submitHeaders", near.encode(), sender=OWNER)
    assert evm.call(lc, "bestHash") == near.hash
