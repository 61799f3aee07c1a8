"""The poster in the sequencer's process (`btcl2 sequencer run --post`) against the embedded regtest node.

Batches are anchored and go sealed -> anchored -> final; `btcl2 replay` matches the sequencer's root; a
crash at every failpoint leaves exactly one anchor per batch on chain; a stuck anchor is replaced (RBF)
and the replacement confirms; a reorg that drops a confirmed anchor puts it back to work.
"""

import hashlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from framework.node import RegtestNode
from framework.sequencer import SequencerProcess, fund_poster, poster_key_file
from framework.util import CoinPool, btc, mine, new_key, wait_until, with_extra_outputs

from btcl2.bitcoin import address
from btcl2.bitcoin.rpc import to_sats
from btcl2.bitcoin.tx import Tx, TxOut
from btcl2.core import eip712
from btcl2.core.anchor import decode_anchor_tx, is_authenticated_anchor
from btcl2.core.deposits import DepositKind, deposit_tag_script
from btcl2.core.params import Params
from btcl2.core.types import Address20, Sats, Transfer
from btcl2.failpoints import FAILPOINT_EXIT_CODE

pytestmark = pytest.mark.functional

PARAMS = Params()
K = PARAMS.k_deposit_confs
F = PARAMS.f_anchor_confs
FED_ADDRESS = address.script_to_address(PARAMS.federation_script_pubkey, address.REGTEST)
MINER = new_key()
USER_KEY = hashlib.sha256(b"poster test user").digest()
USER = "0x" + eip712.address_from_private_key(USER_KEY).hex()
DEST = "0x" + "ab" * 20


class Sequencer(SequencerProcess):
    """The sequencer with its poster; `anchor(n)` is batch n's anchoring status."""

    def anchor(self, batch: int) -> dict[str, Any]:
        result: dict[str, Any] = self.call("l2_getBatch", batch)["anchor"]
        return result


class World:
    """The node, the sequencer with its poster, and the L2 user's nonce."""

    def __init__(self, node: RegtestNode, seq: Sequencer, start: int) -> None:
        self.node, self.seq, self.start = node, seq, start
        self.nonce = 0

    def send(self) -> str:
        """Send one transfer; its hash."""
        fee = self.seq.call("l2_estimateFee")["minFee"]
        tx = Transfer(Address20(bytes.fromhex(DEST[2:])), Sats(1_000), Sats(fee), self.nonce)
        signed = eip712.sign(tx, USER_KEY, PARAMS.l2_chain_id)
        self.nonce += 1
        tx_hash: str = self.seq.call("l2_sendTransaction", "0x" + signed.encode().hex())["txHash"]
        return tx_hash

    def sealed_in(self, tx_hash: str) -> int:
        """The batch a transaction was sealed in."""
        return int(self.seq.call("l2_getTransaction", tx_hash)["batch"])

    def transfer(self) -> tuple[str, int]:
        """Send one transfer, wait until it is sealed; (tx hash, batch)."""
        tx_hash = self.send()
        wait_until(lambda: self.seq.call("l2_getTransaction", tx_hash)["batch"] is not None, 20, "sealing")
        return tx_hash, int(self.seq.call("l2_getTransaction", tx_hash)["batch"])

    def wait_status(self, batch: int, status: str, timeout: float = 20) -> dict[str, Any]:
        wait_until(lambda: self.seq.anchor(batch)["status"] == status, timeout, f"batch {batch} {status}")
        return self.seq.anchor(batch)

    def mine(self, n: int = 1) -> list[str]:
        return mine(self.node, n, MINER.p2wpkh_address)

    def mine_empty(self, n: int) -> None:
        for _ in range(n):
            self.node.call("generateblock", MINER.p2wpkh_address, [])

    def anchors_on_chain(self) -> Counter[int]:
        """Authenticated anchor transactions per batch number in the best chain since the start."""
        count: Counter[int] = Counter()
        for height in range(self.start, self.node.call("getblockcount") + 1):
            block = self.node.call("getblock", self.node.call("getblockhash", height), 3)
            for t in block["tx"][1:]:
                tx = Tx.from_hex(t["hex"])
                chunk = decode_anchor_tx(tx)
                prevout = t["vin"][0]["prevout"]
                spent = TxOut(to_sats(prevout["value"]), bytes.fromhex(prevout["scriptPubKey"]["hex"]))
                if chunk is not None and is_authenticated_anchor(tx, spent, PARAMS.poster_pubkey):
                    number = chunk.commitment.batch_number
                    origin = int(self.seq.call("l2_getBatch", number)["l1OriginHeight"])
                    assert tx.locktime == origin + K - 1 and height >= origin + K, (number, origin, height)
                    count[number] += 1
        return count

    def check_replay_and_anchors(self) -> None:
        """Every sealed batch anchored exactly once on chain, and replay reaches the sequencer's root."""
        head = self.seq.call("l2_status")
        counts = self.anchors_on_chain()
        assert counts == Counter(dict.fromkeys(range(head["headBatch"] + 1), 1)), counts
        cmd = [sys.executable, "-m", "btcl2", "replay", "--bitcoin-rpc", self.node.url]
        cmd += ["--bitcoin-cookie", str(self.node.cookie_file), "--from-height", str(self.start), "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        doc = json.loads(done.stdout)
        assert done.returncode == 0, doc["divergence"]
        assert doc["final_state_root"] == head["stateRoot"][2:] and doc["last_batch"] == head["headBatch"]
        assert not doc["conflicts"] and not doc["unauthenticated"]


@pytest.fixture(scope="module")
def world(node: RegtestNode, pool: CoinPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    datadir = tmp_path_factory.mktemp("poster")
    key = poster_key_file(datadir)
    fund_poster(node, pool, MINER.p2wpkh_address)
    start = node.call("getblockcount")
    seq = Sequencer(node, datadir, key)
    seq.start()
    w = World(node, seq, start)
    try:
        coin = pool.take()
        outs = {FED_ADDRESS: btc(100_000_000), MINER.p2wpkh_address: btc(coin.value - 100_000_000 - 2_000)}
        tag = TxOut(0, deposit_tag_script(DepositKind.L2, bytes.fromhex(USER[2:])))
        node.call("sendrawtransaction", with_extra_outputs(node, [coin], outs, [tag]))
        w.mine(K)
        wait_until(lambda: seq.call("l2_getBalance", USER)["balance"] > 0, 20, "deposit credited")
        yield w
    finally:
        seq.stop()


def test_sealed_anchored_final_and_replay(world: World) -> None:
    tx_hash, batch = world.transfer()
    assert world.seq.call("l2_getTransaction", tx_hash)["status"] == "sealed"
    sent = world.wait_status(batch, "broadcast")
    assert len(sent["txids"]) == 1 and sent["txids"][0] in world.node.call("getrawmempool")
    world.mine()
    wait_until(lambda: world.seq.call("l2_getTransaction", tx_hash)["status"] == "anchored", 20, "anchored")
    assert world.seq.anchor(batch)["confirmations"] == 1
    world.mine(F - 1)
    wait_until(lambda: world.seq.call("l2_getTransaction", tx_hash)["status"] == "final", 20, "final")
    final = world.seq.anchor(batch)
    assert final == {"status": "final", "txids": sent["txids"], "confirmations": F}
    # Every earlier batch (the deposit's) went the same way, in order.
    assert all(world.seq.anchor(n)["status"] == "final" for n in range(batch + 1))
    out = subprocess.run(
        [sys.executable, "-m", "btcl2", "poster", "status", "--sequencer-rpc", world.seq.url, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    rows = json.loads(out.stdout)
    assert out.returncode == 0 and rows[batch] == {"batch": batch, **final}
    world.check_replay_and_anchors()


@pytest.mark.parametrize(
    "point",
    [
        "poster.after_journal",
        "poster.after_broadcast",
        "poster.after_broadcast_record",
        "poster.after_confirm_record",
    ],
)
def test_crash_at_failpoint(world: World, point: str) -> None:
    seq = world.seq
    seq.stop()
    seq.start(failpoint=point)
    before = seq.log.read_text().count(f"FAILPOINT {point}")
    if point == "poster.after_confirm_record":
        _, batch = world.transfer()
        world.wait_status(batch, "broadcast")
        world.mine()
        assert seq.wait_exit() == FAILPOINT_EXIT_CODE
    else:
        tx_hash = world.send()  # the process dies as soon as its batch is posted
        assert seq.wait_exit() == FAILPOINT_EXIT_CODE
    assert seq.log.read_text().count(f"FAILPOINT {point}") == before + 1
    seq.start()
    if point != "poster.after_confirm_record":
        batch = world.sealed_in(tx_hash)
    world.wait_status(batch, "anchored" if point == "poster.after_confirm_record" else "broadcast")
    world.mine()
    world.wait_status(batch, "anchored")
    world.check_replay_and_anchors()


@pytest.mark.parametrize("point", [None, "poster.bump.after_journal", "poster.bump.after_broadcast"])
def test_stuck_anchor_is_bumped(world: World, point: str | None) -> None:
    seq = world.seq
    seq.stop()
    seq.start(failpoint=point)
    _, batch = world.transfer()
    first = world.wait_status(batch, "broadcast")["txids"]
    world.mine_empty(3)  # blocks without the anchor: it is stuck for bump_after (3) blocks
    if point is not None:
        assert seq.wait_exit() == FAILPOINT_EXIT_CODE
        seq.start()
    wait_until(lambda: seq.anchor(batch)["txids"] != first, 20, "a replacement")
    bumped = seq.anchor(batch)["txids"]
    wait_until(lambda: bumped[0] in world.node.call("getrawmempool"), 20, "the replacement in the mempool")
    assert first[0] not in world.node.call("getrawmempool")
    entry = world.node.call("getmempoolentry", bumped[0])
    assert entry["fees"]["base"] > 0
    world.mine()
    anchored = world.wait_status(batch, "anchored")
    assert anchored["txids"] == bumped
    world.check_replay_and_anchors()


def test_reorg_drops_confirmed_anchor(world: World) -> None:
    seq = world.seq
    tx_hash, batch = world.transfer()
    txids = world.wait_status(batch, "broadcast")["txids"]
    (block,) = world.mine()
    world.wait_status(batch, "anchored")
    assert seq.call("l2_getTransaction", tx_hash)["status"] == "anchored"
    world.node.call("invalidateblock", block)
    world.mine_empty(2)  # a longer competing branch without the anchor
    wait_until(lambda: seq.anchor(batch)["status"] == "broadcast", 20, "the anchor unconfirmed again")
    assert seq.call("l2_getTransaction", tx_hash)["status"] == "sealed"
    assert set(seq.anchor(batch)["txids"]) & set(world.node.call("getrawmempool"))
    world.mine()
    assert world.wait_status(batch, "anchored")["txids"] == txids  # the same transaction, back in a block
    world.check_replay_and_anchors()


def test_reorg_below_the_anchors_locktime(world: World) -> None:
    """A reorg back to the batch's L1 origin: the anchor (nLockTime origin + K - 1) leaves the mempool, the
    next block cannot hold it (replay would reject an origin with fewer than K confirmations), and the
    poster sends the same transaction again once the chain reaches its lock time."""
    seq = world.seq
    _, batch = world.transfer()
    origin = int(seq.call("l2_getBatch", batch)["l1OriginHeight"])
    txids = world.wait_status(batch, "broadcast")["txids"]
    assert world.node.call("getblockcount") == origin + K - 1  # the earliest the poster could send it
    world.mine()
    world.wait_status(batch, "anchored")
    world.node.call("invalidateblock", world.node.call("getblockhash", origin + 1))
    assert not set(txids) & set(world.node.call("getrawmempool"))  # non-final at the next height
    (early,) = world.mine()  # the first block of the new branch, from the mempool
    assert not set(txids) & set(world.node.call("getblock", early)["tx"])
    in_pool = lambda: set(txids) <= set(world.node.call("getrawmempool"))  # noqa: E731
    wait_until(in_pool, 20, "the same anchor sent again once final for the next block")
    world.mine()
    assert world.wait_status(batch, "anchored")["txids"] == txids
    world.check_replay_and_anchors()
