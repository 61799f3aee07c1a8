"""Relayer latency on the devnet: seconds from the K-th confirmation block to the mint receipt.

A real embedded regtest node, a real anvil and `btcl2 relayer run` as its own process (poll interval 0.1 s):
a deposit to an EVM address is mined, the light client is given time to hold its block, then the block that
brings it to K confirmations is mined and the clock runs until the Bridge says the outpoint is minted. The
bound is the anvil round trip of one plain transaction (sign, send, receipt), measured in the same run: the
floor of any EVM action, so `ratio` reads "costs as much as N plain transactions".
"""

import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from btcl2.bench.regtest import Figure
from btcl2.bitcoin.address import REGTEST, script_to_address
from btcl2.bitcoin.block import Block
from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.sign import PrevoutInfo, sign_transaction
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.deploy import REGTEST_GENESIS, BridgeConfig, Deployment, deploy_bridge_stack
from btcl2.bridge.evm import EvmClient, account
from btcl2.core.deposits import DepositKind, deposit_tag_script
from btcl2.core.params import Params
from btcl2.regtest.process import RegtestNode
from btcl2.secretfile import write_secret_file

DEPOSITS = 5
"""Deposits timed; the figure is their median."""
DEPOSIT_SATS = 1_000_000
POLL = 0.005
"""Seconds between looks at the chain while timing."""
TIMEOUT = 60.0


def _wait(predicate: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: timed out waiting for {what}")
        time.sleep(POLL)


def _plain_round_trip(evm: EvmClient, runs: int = 5) -> float:
    """Median seconds to sign, send and get the receipt of a plain ether transfer."""
    sender, to = account(ANVIL_DEV_KEYS[2]), account(ANVIL_DEV_KEYS[3]).address
    chain_id, times = evm.chain_id(), []
    for _ in range(runs):
        start = time.perf_counter()
        fees = evm.suggest_fees()
        tx: dict[str, Any] = {"type": 2, "chainId": chain_id, "nonce": evm.nonce(sender.address), "to": to, "value": 1,
              "gas": 21_000, "maxFeePerGas": fees.max_fee_per_gas,
              "maxPriorityFeePerGas": fees.max_priority_fee_per_gas}  # fmt: skip
        raw = bytes(sender.sign_transaction(tx).raw_transaction)
        tx_hash = evm.rpc("eth_sendRawTransaction", "0x" + raw.hex())
        _wait(partial(evm.rpc, "eth_getTransactionReceipt", tx_hash), "a plain receipt")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _Wallet:
    """Mature coinbases of one key, spent one per deposit."""

    def __init__(self, node: RegtestNode, n: int) -> None:
        self.key = PrivateKey.from_bytes(hashlib.sha256(b"bench relayer depositor").digest())
        self.spk = p2wpkh(hash160(self.key.pubkey()))
        addr = script_to_address(self.spk, REGTEST)
        hashes = node.call("generatetoaddress", 100 + n, addr)
        self.coinbases = [Block.decode(bytes.fromhex(node.call("getblock", h, 0))).txs[0] for h in hashes[:n]]
        self.addr = addr

    def deposit(self, params: Params, recipient: bytes) -> str:
        cb = self.coinbases.pop(0)
        op, value = OutPoint(cb.txid, 0), cb.vout[0].value
        outs = (
            TxOut(DEPOSIT_SATS, params.federation_script_pubkey),
            TxOut(0, deposit_tag_script(DepositKind.EVM, recipient)),
            TxOut(value - DEPOSIT_SATS - 10_000, self.spk),
        )
        tx = sign_transaction(Tx(2, (TxIn(op),), outs, 0), [self.key], {op: PrevoutInfo(self.spk, value)}).tx
        return str(tx.encode().hex())


def _relayer(tmp: Path, node: RegtestNode, anvil: Anvil, dep: Deployment) -> subprocess.Popen[bytes]:
    key_file = tmp / "relayer.key"
    write_secret_file(key_file, ANVIL_DEV_KEYS[1] + "\n", replace=True)
    args = [sys.executable, "-m", "btcl2", "relayer", "run", "--datadir", str(tmp / "relayer"),
            "--bitcoin-rpc", node.url, "--bitcoin-cookie", str(node.cookie_file), "--evm-rpc", anvil.url,
            "--bridge", dep.bridge.address, "--key", str(key_file), "--poll-interval", "0.1",
            "--start-height", str(node.call("getblockcount"))]  # fmt: skip
    log = open(tmp / "relayer.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    log.close()
    return proc


def _time_mints(node: RegtestNode, evm: EvmClient, dep: Deployment, wallet: _Wallet, k: int) -> list[float]:
    params, times = Params(), []
    recipient = bytes.fromhex(account(ANVIL_DEV_KEYS[3]).address[2:])
    for _ in range(DEPOSITS):
        txid = Tx.decode(bytes.fromhex(raw := wallet.deposit(params, recipient))).txid
        node.call("sendrawtransaction", raw)
        first = node.call("generatetoaddress", 1, wallet.addr)[0]
        block_hash = bytes.fromhex(first)[::-1]
        if k > 2:
            node.call("generatetoaddress", k - 2, wallet.addr)
        _wait(partial(evm.call, dep.light_client, "isInBestChain", block_hash), "the deposit's block")
        start = time.perf_counter()
        node.call("generatetoaddress", 1, wallet.addr)
        _wait(partial(evm.call, dep.bridge, "minted", txid, 0), "the mint")
        times.append(time.perf_counter() - start)
    return times


def measure() -> list[Figure]:
    """Start a node, anvil and a relayer; time DEPOSITS mints and the plain round trip in the same run."""
    params = Params()
    owner = account(ANVIL_DEV_KEYS[0])
    with tempfile.TemporaryDirectory() as tmpdir, Anvil() as anvil:
        tmp = Path(tmpdir)
        node = RegtestNode(tmp / "node", name="bench")
        node.start()
        proc = None
        try:
            evm = EvmClient(anvil.url)
            config = BridgeConfig.for_params(params, REGTEST_GENESIS, owner.address, owner.address)
            dep = deploy_bridge_stack(evm, owner, config)
            wallet = _Wallet(node, DEPOSITS)
            proc = _relayer(tmp, node, anvil, dep)
            tip = bytes.fromhex(node.call("getbestblockhash"))[::-1]
            _wait(lambda: evm.call(dep.light_client, "isInBestChain", tip), "the light client to sync")
            mints = _time_mints(node, evm, dep, wallet, params.k_deposit_confs)
            bound = _plain_round_trip(evm)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(20)
            node.stop()
    return [
        Figure(
            "relayer: K-th confirmation to mint receipt",
            statistics.median(mints),
            "s",
            "anvil round trip of one plain tx",
            bound,
        )
    ]


if __name__ == "__main__":
    for f in measure():
        print(f"{f.name:<45} {f.value:>8.3f} {f.bound:>8.4f} {f.ratio:8.1f}  {f.bound_name} ({f.unit})")
