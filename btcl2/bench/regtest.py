"""Figures of the embedded regtest node, each against a bound measured in the same run.

- blocks/s mined and validated by the node (assembly, proof of work, kernel validation, coin index), with only
  a coinbase and with 100 transactions per block, against the kernel alone validating the same blocks in a
  fresh chainstate;
- mempool acceptances/s (every policy rule plus script checks) against the kernel's raw script verification
  of the same transactions.
"""

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.sign import PrevoutInfo, sign_transaction
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bitcoin.verify import verify_input
from btcl2.regtest.kernel import Kernel
from btcl2.regtest.node import Node


@dataclass(frozen=True)
class Figure:
    """One measured figure and the bound it is reported against."""

    name: str
    value: float
    unit: str
    bound_name: str
    bound: float

    @property
    def ratio(self) -> float:
        return self.value / self.bound if self.bound else 0.0


def _fan_out(node: Node, key: PrivateKey, spk: bytes, outputs: int) -> list[tuple[OutPoint, TxOut]]:
    """Split one mature coinbase into many small outputs, confirmed, ready to be spent one by one."""
    cb = node.chain.block(node.chain.hash_at(1)).txs[0]
    value = (cb.vout[0].value - 100_000) // outputs
    tx = Tx(2, (TxIn(OutPoint(cb.txid, 0)),), tuple(TxOut(value, spk) for _ in range(outputs)))
    signed = sign_transaction(tx, [key], {OutPoint(cb.txid, 0): PrevoutInfo(spk, cb.vout[0].value)}).tx
    node.accept_tx(signed)
    node.mine(spk)
    return [(OutPoint(signed.txid, n), out) for n, out in enumerate(signed.vout)]


def _spends(key: PrivateKey, spk: bytes, coins: list[tuple[OutPoint, TxOut]]) -> list[Tx]:
    txs = []
    for op, out in coins:
        tx = Tx(2, (TxIn(op),), (TxOut(out.value - 1_000, spk),))
        txs.append(sign_transaction(tx, [key], {op: PrevoutInfo(spk, out.value)}).tx)
    return txs


def _time(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def measure(workdir: Path, txs_per_run: int = 300, runs: int = 3) -> list[Figure]:
    """Run every regtest figure `runs` times and report medians."""
    key = PrivateKey.generate()
    spk = p2wpkh(hash160(key.pubkey()))
    node = Node(workdir / "node")
    try:
        for _ in range(101):
            node.mine(spk)
        coins = _fan_out(node, key, spk, txs_per_run * runs + 100 * 5)
        accept, raw_verify = [], []
        for r in range(runs):
            batch = _spends(key, spk, coins[r * txs_per_run : (r + 1) * txs_per_run])
            accept.append(len(batch) / _time(lambda b=batch: [node.accept_tx(t) for t in b]))
            prev = {t.txid: [coins[r * txs_per_run + i][1]] for i, t in enumerate(batch)}
            raw_verify.append(
                len(batch) / _time(lambda b=batch, p=prev: [verify_input(t, 0, p[t.txid]) for t in b])
            )
            node.mine(spk)
        start_height = node.chain.height
        empty_rate = statistics.median(
            20 / _time(lambda: [node.mine(spk) for _ in range(20)]) for _ in range(runs)
        )
        full_blocks = []
        rest = coins[txs_per_run * runs :]
        for b in range(5):
            for t in _spends(key, spk, rest[b * 100 : (b + 1) * 100]):
                node.accept_tx(t)
            t0 = time.perf_counter()
            node.mine(spk)
            full_blocks.append(1 / (time.perf_counter() - t0))
        raws = [node.chain.raw_block(node.chain.hash_at(h)) for h in range(1, node.chain.height + 1)]
    finally:
        node.close()
    kernel_rate_empty, kernel_rate_full = _kernel_only(workdir / "kernel", raws, start_height)
    return [
        Figure(
            "regtest blocks/s (coinbase only)",
            empty_rate,
            "blocks/s",
            "kernel-only validation",
            kernel_rate_empty,
        ),
        Figure(
            "regtest blocks/s (100 tx/block)",
            statistics.median(full_blocks),
            "blocks/s",
            "kernel-only validation",
            kernel_rate_full,
        ),
        Figure(
            "mempool acceptances/s",
            statistics.median(accept),
            "tx/s",
            "kernel script verification",
            statistics.median(raw_verify),
        ),
    ]


def _kernel_only(path: Path, raws: list[bytes | None], empty_from: int) -> tuple[float, float]:
    """Blocks/s of libbitcoinkernel alone re-validating the same blocks in a fresh chainstate."""
    kernel = Kernel(path)
    from btcl2.bitcoin.block import Block

    rates_empty, rates_full = [], []
    try:
        for i, raw in enumerate(raws):
            assert raw is not None
            block = Block.decode(raw)
            t0 = time.perf_counter()
            kernel.process_block(raw, block.hash)
            dt = time.perf_counter() - t0
            if len(block.txs) > 50:
                rates_full.append(1 / dt)
            elif i + 1 > empty_from:
                rates_empty.append(1 / dt)
    finally:
        kernel.close()
    return statistics.median(rates_empty), statistics.median(rates_full)


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="btcl2-bench-") as d:
        return measure(Path(d))
