"""Bitcoin reorgs played at the worst moment against `btcl2 sequencer run --post` (the embedded regtest node,
or a real bitcoind under `make test-core`: only invalidateblock, reconsiderblock, generatetoaddress,
generateblock and sendrawtransaction move the chain).

After every reorg sequence `btcl2 replay` and the sequencer agree on every batch: the sequencer's batches are
the ones replay derives from the best chain. A flip-back reorg makes the sequencer adopt the original anchor
again; a reorg deeper than K that mines a credited deposit again credits it once, at its new height; the
rolled-back transactions (a withdrawal among them) are sealed again first, in order, and cannot be replaced.
"""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from framework.node import RegtestNode
from framework.sequencer import SequencerProcess, fund_poster, poster_key_file
from framework.util import Coin, CoinPool, btc, mine, new_key, wait_until, with_extra_outputs

from btcl2.bitcoin import address
from btcl2.bitcoin.tx import TxOut
from btcl2.core import eip712
from btcl2.core.deposits import DepositKind, deposit_tag_script
from btcl2.core.params import Params
from btcl2.core.types import Address20, Sats, SignedTx, Transfer, Withdrawal

pytestmark = pytest.mark.functional

PARAMS = Params()
K = PARAMS.k_deposit_confs
FED_ADDRESS = address.script_to_address(PARAMS.federation_script_pubkey, address.REGTEST)
MINER = new_key()
DEPOSIT = 100_000_000
DEST = Address20(bytes.fromhex("cd" * 20))


class World:
    """One sequencer with its poster, started at the node's tip, and one funded L2 user."""

    def __init__(self, node: RegtestNode, pool: CoinPool, datadir: Path) -> None:
        self.node, self.pool = node, pool
        fund_poster(node, pool, MINER.p2wpkh_address)
        self.start = node.call("getblockcount")
        self.seq = SequencerProcess(node, datadir, poster_key_file(datadir))
        self.key = os.urandom(32)
        self.user = "0x" + eip712.address_from_private_key(self.key).hex()
        self.nonce = 0
        self.coins: dict[str, Coin] = {}
        """The coin each deposit spends, by its txid."""

    def deposit(self) -> str:
        """Broadcast a deposit to the user (not mined); its txid."""
        coin = self.pool.take()
        outs = {FED_ADDRESS: btc(DEPOSIT), MINER.p2wpkh_address: btc(coin.value - DEPOSIT - 2_000)}
        tag = TxOut(0, deposit_tag_script(DepositKind.L2, bytes.fromhex(self.user[2:])))
        txid: str = self.node.call("sendrawtransaction", with_extra_outputs(self.node, [coin], outs, [tag]))
        self.coins[txid] = coin
        return txid

    def kill9_and_restart(self) -> None:
        assert self.seq.proc is not None
        os.kill(self.seq.proc.pid, signal.SIGKILL)
        self.seq.proc.wait(10)
        self.seq.start()

    def deposit_status(self, txid: str) -> str | None:
        status: str | None = self.seq.request("l2_getDeposit", txid, 0).get("result", {}).get("status")
        return status

    def sign(self, tx: Transfer | Withdrawal) -> SignedTx:
        return eip712.sign(tx, self.key, PARAMS.l2_chain_id)

    def transfer(self, fee: int = 1_000) -> SignedTx:
        signed = self.sign(Transfer(DEST, Sats(1_000), Sats(fee), self.nonce))
        self.nonce += 1
        return signed

    def withdrawal(self, fee: int = 1_000) -> SignedTx:
        signed = self.sign(Withdrawal(Sats(50_000), Sats(fee), self.nonce, new_key().p2wpkh_script))
        self.nonce += 1
        return signed

    def send(self, signed: SignedTx) -> str:
        tx_hash: str = self.seq.call("l2_sendTransaction", "0x" + signed.encode().hex())["txHash"]
        return tx_hash

    def sealed(self, tx_hash: str) -> dict[str, Any]:
        wait_until(lambda: self.seq.call("l2_getTransaction", tx_hash)["batch"] is not None, 30, "sealing")
        result: dict[str, Any] = self.seq.call("l2_getTransaction", tx_hash)
        return result

    def mine(self, n: int = 1, to: str = MINER.p2wpkh_address) -> list[str]:
        return mine(self.node, n, to)

    def mine_empty(self, n: int) -> list[str]:
        """n blocks without transactions, to a fresh address (never a copy of an invalidated block)."""
        to = new_key().p2wpkh_address
        return [self.node.call("generateblock", to, [])["hash"] for _ in range(n)]

    def batch(self, number: int) -> dict[str, Any]:
        result: dict[str, Any] = self.seq.call("l2_getBatch", number)
        return result

    def anchor_all(self) -> None:
        """Mine until every sealed batch is anchored: a block when the head batch's anchor waits in the
        mempool or the chain is below its lock time (origin + K - 1), else give the poster time to send it."""

        def anchored() -> bool:
            batch = self.batch(self.seq.call("l2_status")["headBatch"])
            status = batch["anchor"]["status"]
            tip = self.node.call("getblockcount")
            # An anchor is mined at origin + K at the earliest: a status claiming one sooner comes from the
            # poster's journal of the version a roll-back replaced, before the poster's next round forgets it.
            if status in ("anchored", "final") and tip >= batch["l1OriginHeight"] + K:
                return True
            if status in ("broadcast", "anchored", "final") or tip < batch["l1OriginHeight"] + K - 1:
                self.mine()
            return False

        wait_until(anchored, 60, "the head batch anchored")

    def replay(self) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "btcl2", "replay", "--bitcoin-rpc", self.node.url, "--json"]
        cmd += ["--bitcoin-cookie", str(self.node.cookie_file), "--from-height", str(self.start)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        doc: dict[str, Any] = json.loads(done.stdout)
        assert done.returncode == 0, (doc["divergence"], doc["conflicts"])
        return doc

    def check_agreement(self) -> dict[str, Any]:
        """Replay from Bitcoin alone and the sequencer agree on every batch's hash and root."""
        self.anchor_all()

        def replayed_head() -> bool:
            # The poster anchors a resealed version in a later round than the status shows (its journal still
            # held the replaced version's anchor): mine until replay reaches the sequencer's head batch.
            nonlocal doc
            doc = self.replay()
            if doc["last_batch"] == self.seq.call("l2_status")["headBatch"]:
                return True
            self.mine()
            return False

        doc: dict[str, Any] = {}
        wait_until(replayed_head, 90, "replay reaching the sequencer's head batch")
        head = self.seq.call("l2_status")
        assert doc["last_batch"] == head["headBatch"] and doc["final_state_root"] == head["stateRoot"][2:], (doc, head)
        assert [b["number"] for b in doc["applied"]] == list(range(head["headBatch"] + 1))
        for applied in doc["applied"]:
            mine_ = self.batch(applied["number"])
            assert (mine_["hash"][2:], mine_["postStateRoot"][2:]) == (
                applied["hash"],
                applied["post_state_root"],
            )
        assert not doc["conflicts"], doc["conflicts"]
        return doc


@pytest.fixture
def node(node_factory: Callable[..., RegtestNode]) -> RegtestNode:
    """A node of its own for each test, unlike other modules: a reorg leaves the old branch's anchors and
    deposits in the node's mempool (some non-final until a later height), and mined into the next test's
    chain they would be batches of a sequencer that test never started."""
    return node_factory("reorg")


@pytest.fixture
def pool(node: RegtestNode) -> CoinPool:
    """Mature coinbase outputs on the test's node."""
    return CoinPool.fund(node, n_mature=10)


@pytest.fixture
def world(node: RegtestNode, pool: CoinPool, tmp_path: Path) -> Iterator[World]:
    w = World(node, pool, tmp_path)
    w.seq.start()
    try:
        yield w
    finally:
        w.seq.stop()


def _credit(w: World) -> tuple[str, int]:
    """A deposit to the user, mined and credited; (txid, height of its block)."""
    txid = w.deposit()
    (block,) = w.mine()
    w.mine(K - 1)
    wait_until(lambda: w.deposit_status(txid) == "credited", 30, "deposit credited")
    return txid, int(w.node.call("getblock", block)["height"])


def test_flip_back_reorg_adopts_the_original_anchor(world: World) -> None:
    """Batch 1's origin reorged out (the sequencer seals it again on the new branch), then the old branch is
    best again: the original batch 1, validly anchored there, is what replay applies, so the sequencer adopts
    it instead of sealing a third version; batch 2 then extends it and replay matches every batch."""
    w = world
    _credit(w)
    w.anchor_all()
    first = w.sealed(w.send(w.transfer()))["batch"]
    w.anchor_all()
    original = w.batch(first)
    origin = w.node.call("getblockhash", original["l1OriginHeight"])
    w.node.call("invalidateblock", origin)
    new_branch = w.mine(4, new_key().p2wpkh_address)  # never a copy of an invalidated block
    wait_until(lambda: w.batch(first)["hash"] != original["hash"], 30, f"batch {first} sealed again")
    w.anchor_all()
    assert w.batch(first)["l1OriginHash"] != original["l1OriginHash"]
    # Flip back: the old branch (holding the original batch's origin and anchor) is the best chain again.
    w.node.call("reconsiderblock", origin)
    w.node.call("invalidateblock", new_branch[0])
    old_branch = new_key().p2wpkh_address
    while w.node.call("getblockcount") < int(w.node.call("getblock", new_branch[-1])["height"]) + 1:
        w.mine(1, old_branch)
    wait_until(
        lambda: w.batch(first)["hash"] == original["hash"], 30, f"batch {first} adopted from the chain"
    )
    later = w.sealed(w.send(w.transfer()))["batch"]
    assert later > first
    doc = w.check_agreement()
    assert doc["applied"][first]["hash"] == original["hash"][2:]


@pytest.mark.parametrize("depth", [4, 6])
def test_deep_reorg_mines_a_credited_deposit_again(world: World, depth: int) -> None:
    """A reorg deeper than K removes the block of a credited deposit (after the withdrawal spending it is
    anchored past F) and the deposit is mined again later on the new branch. The sequencer rolls back, keeps
    the rolled-back withdrawal unreplaceable while it waits for the deposit, credits it once at its new height
    and seals the withdrawal and the transfer after it again first, in their order."""
    w = world
    txid, height = _credit(w)
    withdrawal, transfer = w.withdrawal(), w.transfer()
    w_hash, t_hash = w.send(withdrawal), w.send(transfer)
    before = (w.sealed(w_hash), w.sealed(t_hash))
    while w.node.call("getblockcount") < height + depth - 1:
        w.mine()
    assert w.node.call("getblockcount") == height + depth - 1
    w.node.call("invalidateblock", w.node.call("getblockhash", height))
    w.mine_empty(depth + 1)  # the deposit waits in the node's mempool
    wait_until(lambda: w.seq.call("l2_getTransaction", w_hash)["status"] == "pending", 30, "the roll-back")
    status = w.seq.call("l2_status")
    assert status["halted"] is not None and txid in status["halted"], w.seq.log.read_text()[-5000:]
    w.kill9_and_restart()  # the owed deposit and the rolled-back transactions are in the database
    assert txid in w.seq.call("l2_status")["halted"]
    replacement = w.sign(Withdrawal(Sats(1_000_000), Sats(5_000), withdrawal.tx.nonce, DEST_SCRIPT))
    err = w.seq.request("l2_sendTransaction", "0x" + replacement.encode().hex())["error"]
    assert err["data"]["reason"] == "ResealedNotReplaceable", err
    assert w.seq.call("l2_getTransaction", w_hash)["status"] == "pending"
    # The deposit is mined again (from the node's mempool) and reaches K confirmations at its new height.
    (block,) = w.mine()
    assert txid in w.node.call("getblock", block)["tx"]
    w.mine(K - 1)
    again = (w.sealed(w_hash), w.sealed(t_hash))
    assert (again[0]["batch"], again[0]["index"] + 1) == (again[1]["batch"], again[1]["index"]), (
        before,
        again,
    )
    record = w.seq.call("l2_getDeposit", txid, 0)
    mined_at = int(w.node.call("getblock", block)["height"])
    assert record["status"] == "credited"
    assert record["confirmations"] == w.node.call("getblockcount") - mined_at + 1
    assert w.seq.call("l2_status")["halted"] is None
    doc = w.check_agreement()
    assert doc["deposited_sats"] == DEPOSIT and doc["deposits_credited"] == 1
    assert doc["withdrawn_sats"] == withdrawal.tx.amount


@pytest.mark.parametrize("depth", [4, 6])
def test_deep_reorg_mines_a_credited_deposit_in_its_first_block(world: World, depth: int) -> None:
    """The new branch's first block holds the credited deposit again (it left the old branch's block for
    the node's mempool): the sequencer rolls back, credits it once at its new height and seals the withdrawal
    again, without exiting; replay agrees."""
    w = world
    txid, height = _credit(w)
    withdrawal = w.withdrawal()
    w_hash = w.send(withdrawal)
    w.sealed(w_hash)
    while w.node.call("getblockcount") < height + depth - 1:
        w.mine()
    w.node.call("invalidateblock", w.node.call("getblockhash", height))
    first = w.mine(depth + 1, new_key().p2wpkh_address)[0]
    assert txid in w.node.call("getblock", first)["tx"]
    mined_at = int(w.node.call("getblock", first)["height"])

    def credited_again() -> bool:
        record = w.seq.request("l2_getDeposit", txid, 0).get("result")  # not found while it is re-seen
        if record is None or record["status"] != "credited":
            return False
        at_new_height = record["confirmations"] == w.node.call("getblockcount") - mined_at + 1
        return at_new_height and w.seq.call("l2_getTransaction", w_hash)["batch"] is not None

    wait_until(credited_again, 30, "the deposit credited again at its new height")
    assert w.seq.proc is not None and w.seq.proc.poll() is None
    assert w.seq.call("l2_status")["halted"] is None
    doc = w.check_agreement()
    assert doc["deposited_sats"] == DEPOSIT and doc["deposits_credited"] == 1
    assert doc["withdrawn_sats"] == withdrawal.tx.amount


def test_credited_deposit_double_spent_by_a_deep_reorg_halts_and_stays_up(world: World) -> None:
    """The new branch double-spends a credited deposit: it never comes back. The sequencer rolls back, then
    stays up sealing nothing, l2_status says which deposit and what to do, and nothing is credited twice or
    from thin air; the process does not exit (a supervisor would restart it in a loop)."""
    w = world
    txid, height = _credit(w)
    w_hash = w.send(w.withdrawal())
    w.sealed(w_hash)
    while w.node.call("getblockcount") < height + 3:
        w.mine()
    w.node.call("invalidateblock", w.node.call("getblockhash", height))
    coin = w.coins[txid]
    spend = with_extra_outputs(w.node, [coin], {MINER.p2wpkh_address: btc(coin.value - 5_000)}, [])
    w.node.call("generateblock", new_key().p2wpkh_address, [spend])
    w.mine_empty(4)
    wait_until(lambda: w.seq.call("l2_status")["halted"] is not None, 30, "the halt")
    status = w.seq.call("l2_status")
    assert txid in status["halted"] and "sendrawtransaction" in status["halted"]
    assert status["headBatch"] is None and w.seq.call("l2_getTransaction", w_hash)["status"] == "pending"
    w.mine(K + 1)
    wait_until(
        lambda: w.seq.call("l2_status")["bitcoinTip"]["height"] == w.node.call("getblockcount"), 30, "tip"
    )
    assert w.seq.call("l2_status")["headBatch"] is None and w.seq.call("l2_status")["halted"] is not None
    assert w.seq.proc is not None and w.seq.proc.poll() is None
    assert w.seq.call("l2_getBalance", w.user)["balance"] == 0


DEST_SCRIPT = new_key().p2wpkh_script
