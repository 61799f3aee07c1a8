"""Block assembly for the embedded node: coinbase with BIP34 height, subsidy plus fees, witness commitment."""

import time
from dataclasses import replace

from btcl2.bitcoin.block import Block, BlockHeader, merkle_root, witness_commitment_script
from btcl2.bitcoin.script import OP_0, push_int
from btcl2.bitcoin.tx import COIN, NULL_TXID, OutPoint, Tx, TxIn, TxOut
from btcl2.regtest.coins import bits_to_target

REGTEST_BITS = 0x207FFFFF
REGTEST_HALVING_INTERVAL = 150
BLOCK_VERSION = 0x20000000
WITNESS_RESERVED_VALUE = b"\x00" * 32


def block_subsidy(height: int, halving_interval: int = REGTEST_HALVING_INTERVAL) -> int:
    """New coins a block at this height may create (Core's GetBlockSubsidy)."""
    halvings = height // halving_interval
    if halvings >= 64:
        return 0
    return (50 * COIN) >> halvings


def coinbase_tx(height: int, script_pubkey: bytes, value: int) -> Tx:
    """The coinbase Core's miner builds: height then OP_0 in scriptSig, locktime height-1 (BIP54)."""
    script_sig = push_int(height) + bytes([OP_0])
    txin = TxIn(OutPoint(NULL_TXID, 0xFFFFFFFF), script_sig, 0xFFFFFFFE)
    return Tx(2, (txin,), (TxOut(value, script_pubkey),), max(height - 1, 0))


def assemble(
    prev_hash: bytes, height: int, mtp: int, script_pubkey: bytes, txs: list[Tx], fees: int
) -> Block:
    """A block template with every commitment filled in, not yet solved."""
    coinbase = coinbase_tx(height, script_pubkey, block_subsidy(height) + fees)
    all_txs = [coinbase, *txs]
    commitment = TxOut(0, witness_commitment_script(all_txs, WITNESS_RESERVED_VALUE))
    coinbase = replace(
        coinbase,
        vin=(replace(coinbase.vin[0], witness=(WITNESS_RESERVED_VALUE,)),),
        vout=(*coinbase.vout, commitment),
    )
    all_txs[0] = coinbase
    header = BlockHeader(
        BLOCK_VERSION,
        prev_hash,
        merkle_root([t.txid for t in all_txs]),
        max(mtp + 1, int(time.time())),
        REGTEST_BITS,
        0,
    )
    return Block(header, tuple(all_txs))


def solve(block: Block) -> Block:
    """Grind the nonce until the header meets its target (about two tries at regtest difficulty)."""
    target = bits_to_target(block.header.bits)
    header = block.header
    while int.from_bytes(header.hash, "little") > target:
        header = replace(header, nonce=(header.nonce + 1) & 0xFFFFFFFF)
    return replace(block, header=header)
