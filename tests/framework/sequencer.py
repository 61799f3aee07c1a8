"""`btcl2 sequencer run --post` as a test drives it: a process on a free port against the embedded node, its
JSON-RPC API, and a funded poster key (the devnet's), shared by the poster, status and explorer tests."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from btcl2.bitcoin import address
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.tx import TxOut
from btcl2.core.deposits import DepositKind, deposit_tag_script
from btcl2.core.params import Params
from btcl2.failpoints import FAILPOINT_ENV
from btcl2.wallet.keyfile import KeyFile, write_keyfile
from framework.node import RegtestNode, free_port
from framework.util import CoinPool, btc, mine, raw_post, wait_until, with_extra_outputs

POSTER = KeyFile(PrivateKey(hashlib.sha256(b"btcl2 devnet poster").digest()), address.REGTEST)
"""The poster key the default parameters name (Params.poster_pubkey)."""


def fund_poster(node: RegtestNode, pool: CoinPool, change_to: str, n: int = 12) -> None:
    """n confirmed 0.1 BTC coins for the poster (it spends confirmed coins only); change to `change_to`."""
    coin = pool.take()
    change = coin.value - n * 10_000_000 - 5_000
    outputs = {POSTER.btc_address: btc(10_000_000), change_to: btc(change)}
    extra = [TxOut(10_000_000, POSTER.script_pubkey) for _ in range(n - 1)]
    node.call("sendrawtransaction", with_extra_outputs(node, [coin], outputs, extra))
    mine(node, 1, change_to)


def send_l2_deposit(node: RegtestNode, pool: CoinPool, recipient: str, sats: int, change_to: str) -> str:
    """Broadcast (not mine) a deposit of `sats` to the L2 account `recipient` (0x-hex); its txid."""
    coin = pool.take()
    fed = address.script_to_address(Params().federation_script_pubkey, address.REGTEST)
    outs = {fed: btc(sats), change_to: btc(coin.value - sats - 2_000)}
    tag = TxOut(0, deposit_tag_script(DepositKind.L2, bytes.fromhex(recipient[2:])))
    txid: str = node.call("sendrawtransaction", with_extra_outputs(node, [coin], outs, [tag]))
    return txid


def poster_key_file(datadir: Path) -> Path:
    """The poster key written as a key file in `datadir`."""
    key = datadir / "poster-key.json"
    write_keyfile(key, POSTER)
    return key


class SequencerProcess:
    """`btcl2 sequencer run --post` on a free port (without --post when `key` is None); `start(failpoint=...)`
    arms a failpoint."""

    def __init__(self, node: RegtestNode, datadir: Path, key: Path | None, *extra: str) -> None:
        self.node, self.datadir, self.key, self.extra = node, datadir, key, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = datadir / "sequencer.toml"
        self.config.write_text("poll_interval = 0.1\nrate_limit = 100000.0\nrate_burst = 100000\n")
        self.log = datadir / "sequencer.log"

    def start(self, failpoint: str | None = None) -> None:
        cmd = [sys.executable, "-m", "btcl2", "sequencer", "run", "--datadir", str(self.datadir)]
        cmd += ["--bitcoin-rpc", self.node.url, "--bitcoin-cookie", str(self.node.cookie_file)]
        cmd += ["--rpcport", str(self.port), "--batch-interval", "0.3", "--config", str(self.config)]
        if self.key is not None:
            cmd += ["--post", "--poster-key", str(self.key)]
        cmd += self.extra
        env = dict(os.environ)
        env.pop(FAILPOINT_ENV, None)
        if failpoint is not None:
            env[FAILPOINT_ENV] = failpoint
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_until(self._ready, timeout=30, what="the sequencer's API")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"sequencer exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return "result" in self.request("l2_status")
        except OSError:
            return False

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def request(self, method: str, *params: Any) -> dict[str, Any]:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
        reply: dict[str, Any] = json.loads(raw_post(self.url, body, None, timeout=10).body)
        return reply

    def call(self, method: str, *params: Any) -> Any:
        reply = self.request(method, *params)
        assert "error" not in reply, reply
        return reply["result"]
