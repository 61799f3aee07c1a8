"""Sequencer throughput: transfers per second admitted and sealed, against raw signature recovery.

In process, no HTTP: each transfer is decoded, its sender recovered and checked into the mempool, then
executed in a batch, the state root computed and the batch committed to LevelDB in one synced write.
The bound is coincurve's public-key recovery alone over the same signatures and digests.
"""

import statistics
import tempfile
import time
from pathlib import Path

import coincurve

from btcl2.bench.regtest import Figure
from btcl2.bitcoin.tx import OutPoint
from btcl2.core import eip712
from btcl2.core.params import Params
from btcl2.core.types import Address20, Hash32, Sats, SignedTx, Transfer
from btcl2.sequencer.service import Sequencer
from btcl2.sequencer.store import DepositRecord, DepositStatus, SequencerStore
from btcl2.storage.db import Database

_ORIGIN = (1, Hash32(bytes(32)))
FEE = 1_000
"""Each transfer's fee: above the minimum L2 fee at the default fee-rate floor."""


def _fund(seq: Sequencer, keys: list[bytes], amount: int) -> None:
    """Credit every key's address through confirmed deposits and one sealed batch."""
    records = [
        DepositRecord(
            OutPoint(i.to_bytes(32, "big"), 0),
            DepositStatus.CONFIRMED,
            1,
            eip712.address_from_private_key(k),
            Sats(amount),
            1,
            Hash32(bytes(32)),
            i,
            None,
            None,
        )
        for i, k in enumerate(keys)
    ]
    seq.store.apply_deposit_changes(1, records, [], [])
    seq.seal_once(0, _ORIGIN)


def _transfers(keys: list[bytes], per_key: int, first_nonce: int, chain_id: int) -> list[SignedTx]:
    out = []
    for n in range(first_nonce, first_nonce + per_key):
        for i, k in enumerate(keys):
            to = Address20(bytes([i % 256]) * 20)
            out.append(eip712.sign(Transfer(to, Sats(1_000), Sats(FEE), n), k, chain_id))
    return out


def _raw_recovery_rate(txs: list[SignedTx], chain_id: int) -> float:
    inputs = [
        (t.signature[:64] + bytes([t.signature[64] - 27]), eip712.signing_digest(t.tx, chain_id)) for t in txs
    ]
    start = time.perf_counter()
    for sig, digest in inputs:
        coincurve.PublicKey.from_signature_and_message(sig, digest, hasher=None)
    return len(inputs) / (time.perf_counter() - start)


def measure(workdir: Path, senders: int = 200, per_sender: int = 5, runs: int = 3) -> list[Figure]:
    """Median over `runs` of (transfers admitted + sealed)/s, batches of senders * per_sender transfers."""
    params = Params()
    keys = [(i + 1).to_bytes(32, "big") for i in range(senders)]
    db = Database(workdir / "sequencer")
    try:
        seq = Sequencer(SequencerStore(db), params, None, batch_max_txs=senders * per_sender)
        _fund(seq, keys, 10**8)
        rates, raw = [], []
        for r in range(runs):
            txs = _transfers(keys, per_sender, r * per_sender, params.l2_chain_id)
            encoded = [t.encode() for t in txs]
            start = time.perf_counter()
            for data in encoded:
                seq.submit(data)
            batch = seq.seal_once(r + 1, _ORIGIN)
            elapsed = time.perf_counter() - start
            assert batch is not None and len(batch.transactions) == len(txs)
            rates.append(len(txs) / elapsed)
            raw.append(_raw_recovery_rate(txs, params.l2_chain_id))
    finally:
        db.close()
    return [
        Figure(
            "sequencer transfers/s (admit + seal)",
            statistics.median(rates),
            "tx/s",
            "raw coincurve key recovery",
            statistics.median(raw),
        )
    ]


def run() -> list[Figure]:
    """measure() in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="btcl2-bench-seq-") as d:
        return measure(Path(d))
