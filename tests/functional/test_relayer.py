"""The relayer as a process, against a real anvil and a real regtest node, driven as an operator would.

Each test deploys fresh contracts, starts `btcl2 relayer run` (stopped in teardown), makes deposits on the
regtest node and mines; it then checks the Bridge (balances, Minted events read by its address) and, with the
relayer stopped, the relayer's journal (`btcl2 relayer journal --json`). Crashes are made with named
failpoints (BTCL2_FAILPOINT): the process dies at that step as with kill -9 and is started again.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from framework.node import RegtestNode
from framework.util import (
    CoinPool,
    btc,
    build_block_on,
    mine,
    new_key,
    spend_coinbase,
    wait_until,
    with_extra_outputs,
)

from btcl2.bitcoin import address
from btcl2.bitcoin.block import Block
from btcl2.bitcoin.tx import Tx, TxOut
from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.artifacts import load_artifact
from btcl2.bridge.deploy import REGTEST_GENESIS, BridgeConfig, Deployment, deploy_bridge_stack
from btcl2.bridge.evm import Contract, EvmClient, account, events_of
from btcl2.bridge.journal import RelayerStore
from btcl2.bridge.relayer import Relayer, RelayerConfig, minted_events
from btcl2.bridge.sender import TxSender
from btcl2.bridge.spv import mint_proof
from btcl2.core.deposits import DepositKind, deposit_tag_script
from btcl2.core.params import Params
from btcl2.errors import Temporary
from btcl2.failpoints import FAILPOINT_ENV, FAILPOINT_EXIT_CODE
from btcl2.secretfile import write_secret_file
from btcl2.storage.db import Database

pytestmark = pytest.mark.functional

PARAMS = Params()
FED_ADDRESS = address.script_to_address(PARAMS.federation_script_pubkey, address.REGTEST)
K = PARAMS.k_deposit_confs
FEE = 2_000
MINER = new_key()
OWNER = account(ANVIL_DEV_KEYS[0])
RELAYER_KEYS = (ANVIL_DEV_KEYS[1], ANVIL_DEV_KEYS[2])
USER = account(ANVIL_DEV_KEYS[3])
STRANGER = account(ANVIL_DEV_KEYS[4])
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    with Anvil(hardfork="prague") as a:
        yield a


@pytest.fixture(scope="module")
def evm(anvil: Anvil) -> EvmClient:
    return EvmClient(anvil.url)


@pytest.fixture
def stack(evm: EvmClient) -> Deployment:
    config = BridgeConfig.for_params(PARAMS, REGTEST_GENESIS, OWNER.address, OWNER.address)
    return deploy_bridge_stack(evm, OWNER, config)


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "btcl2", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def cli_json(*args: str) -> Any:
    res = cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


class RelayerProcess:
    """`btcl2 relayer run` in a subprocess, its log in the datadir."""

    def __init__(self, datadir: Path, node: RegtestNode, anvil: Anvil, stack: Deployment, key: str) -> None:
        self.datadir = datadir
        key_file = datadir.with_name(datadir.name + ".key")  # a secret never goes on the command line
        write_secret_file(key_file, key + "\n", replace=True)
        self.args = [
            sys.executable, "-m", "btcl2", "relayer", "run", "--datadir", str(datadir),
            "--bitcoin-rpc", node.url, "--bitcoin-cookie", str(node.cookie_file),
            "--evm-rpc", anvil.url, "--bridge", stack.bridge.address,
            "--light-client", stack.light_client.address, "--key", str(key_file), "--poll-interval", "0.2",
            # Deposits of earlier tests are left alone: each test counts only its own mints.
            "--start-height", str(node.rpc.call("getblockcount")),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self, failpoint: str | None = None, extra: tuple[str, ...] = ()) -> None:
        env = {k: v for k, v in os.environ.items() if k != FAILPOINT_ENV}
        if failpoint is not None:
            env[FAILPOINT_ENV] = failpoint
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.runs += 1
        log = open(self.datadir / f"relayer.{self.runs}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([*self.args, *extra], stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGTERM only once the relayer says it runs (its handler is installed by then): sent during
            # Python's start-up it would kill the process with -15 instead of stopping it.
            current = self.datadir / f"relayer.{self.runs}.log"
            proc = self.proc
            wait_until(
                lambda: proc.poll() is not None or " for Bridge " in current.read_text(), TIMEOUT, "start-up"
            )
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            assert self.proc.returncode in (0, -signal.SIGKILL), self.log()

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        """The tail of every run's log, for failure messages."""
        return "\n".join(p.read_text()[-4000:] for p in sorted(self.datadir.glob("relayer.*.log")))

    def logged(self, text: str) -> bool:
        """Whether any run of this relayer has logged `text` (whole logs, not the tail)."""
        return self.count(text) > 0

    def count(self, text: str) -> int:
        """How many times every run of this relayer has logged `text` (whole logs, not the tail)."""
        return sum(p.read_text().count(text) for p in self.datadir.glob("relayer.*.log"))

    def journal(self) -> dict[str, Any]:
        res = cli("relayer", "journal", "--datadir", str(self.datadir), "--json")
        assert res.returncode == 0, res.stderr
        out: dict[str, Any] = json.loads(res.stdout)
        return out


@pytest.fixture
def relayers(
    tmp_path: Path, node: RegtestNode, anvil: Anvil, stack: Deployment
) -> Iterator[list[RelayerProcess]]:
    """Two relayer launchers with their own keys and datadirs; every process is stopped at the end."""
    procs = [
        RelayerProcess(tmp_path / f"relayer{i}", node, anvil, stack, key)
        for i, key in enumerate(RELAYER_KEYS)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill9()


def node_tip(node: RegtestNode) -> bytes:
    return bytes.fromhex(node.rpc.call("getbestblockhash"))[::-1]


def lc_has(evm: EvmClient, stack: Deployment, block_hash: bytes) -> bool:
    return bool(evm.call(stack.light_client, "isInBestChain", block_hash))


def wait_synced(evm: EvmClient, stack: Deployment, node: RegtestNode, r: RelayerProcess) -> None:
    def synced() -> bool:
        assert r.proc is not None and r.proc.poll() is None, r.log()
        return lc_has(evm, stack, node_tip(node))

    wait_until(synced, TIMEOUT, "the light client to reach the node's tip")


def send_deposit(node: RegtestNode, pool: CoinPool, amount: int, recipient: bytes) -> Tx:
    """Broadcast (not mine) a deposit of `amount` to EVM address `recipient`."""
    coin = pool.take()
    outs = {FED_ADDRESS: btc(amount), MINER.p2wpkh_address: btc(coin.value - amount - FEE)}
    tag = deposit_tag_script(DepositKind.EVM, recipient)
    signed = with_extra_outputs(node, [coin], outs, [TxOut(0, tag)])
    node.rpc.call("sendrawtransaction", signed)
    return Tx.from_hex(signed)


def fed_vout(tx: Tx) -> int:
    return next(i for i, o in enumerate(tx.vout) if o.script_pubkey == PARAMS.federation_script_pubkey)


def balance(evm: EvmClient, stack: Deployment, who: str) -> int:
    value: int = evm.call(stack.wbtc, "balanceOf", who)
    return value


def fresh_recipient() -> str:
    return str(account(os.urandom(32)).address)


def mint_tx_of(evm: EvmClient, stack: Deployment, tx: Tx) -> bytes:
    """The one Minted event of the Bridge for `tx`; fails if there are more or none."""
    (event,) = minted_events(evm, stack.bridge, tx.txid)
    return bytes(event.tx_hash)


def deposit_entry(journal: dict[str, Any], tx: Tx) -> dict[str, Any]:
    (entry,) = [d for d in journal["deposits"] if d["outpoint"] == f"{tx.txid_hex}:{fed_vout(tx)}"]
    return dict(entry)


def test_mints_at_k_confirmations_only_and_ignores_an_imitator(
    evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment, relayers: list[RelayerProcess]
) -> None:
    r = relayers[0]
    r.start()
    wait_synced(evm, stack, node, r)
    who = fresh_recipient()
    tx = send_deposit(node, pool, 1_234_567, bytes.fromhex(who[2:]))
    (first,) = mine(node, 1, MINER.p2wpkh_address)
    first_hash = bytes.fromhex(first)[::-1]
    wait_until(lambda: lc_has(evm, stack, first_hash), TIMEOUT, "the deposit's block on the light client")
    # An imitating contract emits a Minted event for this very deposit: nobody may believe it.
    fake = evm.deploy(load_artifact("FakeBridge"), [], STRANGER)
    evm.transact(fake, "fakeMint", tx.txid, fed_vout(tx), who, 1_234_567, first_hash, sender=STRANGER)
    status_args = ["deposit", "status", f"{tx.txid_hex}:{fed_vout(tx)}", "--bitcoin-rpc", node.url]
    status_args += ["--bitcoin-cookie", str(node.cookie_file), "--evm-rpc", evm.url]
    status_args += ["--bridge", stack.bridge.address]
    time.sleep(1.5)  # several relayer passes with one confirmation only
    assert balance(evm, stack, who) == 0
    assert minted_events(evm, stack.bridge, tx.txid) == []
    status = cli_json(*status_args)
    assert (status["status"], status["confirmations"], status["evm_tx"]) == ("confirming", 1, None)

    mine(node, K - 1, MINER.p2wpkh_address)
    wait_until(lambda: balance(evm, stack, who) == 1_234_567, TIMEOUT, "the mint")
    mint_tx = mint_tx_of(evm, stack, tx)
    status = cli_json(*status_args)
    assert status["status"] == "minted" and status["evm_tx"] == "0x" + mint_tx.hex()
    assert status["confirmations"] >= K
    r.stop()
    entry = deposit_entry(r.journal(), tx)
    assert (entry["status"], entry["mint_tx"]) == ("minted", "0x" + mint_tx.hex())


def test_btcl2_status_shows_the_relayers_mint(
    evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment, relayers: list[RelayerProcess]
) -> None:
    """`btcl2 status` on an EVM deposit reads the Bridge: confirmed at K, then minted with the EVM tx the
    relayer sent, the same answer as `btcl2 deposit status` (it used to stay `confirmed` forever)."""
    r = relayers[0]
    who = fresh_recipient()
    tx = send_deposit(node, pool, 2_345_678, bytes.fromhex(who[2:]))
    outpoint = f"{tx.txid_hex}:{fed_vout(tx)}"
    chains = ["--bitcoin-rpc", node.url, "--bitcoin-cookie", str(node.cookie_file)]
    chains += ["--evm-rpc", evm.url, "--bridge", stack.bridge.address]
    mine(node, K, MINER.p2wpkh_address)
    before = cli_json("status", outpoint, *chains)  # K confirmations, no relayer yet: not minted
    assert (before["status"], before["stages"][-1]["name"], before["stages"][-1]["done"]) == (
        "confirmed", "minted", False
    )  # fmt: skip
    r.start()
    wait_until(lambda: balance(evm, stack, who) == 2_345_678, TIMEOUT, "the mint")
    mint_tx = "0x" + mint_tx_of(evm, stack, tx).hex()
    life = cli_json("status", outpoint, *chains)
    minted = life["stages"][-1]
    assert (life["status"], minted["chain"], minted["done"]) == ("minted", "evm", True)
    assert minted["txid"] == mint_tx
    assert cli_json("deposit", "status", outpoint, *chains)["evm_tx"] == mint_tx
    # Without an EVM view the answer says so instead of claiming the deposit is not minted.
    blind = cli_json("status", outpoint, *chains[:4])
    assert blind["status"] == "confirmed" and "EVM not asked" in blind["stages"][-1]["detail"]
    half = cli("status", outpoint, *chains[:6])  # an EVM node but no Bridge: one line, not a guess
    assert half.returncode == 1 and "needs both --evm-rpc URL and --bridge" in half.stderr
    r.stop()


def test_two_deposits_in_one_block(
    evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment, relayers: list[RelayerProcess]
) -> None:
    r = relayers[0]
    r.start()
    a, b = fresh_recipient(), fresh_recipient()
    tx_a = send_deposit(node, pool, 100_000, bytes.fromhex(a[2:]))
    tx_b = send_deposit(node, pool, 250_000, bytes.fromhex(b[2:]))
    (block_hash,) = mine(node, 1, MINER.p2wpkh_address)
    assert {tx_a.txid_hex, tx_b.txid_hex} <= set(node.rpc.call("getblock", block_hash, 1)["tx"])
    mine(node, K - 1, MINER.p2wpkh_address)
    wait_until(
        lambda: (balance(evm, stack, a), balance(evm, stack, b)) == (100_000, 250_000), TIMEOUT, "both mints"
    )
    assert mint_tx_of(evm, stack, tx_a) != mint_tx_of(evm, stack, tx_b)
    r.stop()
    journal = r.journal()
    assert {deposit_entry(journal, t)["status"] for t in (tx_a, tx_b)} == {"minted"}


def test_evm_reorg_that_drops_a_mint_mints_again_once(
    evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment, relayers: list[RelayerProcess]
) -> None:
    """An EVM reorg replaces the block holding a mint: the relayer sees the Bridge no longer minted it and
    mints it again, once."""
    r = relayers[0]
    r.start()
    wait_synced(evm, stack, node, r)
    who = fresh_recipient()
    tx = send_deposit(node, pool, 345_678, bytes.fromhex(who[2:]))
    mine(node, K, MINER.p2wpkh_address)
    outpoint = f"{tx.txid_hex}:{fed_vout(tx)}"
    done = (f"minted {outpoint} in tx", f"deposit {outpoint} was minted by another transaction")
    # The reorg comes once the relayer has recorded the mint: before that, the mint is still its pending
    # transaction, which it would find unknown to the node and simply send again.
    wait_until(lambda: sum(r.count(d) for d in done) == 1, TIMEOUT, "the mint recorded")
    assert balance(evm, stack, who) == 345_678
    first = mint_tx_of(evm, stack, tx)
    assert evm.wait_for_receipt(first, 0.0).block_number == evm.block_number()  # the newest EVM block
    evm.rpc("anvil_reorg", 1, [])  # that block replaced by an empty one: the mint is gone
    assert balance(evm, stack, who) == 0 and minted_events(evm, stack.bridge, tx.txid) == []
    wait_until(lambda: balance(evm, stack, who) == 345_678, TIMEOUT, "the mint sent again")
    # anvil does not put the dropped transaction back in its pool: the relayer sends the mint again (possibly
    # byte-identical: same nonce, fees and call once the reorg rewound its nonce) and records it again.
    wait_until(lambda: sum(r.count(d) for d in done) >= 2, TIMEOUT, "the mint recorded again")
    again = mint_tx_of(evm, stack, tx)  # exactly one Minted event on the chain
    r.stop()
    entry = deposit_entry(r.journal(), tx)
    assert entry["status"] in ("minted", "already_minted") and entry["mint_tx"] == "0x" + again.hex()
    assert r.logged(f"the mint of {outpoint} (tx 0x{first.hex()}) left the EVM chain")


def test_a_node_chain_that_got_shorter_is_a_temporary_failure(
    evm: EvmClient, node: RegtestNode, stack: Deployment, tmp_path: Path
) -> None:
    """A height the node no longer has (its chain got shorter between two reads) makes the relayer retry the
    pass, not stop."""
    store = RelayerStore(Database(tmp_path / "relayer"))
    sender = TxSender(evm, account(RELAYER_KEYS[0]), store)
    relayer = Relayer(node.rpc, evm, stack.bridge, stack.light_client, sender, store, RelayerConfig())
    tip = int(node.rpc.call("getblockcount"))
    assert relayer._node_hash(tip) == node_tip(node)
    with pytest.raises(Temporary, match="the node's chain changed"):
        relayer._node_hash(tip + 1)
    store.db.close()


def test_reorg_light_client_follows_and_orphaned_deposit_is_never_minted(
    evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment, relayers: list[RelayerProcess]
) -> None:
    r = relayers[0]
    r.start()
    wait_synced(evm, stack, node, r)
    base = node.rpc.call("getbestblockhash")
    who = fresh_recipient()
    tx = send_deposit(node, pool, 300_000, bytes.fromhex(who[2:]))
    (orphan,) = mine(node, 1, MINER.p2wpkh_address)
    orphan_hash = bytes.fromhex(orphan)[::-1]
    wait_until(lambda: lc_has(evm, stack, orphan_hash), TIMEOUT, "the deposit's block on the light client")
    node.rpc.call("invalidateblock", orphan)
    # A longer branch without the deposit: blocks built here hold only their coinbase.
    prev = base
    for i in range(K + 1):
        block: Block = build_block_on(node, prev, MINER.p2wpkh_script, tag=i + 1)
        assert node.rpc.call("submitblock", block.encode().hex()) is None
        prev = block.hash_hex
    assert node.rpc.call("getbestblockhash") == prev
    new_tip = bytes.fromhex(prev)[::-1]
    wait_until(
        lambda: evm.call(stack.light_client, "bestHash") == new_tip, TIMEOUT, "the light client's reorg"
    )
    assert not lc_has(evm, stack, orphan_hash)
    assert evm.call(stack.light_client, "confirmations", orphan_hash) == 0
    time.sleep(1.5)
    assert balance(evm, stack, who) == 0
    assert not evm.call(stack.bridge, "minted", tx.txid, fed_vout(tx))
    r.stop()
    assert [d for d in r.journal()["deposits"] if d["outpoint"].startswith(tx.txid_hex)] == []
    node.rpc.call("reconsiderblock", orphan)  # leave the chain as the most-work rule wants for later tests


@pytest.mark.parametrize(
    "failpoint", ["relayer.mint.after_journal", "relayer.mint.after_send", "relayer.mint.before_record"]
)
def test_crash_during_a_mint_restart_mints_exactly_once(
    evm: EvmClient,
    node: RegtestNode,
    pool: CoinPool,
    stack: Deployment,
    relayers: list[RelayerProcess],
    failpoint: str,
) -> None:
    r = relayers[0]
    r.start(failpoint=failpoint)
    wait_synced(evm, stack, node, r)
    who = fresh_recipient()
    tx = send_deposit(node, pool, 400_000, bytes.fromhex(who[2:]))
    mine(node, K, MINER.p2wpkh_address)
    assert r.wait_exit() == FAILPOINT_EXIT_CODE, r.log()
    r.start()
    wait_until(lambda: balance(evm, stack, who) == 400_000, TIMEOUT, "the mint after restart")
    mint_tx = mint_tx_of(evm, stack, tx)
    time.sleep(1.0)  # more passes: nothing more may happen
    assert balance(evm, stack, who) == 400_000
    r.stop()
    journal = r.journal()
    entry = deposit_entry(journal, tx)
    assert (entry["status"], entry["mint_tx"]) == ("minted", "0x" + mint_tx.hex())
    subject = tx.txid.hex() + fed_vout(tx).to_bytes(4, "big").hex()
    mints = [t for t in journal["transactions"] if t["purpose"] == "mint" and t["subject"] == subject]
    assert [(t["status"], t["tx_hash"]) for t in mints] == [("mined", "0x" + mint_tx.hex())]
    # The journaled bytes were the ones mined: sent again after the crash, never rebuilt.
    assert mints[0]["versions"] == ["0x" + mint_tx.hex()]


def test_racing_relayers_and_a_manual_mint_mint_once(
    evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment, relayers: list[RelayerProcess]
) -> None:
    for r in relayers:
        r.start()
    for r in relayers:
        wait_synced(evm, stack, node, r)
    who = fresh_recipient()
    tx = send_deposit(node, pool, 500_000, bytes.fromhex(who[2:]))
    mine(node, K, MINER.p2wpkh_address)
    wait_until(lambda: balance(evm, stack, who) == 500_000, TIMEOUT, "the mint")
    mint_tx_of(evm, stack, tx)
    # Each relayer records the outcome on its own pass: wait for both log lines rather than for a time.
    outpoint = f"{tx.txid_hex}:{fed_vout(tx)}"
    for r in relayers:
        wait_until(
            lambda r=r: (
                r.logged(f"minted {outpoint}") or r.logged(f"deposit {outpoint} was minted by another")
            ),
            TIMEOUT,
            "each relayer to record the mint",
        )
    for r in relayers:
        r.stop()
    statuses = sorted(deposit_entry(r.journal(), tx)["status"] for r in relayers)
    assert statuses == ["already_minted", "minted"]

    # A manual mint lands while a relayer's journaled mint was never sent: its restart records AlreadyMinted.
    r = relayers[0]
    r.start(failpoint="relayer.mint.after_journal")
    second = fresh_recipient()
    tx2 = send_deposit(node, pool, 600_000, bytes.fromhex(second[2:]))
    (block_hash,) = mine(node, 1, MINER.p2wpkh_address)
    mine(node, K - 1, MINER.p2wpkh_address)
    assert r.wait_exit() == FAILPOINT_EXIT_CODE, r.log()
    block = Block.decode(bytes.fromhex(node.rpc.call("getblock", block_hash, 0)))
    proof = mint_proof(block, tx2.txid, fed_vout(tx2))
    evm.transact(stack.bridge, "mintWithProof", *proof.args(), sender=STRANGER)
    r.start()
    outpoint = f"{tx2.txid_hex}:{fed_vout(tx2)}"
    wait_until(
        lambda: r.logged(f"deposit {outpoint} was minted by another"), TIMEOUT, "AlreadyMinted recorded"
    )
    r.stop()
    entry = deposit_entry(r.journal(), tx2)
    assert entry["status"] == "already_minted"
    assert balance(evm, stack, second) == 600_000
    assert len(minted_events(evm, stack.bridge, tx2.txid)) == 1


def test_stuck_transaction_is_replaced(
    evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment, relayers: list[RelayerProcess]
) -> None:
    r = relayers[0]
    r.start(extra=("--stuck-after", "0.5", "--receipt-wait", "0.3"))
    wait_synced(evm, stack, node, r)
    who = fresh_recipient()
    evm.rpc("evm_setAutomine", False)
    try:
        tx = send_deposit(node, pool, 700_000, bytes.fromhex(who[2:]))
        mine(node, K, MINER.p2wpkh_address)
        # The headers transaction waits in anvil's pool until the relayer replaces it.
        wait_until(lambda: r.logged("relayer: replaced nonce"), TIMEOUT, "a replacement")
        evm.rpc("evm_mine")
    finally:
        evm.rpc("evm_setAutomine", True)
    wait_until(lambda: balance(evm, stack, who) == 700_000, TIMEOUT, "the mint")
    r.stop()
    journal = r.journal()
    headers = [t for t in journal["transactions"] if t["purpose"] == "headers"]
    replaced = [t for t in headers if len(t["versions"]) > 1]
    assert replaced, headers
    assert all(t["status"] == "mined" and t["tx_hash"] in t["versions"] for t in headers)
    assert deposit_entry(journal, tx)["status"] == "minted"
    assert len(minted_events(evm, stack.bridge, tx.txid)) == 1


def test_cli_deploy_deposit_wait_and_withdraw(
    evm: EvmClient, anvil: Anvil, node: RegtestNode, pool: CoinPool, tmp_path: Path
) -> None:
    out = tmp_path / "addresses.json"
    deployer = tmp_path / "deployer.key"
    write_secret_file(deployer, ANVIL_DEV_KEYS[0] + "\n")
    deployed = cli_json("evm", "deploy", "--evm-rpc", anvil.url, "--key", str(deployer), "--out", str(out))
    assert json.loads(out.read_text())["Bridge"] == deployed["Bridge"]
    assert (
        deployed["deploy_block"]
        == evm.call(Contract(deployed["Bridge"], load_artifact("Bridge")), "deployBlock")
        > 0
    )
    bridge = Contract(deployed["Bridge"], load_artifact("Bridge"))
    light_client = Contract(deployed["BitcoinLightClient"], load_artifact("BitcoinLightClient"))
    stack = Deployment(light_client, Contract(deployed["WrappedBTC"], load_artifact("WrappedBTC")), bridge)
    assert evm.call(bridge, "lightClient") == light_client.address

    wallet = tmp_path / "alice.json"
    alice = cli_json("keys", "new", "--out", str(wallet))
    spend_coinbase(node, pool.take(), alice["btc_address"])
    mine(node, 1, MINER.p2wpkh_address)
    r = RelayerProcess(tmp_path / "relayer", node, anvil, stack, ANVIL_DEV_KEYS[1])
    env = {"BTCL2_BITCOIN_RPC": node.url, "BTCL2_BITCOIN_COOKIE": str(node.cookie_file)}
    env |= {"BTCL2_EVM_RPC": anvil.url, "BTCL2_BRIDGE": bridge.address}
    try:
        r.start()
        args = ["deposit", "--wallet", str(wallet), "--to", f"evm:{alice['l2_address']}", "--amount", "0.5"]
        waiting = subprocess.Popen(
            [sys.executable, "-m", "btcl2", *args, "--wait", "--wait-timeout", "60", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        wait_until(lambda: node.rpc.call("getrawmempool") != [], TIMEOUT, "the deposit in the mempool")
        mine(node, K, MINER.p2wpkh_address)
        stdout, stderr = waiting.communicate(timeout=TIMEOUT)
        assert waiting.returncode == 0, stderr
        done = json.loads(stdout)
        assert done["status"] == "minted" and done["amount_sats"] == 50_000_000
        assert balance(evm, stack, alice["l2_address"]) == 50_000_000

        evm.rpc("anvil_setBalance", alice["l2_address"], hex(10**18))  # gas for the burn
        btc_to = new_key().p2wpkh_address
        res = cli(
            "withdraw", "--from", "evm", "--key", str(wallet), "--amount", "0.1", "--btc-address", btc_to,
            "--json", env=env,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        withdrawal = json.loads(res.stdout)
        assert balance(evm, stack, alice["l2_address"]) == 40_000_000
        (event,) = evm.get_events(bridge, "WithdrawalRequested")
        # The printed id is the Bridge's content-bound bytes32 id: evm:0x<64 hex>, never a counter.
        assert "evm:0x" + bytes(event.args["id"]).hex() == withdrawal["id"]
        assert event.args["nonce"] == 0
        assert event.args["from"] == alice["l2_address"] and event.args["amount"] == 10_000_000
        assert event.args["script"] == address.address_to_script(btc_to, address.REGTEST)
        assert events_of(bridge, evm.rpc("eth_getLogs", {"address": bridge.address, "fromBlock": "0x0"}))
    finally:
        r.stop()
