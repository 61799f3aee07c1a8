"""Figures of federation payouts, each against a bound measured in the same run.

- payout latency, request to broadcast, on a regtest node started here: the coordinator's signature round
  (two signers behind their authenticated HTTP API, each checking its inputs on the node) then
  finalize and sendrawtransaction; bound: one signer's own check-and-sign time for the same payout. The
  signers' withdrawal views are fixed here (a stand-in for their EVM node and replay, which the functional
  test exercises); their input checks query the real node.
- vbytes per withdrawal of signed payouts of 1, 10 and 50 withdrawals to P2WPKH; bound: a plain
  1-in 1-out P2WPKH payment.
"""

import asyncio
import hashlib
import tempfile
import threading
import time
from pathlib import Path

from btcl2.bench.anchor import p2wpkh_payment_vsize
from btcl2.bench.regtest import Figure
from btcl2.bitcoin.address import REGTEST, script_to_address
from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.sighash import SIGHASH_ALL
from btcl2.bitcoin.sign import PrevoutInfo, sign_transaction
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.core.params import Params
from btcl2.federation.config import SignerConfig, SignerEndpoint
from btcl2.federation.coordinator import request_signature
from btcl2.federation.death import PayoutOrigins, read_origins
from btcl2.federation.payout import (
    FederationCoin,
    PayoutItem,
    WithdrawalRef,
    build_payout,
    finalize,
    input_sighash,
)
from btcl2.federation.signer import Signer, SignerService
from btcl2.federation.store import SignerStore
from btcl2.federation.views import BitcoinView, L2Snapshot, Utxo
from btcl2.regtest.process import RegtestNode, free_port

PARAMS = Params()
KEYS = [PrivateKey(hashlib.sha256(b"btcl2 devnet federation %d" % i).digest()) for i in (1, 2, 3)]
SIZES = (1, 10, 50)
TOKEN = "bench-token-0123456789"


def _items(n: int, seed: int = 0) -> list[PayoutItem]:
    return [
        PayoutItem(
            WithdrawalRef.evm((seed * 1000 + i).to_bytes(32, "big")),
            p2wpkh(hash160(b"bench %d %d" % (seed, i))),
            20_000 + i,
        )
        for i in range(n)
    ]


def vbytes_per_withdrawal(n: int) -> float:
    """vsize / n of a payout of n withdrawals from one federation coin, signed by M keys."""
    coin = FederationCoin(OutPoint(b"\x01" * 32, 0), 100_000_000)
    tx = build_payout(_items(n), [coin], PARAMS, 1)
    sigs = {
        k.pubkey(): [k.sign_ecdsa(input_sighash(tx, 0, coin.amount, PARAMS)) + bytes([SIGHASH_ALL])]
        for k in KEYS[: PARAMS.federation_m]
    }
    return finalize(tx, sigs, PARAMS).vsize / n


class _Views:
    """Real input checks on the node; a fixed set of known withdrawals."""

    def __init__(self, bitcoin: BitcoinView, known: list[PayoutItem]) -> None:
        self._bitcoin = bitcoin
        self._known = {i.ref: i for i in known}

    def utxo(self, outpoint: OutPoint) -> Utxo | None:
        return self._bitcoin.utxo(outpoint)

    def evm_withdrawals(self) -> dict[WithdrawalRef, PayoutItem]:
        return self._known

    def l2(self) -> L2Snapshot:
        return L2Snapshot("", 0)

    def origins(self, outpoints: list[OutPoint]) -> PayoutOrigins:
        rpc = self._bitcoin.rpc
        return read_origins(rpc, outpoints, str(rpc.call("getbestblockhash")))


def _fund_federation(node: RegtestNode, n: int) -> list[FederationCoin]:
    """Mine to a key, then pay `n` federation outputs of 1 BTC from one mature coinbase."""
    key = PrivateKey(hashlib.sha256(b"bench federation funder").digest())
    spk = p2wpkh(hash160(key.pubkey()))
    hashes = node.call("generatetoaddress", 101, script_to_address(spk, REGTEST))
    cb = Tx.from_hex(node.call("getblock", hashes[0], 2)["tx"][0]["hex"])
    op = OutPoint(cb.txid, 0)
    outs = tuple(TxOut(100_000_000, PARAMS.federation_script_pubkey) for _ in range(n))
    outs += (TxOut(cb.vout[0].value - n * 100_000_000 - 10_000, spk),)
    tx = Tx(2, (TxIn(op),), outs, 0)
    signed = sign_transaction(tx, [key], {op: PrevoutInfo(spk, cb.vout[0].value)}).tx
    node.call("sendrawtransaction", signed.hex())
    # Payouts spend only coins K deep (docs/PROTOCOL.md, "Federation").
    node.call("generatetoaddress", PARAMS.k_deposit_confs, script_to_address(spk, REGTEST))
    return [FederationCoin(OutPoint(signed.txid, i), 100_000_000) for i in range(n)]


def _serve(services: list[SignerService]) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    for s in services:
        asyncio.run_coroutine_threadsafe(s.start(), loop).result(10)
    return loop, thread


def payout_latency(rounds: int = 5) -> tuple[float, float]:
    """(median ms from proposal to broadcast, median ms of one signer's own check and sign)."""
    with tempfile.TemporaryDirectory() as tmp:
        node = RegtestNode(Path(tmp) / "node", name="bench-federation")
        node.start()
        try:
            coins = _fund_federation(node, 2 * rounds)
            known = [i for r in range(2 * rounds) for i in _items(1, r)]
            bitcoin = BitcoinView(node.rpc, PARAMS)
            signers, services, endpoints = [], [], []
            for i in range(PARAMS.federation_m):
                config = SignerConfig(Path(tmp) / f"s{i}", node.url, TOKEN, port=free_port())
                signer = Signer(KEYS[i], config, _Views(bitcoin, known), SignerStore(config.datadir))
                signers.append(signer)
                services.append(SignerService(signer, config))
                endpoints.append(SignerEndpoint(f"http://127.0.0.1:{config.port}", TOKEN))
            loop, _ = _serve(services)
            latencies, own = [], []
            for r in range(rounds):
                items, coin = _items(1, r), coins[r]
                started = time.perf_counter()
                tx = build_payout(items, [coin], PARAMS, 2)
                answers = [request_signature(e, tx, [coin.amount]) for e in endpoints]
                sigs = {
                    bytes.fromhex(a["pubkey"]): [bytes.fromhex(s) for s in a["signatures"]] for a in answers
                }
                node.call("sendrawtransaction", finalize(tx, sigs, PARAMS).hex())
                latencies.append(time.perf_counter() - started)
                other = build_payout(_items(1, rounds + r), [coins[rounds + r]], PARAMS, 2)
                started = time.perf_counter()
                signers[0].sign(other, [coins[rounds + r].amount])
                own.append(time.perf_counter() - started)
            for s in services:
                asyncio.run_coroutine_threadsafe(s.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        finally:
            node.stop()
    latencies.sort()
    own.sort()
    return latencies[len(latencies) // 2] * 1000, own[len(own) // 2] * 1000


def measure() -> list[Figure]:
    """The federation figures."""
    payment = float(p2wpkh_payment_vsize())
    figures = [
        Figure(
            f"payout vbytes/withdrawal, {n} per payout",
            vbytes_per_withdrawal(n),
            "vB",
            "1-in 1-out P2WPKH payment",
            payment,
        )
        for n in SIZES
    ]
    latency, own = payout_latency()
    figures.append(
        Figure("payout latency, request to broadcast", latency, "ms", "one signer's own signing", own)
    )
    return figures


if __name__ == "__main__":
    for f in measure():
        print(f"{f.name}: {f.value:.1f} {f.unit} (bound {f.bound:.1f}, {f.bound_name}, ratio {f.ratio:.2f})")
