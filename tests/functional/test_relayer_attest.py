"""The relayer's attestation submissions survive a crash at every durable step: a devnet brought up by an
in-process supervisor (so the test decides when the relayer runs), its relayer started with BTCL2_FAILPOINT
at `relayer.attest.after_journal`, `.after_send` and `.before_record` (the process dies there as with
kill -9) and then started again. Each time the Bridge ends up holding the batch's attestation, submitted by
exactly one journal entry, and the relayer's record of the batch says `attested`.
"""

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from btcl2.bitcoin.rpc import SyncBitcoinRPC
from btcl2.bridge.artifacts import load_artifact
from btcl2.bridge.attest import ReplayAttestations, attested_batch
from btcl2.bridge.evm import Contract, EvmClient
from btcl2.bridge.service import journal_report
from btcl2.core import eip712
from btcl2.core.params import Params
from btcl2.core.types import Address20, Sats, Transfer
from btcl2.devnet.processes import CommandChild, terminate
from btcl2.devnet.stack import child_env
from btcl2.devnet.supervisor import Supervisor, load_or_create
from btcl2.failpoints import FAILPOINT_ENV, FAILPOINT_EXIT_CODE
from btcl2.storage.db import Database
from btcl2.wallet.l2client import L2Client

pytestmark = pytest.mark.functional

PARAMS = Params()
WAIT = 120.0
"""Seconds any one bounded wait may take before the test fails naming what it waited for."""
POINTS = ("relayer.attest.after_journal", "relayer.attest.after_send", "relayer.attest.before_record")


def wait_for(what: str, check: Callable[[], bool], step: Callable[[], object] | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        if step is not None:
            step()
        time.sleep(0.3)


class Stack:
    """The devnet with its relayer stopped: the test runs the relayer's command itself."""

    def __init__(self, sup: Supervisor, keys: Path) -> None:
        doc = sup.doc
        assert doc.contracts is not None and doc.from_height is not None
        self.doc = doc
        self.keys = keys
        self.node = SyncBitcoinRPC(doc.bitcoin_rpc, cookie_file=str(doc.bitcoin_cookie), timeout=60.0)
        self.evm = EvmClient(doc.evm_rpc)
        self.bridge = Contract(doc.contracts.bridge, load_artifact("Bridge"))
        self.l2 = L2Client(doc.sequencer_rpc)
        self.source = ReplayAttestations(self.node, PARAMS, doc.from_height)
        relayer = next(slot.child for slot in sup.slots if slot.child.name == "relayer")
        assert isinstance(relayer, CommandChild)
        self.relayer = relayer
        self.user: dict[str, str] = {}
        self._mined_at = 0.0

    def cli(self, *args: str) -> Any:
        argv = [sys.executable, "-m", "btcl2", "--devnet", str(self.doc.datadir), *args, "--json"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
        assert done.returncode == 0, f"btcl2 {' '.join(args)}: {done.stderr}"
        return json.loads(done.stdout)

    def mine(self) -> None:
        """A block when a transaction waits (an anchor, an attestation), else one every 2 s for depth:
        mining faster than the poster posts would leave batches' L1 origins too old for their anchors."""
        now = time.monotonic()
        if self.node.call("getrawmempool") or now - self._mined_at >= 2.0:
            self.node.call("generatetoaddress", 1, self.user["btc_address"])
            self._mined_at = now

    def run_relayer(self, failpoint: str | None) -> subprocess.Popen[bytes]:
        env = child_env() if failpoint is None else {**child_env(), FAILPOINT_ENV: failpoint}
        with self.relayer.log_path.open("ab") as log:
            log.write(f"\n=== test: relayer with {FAILPOINT_ENV}={failpoint}\n".encode())
            log.flush()
            return subprocess.Popen(self.relayer.argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def journal(self) -> dict[str, Any]:
        db = Database(self.doc.datadir / "relayer" / "relayer")
        try:
            return journal_report(db)
        finally:
            db.close()

    def new_batch(self, nonce: int) -> int:
        """A transfer sealed in a new batch; its number."""
        secret = bytes.fromhex(json.loads(Path(self.user["file"]).read_text())["private_key"])
        transfer = Transfer(Address20(b"\x42" * 20), Sats(1_000), Sats(self.l2.min_fee()), nonce)
        signed = eip712.sign(transfer, secret, PARAMS.l2_chain_id)
        tx_hash = self.l2.send_transaction(signed)["txHash"]
        wait_for("the transfer sealed", lambda: self.l2.get_transaction(tx_hash)["batch"] is not None)
        return int(self.l2.get_transaction(tx_hash)["batch"])

    def confirmed(self, number: int, k: int) -> bool:
        return any(c.attestation.batch_number == number for c in self.source.confirmed(k))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    datadir = tmp_path_factory.mktemp("relayattest") / "dn"
    sup = Supervisor(load_or_create(datadir, 3, 2, PARAMS), PARAMS)
    try:
        sup.bring_up()
        s = Stack(sup, tmp_path_factory.mktemp("keys"))
        s.relayer.stop()
        s.user = s.cli("keys", "new", "--out", str(s.keys / "user.json"))
        s.cli("regtest", "fund", s.user["btc_address"], "--amount", "1")
        wallet, to = s.user["file"], f"l2:{s.user['l2_address']}"
        s.cli("deposit", "--wallet", wallet, "--to", to, "--amount", "0.5")
        s.node.call("generatetoaddress", PARAMS.k_deposit_confs, s.user["btc_address"])
        wait_for("the L2 credit", lambda: int(s.l2.get_balance(s.user["l2_address"])["balance"]) > 0)
        yield s
    finally:
        sup.shutdown()


def test_crash_at_each_step_submits_each_attestation_once(stack: Stack) -> None:
    s = stack
    k = int(s.evm.call(s.bridge, "minConfirmations"))
    numbers = [s.new_batch(nonce) for nonce in range(len(POINTS))]
    wait_for("the attestations, K deep", lambda: all(s.confirmed(n, k) for n in numbers), s.mine)
    assert all(attested_batch(s.evm, s.bridge, n) is None for n in numbers)
    log = s.relayer.log_path
    # Each run dies at its point; the next one first reconciles what the last left journaled.
    for point in POINTS:
        crashed = s.run_relayer(point)
        try:
            crashed.wait(WAIT)
        finally:
            terminate(crashed, 5.0)
        tail = log.read_text(errors="replace")[-3000:]
        assert crashed.returncode == FAILPOINT_EXIT_CODE and f"FAILPOINT {point}" in tail, (point, tail)
    size = log.stat().st_size
    again = s.run_relayer(None)
    try:
        last = max(numbers)
        wait_for(f"batch {last} recorded attested", lambda: _logged(s, last, size))
    finally:
        terminate(again, 10.0)
    assert all(attested_batch(s.evm, s.bridge, n) is not None for n in numbers)
    report = s.journal()
    subjects = [int(t["subject"], 16) for t in report["transactions"] if t["purpose"] == "attest"]
    assert set(numbers) <= set(subjects) and len(subjects) == len(set(subjects)), subjects
    records = {a["batch"]: a["status"] for a in report["attestations"]}
    assert set(records) == set(subjects) and set(records.values()) == {"attested"}, records


def _logged(s: Stack, number: int, offset: int) -> bool:
    """Whether the relayer logged batch `number` attested (by its own transaction) after byte `offset`."""
    text = s.relayer.log_path.read_bytes()[offset:].decode(errors="replace")
    return f"batch {number} attested on the Bridge" in text


def test_an_evm_reorg_that_drops_an_attestation_submits_it_again(stack: Stack) -> None:
    s = stack
    k = int(s.evm.call(s.bridge, "minConfirmations"))
    number = s.new_batch(s.l2.get_nonce(s.user["l2_address"]))
    wait_for("the attestation, K deep", lambda: s.confirmed(number, k), s.mine)
    _run_until_attested(s, number)
    (record,) = [a for a in s.journal()["attestations"] if a["batch"] == number]
    mined_in = s.evm.wait_for_receipt(bytes.fromhex(record["evm_tx"][2:]), 0.0).block_number
    s.evm.rpc("anvil_reorg", s.evm.block_number() - mined_in + 1, [])  # from that block on, empty blocks
    assert attested_batch(s.evm, s.bridge, number) is None
    text = _run_until_attested(s, number)
    assert attested_batch(s.evm, s.bridge, number) is not None
    assert f"the attestation of batch {number} left the EVM chain: submitting it again" in text


def _run_until_attested(s: Stack, number: int) -> str:
    """Run the relayer until it logs batch `number` attested; what it logged meanwhile."""
    size = s.relayer.log_path.stat().st_size
    run = s.run_relayer(None)
    try:
        wait_for(f"batch {number} attested", lambda: _logged(s, number, size))
    finally:
        terminate(run, 10.0)
    return s.relayer.log_path.read_bytes()[size:].decode(errors="replace")
