"""Figures of the anchor format and of replay, each against a bound measured in the same run.

- vbytes on Bitcoin per L2 transfer, at batch sizes 10, 100 and 1000 (anchor transactions built, funded and
  signed as the poster does, default codec), against the vsize of one plain 1-in 1-out P2WPKH payment;
- replay execution rate (apply_batch, with forced inclusion) in transfers/s, against raw coincurve public-key
  recovery of the same signatures;
- the compressed size per transfer of a 1000-transfer batch under each codec, against the uncompressed encoding.
"""

import hashlib
import random
import time

import coincurve

from btcl2.bench.regtest import Figure
from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.sign import PrevoutInfo, sign_transaction
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.core.anchor import Codec, build_anchor_transactions, compress, encode_anchor_outputs
from btcl2.core.eip712 import address_from_private_key, sign, signing_digest
from btcl2.core.params import Params
from btcl2.core.state import State
from btcl2.core.transition import apply_batch, build_batch
from btcl2.core.types import Batch, DepositCredit, Hash32, Sats, Transfer

SIZES = (10, 100, 1000)


def sample_batches(n_txs: int, seed: int = 1) -> tuple[State, Batch, Batch]:
    """(state after batch 0, batch 0 funding n_txs // 4 accounts, batch 1 with n_txs varied transfers)."""
    params, rng = Params(), random.Random(seed)
    n_accounts = max(2, n_txs // 4)
    keys = [hashlib.sha256(b"bench account %d" % i).digest() for i in range(n_accounts)]
    addrs = [address_from_private_key(k) for k in keys]
    credits = [
        DepositCredit(OutPoint(hashlib.sha256(b"deposit %d" % i).digest(), 0), a, Sats(10_000_000))
        for i, a in enumerate(addrs)
    ]
    first = build_batch(State(), params, credits, [], (100, Hash32(bytes(32))), 1_700_000_000)
    nonces = [0] * n_accounts
    txs = []
    for _ in range(n_txs):
        s, r = rng.randrange(n_accounts), rng.randrange(n_accounts)
        fee = rng.choice((100, 150, 200, 500, 1000))
        txs.append(
            sign(Transfer(addrs[r], Sats(rng.randrange(1_000, 500_000)), Sats(fee), nonces[s]), keys[s], 7702)
        )
        nonces[s] += 1
    second = build_batch(first.state, params, [], txs, (101, Hash32(bytes(32))), 1_700_000_600)
    return first.state, first.batch, second.batch


def anchor_vbytes(batch: Batch) -> int:
    """Total vsize of the signed anchor transactions of `batch`, each funded by one P2WPKH coin."""
    key = PrivateKey.from_bytes(hashlib.sha256(b"bench poster").digest())
    spk = p2wpkh(hash160(key.pubkey()))
    outputs = encode_anchor_outputs(batch)
    coins = [(OutPoint(bytes([i + 1]) * 32, 0), TxOut(10_000_000, spk)) for i in range(len(outputs))]
    return sum(t.vsize for t in build_anchor_transactions(outputs, coins, spk, 1, key))


def p2wpkh_payment_vsize() -> int:
    """vsize of a plain signed payment: one P2WPKH input, one P2WPKH output."""
    key = PrivateKey.from_bytes(hashlib.sha256(b"bench payer").digest())
    spk = p2wpkh(hash160(key.pubkey()))
    op = OutPoint(b"\x01" * 32, 0)
    tx = Tx(2, (TxIn(op),), (TxOut(90_000, spk),), 0)
    return sign_transaction(tx, [key], {op: PrevoutInfo(spk, 100_000)}).tx.vsize


def _replay_rates(state: State, batch: Batch, runs: int = 3) -> tuple[float, float]:
    """(transfers/s of apply_batch, recoveries/s of bare coincurve) over the same signatures, best of runs."""
    params = Params()
    digests = [signing_digest(t.tx, params.l2_chain_id) for t in batch.transactions]
    sigs = [t.signature[:64] + bytes([t.signature[64] - 27]) for t in batch.transactions]
    apply_best = raw_best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        apply_batch(state, batch, params, [])
        apply_best = min(apply_best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for sig, digest in zip(sigs, digests, strict=True):
            coincurve.PublicKey.from_signature_and_message(sig, digest, hasher=None)
        raw_best = min(raw_best, time.perf_counter() - t0)
    n = len(batch.transactions)
    return n / apply_best, n / raw_best


def _codecs() -> list[Codec]:
    available = []
    for codec in Codec:
        try:
            compress(b"probe", codec)
        except Exception:  # an optional codec whose package is not installed
            continue
        available.append(codec)
    return available


def measure() -> list[Figure]:
    """Every anchor and replay figure."""
    payment = float(p2wpkh_payment_vsize())
    figures = []
    batches = {n: sample_batches(n) for n in SIZES}
    for n, (_, _, batch) in batches.items():
        per = anchor_vbytes(batch) / n
        figures.append(
            Figure(f"anchor vB per transfer (batch {n})", per, "vB", "P2WPKH payment vsize", payment)
        )
    state, _, big = batches[SIZES[-1]]
    replay_rate, raw_rate = _replay_rates(state, big)
    figures.append(Figure("replay transfers/s", replay_rate, "tx/s", "coincurve recovery/s", raw_rate))
    raw = big.encode()
    n = len(big.transactions)
    for codec in _codecs():
        figures.append(
            Figure(
                f"codec {codec.name.lower()} B per transfer (batch {n})",
                len(compress(raw, codec)) / n,
                "B",
                "uncompressed B per transfer",
                len(raw) / n,
            )
        )
    return figures


def run() -> list[Figure]:
    """Entry point for the bench runner."""
    return measure()
