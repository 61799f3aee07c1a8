"""`btcl2 replay` against the real embedded node: anchors posted with sendrawtransaction, replay run as a
user runs it (a subprocess), every divergence named, a reorg dropping an anchor."""

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from framework.forge import forge_p2wpkh_lookalike
from framework.node import RegtestNode
from framework.util import CoinPool, mine, new_key

from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.sign import PrevoutInfo, sign_transaction
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.core.anchor import build_anchor_transactions, encode_anchor_outputs
from btcl2.core.attestation import Attestation, bitmap_of, secret_from_seed, sign_message
from btcl2.core.deposits import DepositKind, deposit_tag_script
from btcl2.core.eip712 import address_from_private_key, sign
from btcl2.core.exits import exit_records, exits_root
from btcl2.core.params import Params
from btcl2.core.state import State
from btcl2.core.transition import BuiltBatch, build_batch
from btcl2.core.types import Address20, Batch, DepositCredit, Hash32, Sats, SignedTx, Transfer, Withdrawal
from btcl2.derive.l1 import RpcBlockSource
from btcl2.derive.pipeline import DepositIndex, Derivation
from btcl2.derive.store import DerivedStore
from btcl2.sequencer.anchors import ChainAnchors

pytestmark = pytest.mark.functional

PARAMS = Params()
ALICE_KEY = hashlib.sha256(b"replay alice").digest()
BOB_KEY = hashlib.sha256(b"replay bob").digest()
ALICE = address_from_private_key(ALICE_KEY)
BOB = address_from_private_key(BOB_KEY)
FEE_RATE = 2
# Anchors count only when signed by the poster key (Params.poster_pubkey): the devnet one is public.
POSTER_KEY = PrivateKey(hashlib.sha256(b"btcl2 devnet poster").digest())
POSTER_SPK = p2wpkh(hash160(POSTER_KEY.pubkey()))


class L2:
    """The test's own sequencer: builds batches with the pure core and anchors them on the node."""

    def __init__(self, node: RegtestNode, pool: CoinPool, from_height: int) -> None:
        self.node, self.key = node, pool.key
        self.from_height = from_height
        self.state = State()
        self.nonces = {ALICE: 0, BOB: 0}
        # Split one coinbase into many anchor funding coins, so anchors never chain in the mempool.
        coin = pool.take()
        op = OutPoint(bytes.fromhex(coin.txid)[::-1], coin.vout)
        outs = tuple(TxOut(20_000_000, POSTER_SPK) for _ in range(40))
        outs += (TxOut(coin.value - 40 * 20_000_000 - 10_000, pool.key.p2wpkh_script),)
        tx = self.signed(Tx(2, (TxIn(op),), outs, 0), [(op, TxOut(coin.value, pool.key.p2wpkh_script))])
        self.send(tx)
        self.coins = [(OutPoint(tx.txid, i), o) for i, o in enumerate(tx.vout[:40])]
        self.deposit_coin = pool.take()

    def signed(self, tx: Tx, coins: list[tuple[OutPoint, TxOut]]) -> Tx:
        prevouts = {op: PrevoutInfo(o.script_pubkey, o.value) for op, o in coins}
        result = sign_transaction(tx, [self.key.priv], prevouts)
        assert result.complete
        return result.tx

    def send(self, tx: Tx) -> str:
        (accept,) = self.node.call("testmempoolaccept", [tx.hex()])
        assert accept["allowed"], accept
        txid: str = self.node.call("sendrawtransaction", tx.hex())
        return txid

    def mine(self, n: int = 1) -> list[str]:
        return mine(self.node, n, self.key.p2wpkh_address)

    def tip(self) -> tuple[int, Hash32]:
        height = self.node.call("getblockcount")
        return height, Hash32(bytes.fromhex(self.node.call("getblockhash", height))[::-1])

    def safe_tip(self) -> tuple[int, Hash32]:
        """The L1 origin the sequencer would pick: the tip less K - 1 blocks."""
        height = self.node.call("getblockcount") - PARAMS.k_deposit_confs + 1
        return height, Hash32(bytes.fromhex(self.node.call("getblockhash", height))[::-1])

    def deposit(self, recipient: Address20, amount: int) -> None:
        """Pay the federation with an L2 tag from the deposit coin, keeping the change for the next one."""
        c = self.deposit_coin
        op = OutPoint(bytes.fromhex(c.txid)[::-1], c.vout)
        outs = (
            TxOut(amount, PARAMS.federation_script_pubkey),
            TxOut(0, deposit_tag_script(DepositKind.L2, recipient)),
            TxOut(c.value - amount - 2_000, self.key.p2wpkh_script),
        )
        tx = self.signed(Tx(2, (TxIn(op),), outs, 0), [(op, TxOut(c.value, self.key.p2wpkh_script))])
        self.send(tx)
        self.deposit_coin = replace(c, txid=tx.txid_hex, vout=2, value=outs[2].value)

    def eligible_credits(self, origin: int) -> list[DepositCredit]:
        index = DepositIndex(PARAMS)
        source = RpcBlockSource(self.node.rpc)
        for height, (_, block) in zip(
            range(self.from_height, origin + 1),
            source.blocks(range(self.from_height, origin + 1)),
            strict=True,
        ):
            index.add_block(height, block)
        credited = self.state.credited_deposits
        return [d.credit() for d in index.eligible_at(origin) if d.outpoint not in credited]

    def transfers(self, n: int) -> list[SignedTx]:
        txs = []
        for i in range(n):
            sender_key, sender, to = (ALICE_KEY, ALICE, BOB) if i % 2 == 0 else (BOB_KEY, BOB, ALICE)
            tx = Transfer(to, Sats(1_000 + (i * 7919) % 50_000), Sats(100 + i % 7), self.nonces[sender])
            self.nonces[sender] += 1
            txs.append(sign(tx, sender_key, PARAMS.l2_chain_id))
        return txs

    def build(self, txs: list[SignedTx], skip_deposits: bool = False) -> BuiltBatch:
        origin = self.safe_tip()
        credits = [] if skip_deposits else self.eligible_credits(origin[0])
        built = build_batch(self.state, PARAMS, credits, txs, origin, 1_700_000_000 + origin[0])
        assert not built.rejected, built.rejected
        return built

    def anchor(self, batch: Batch) -> list[Tx]:
        return self.anchor_outputs(encode_anchor_outputs(batch))

    def anchor_outputs(self, outputs: list[list[TxOut]], send: bool = True) -> list[Tx]:
        coins, self.coins = self.coins[: len(outputs)], self.coins[len(outputs) :]
        txs = build_anchor_transactions(outputs, coins, POSTER_SPK, FEE_RATE, POSTER_KEY)
        if send:
            for tx in txs:
                self.send(tx)
        return txs


def replay(node: RegtestNode, l2: L2, *extra: str) -> tuple[int, dict[str, Any], str]:
    cmd = [sys.executable, "-m", "btcl2", "replay", "--bitcoin-rpc", node.url]
    cmd += ["--bitcoin-cookie", str(node.cookie_file), "--from-height", str(l2.from_height), "--json", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout), done.stdout


def test_replay_end_to_end(node: RegtestNode, pool: CoinPool, tmp_path: Path) -> None:
    start = node.call("getblockcount") + 1
    l2 = L2(node, pool, start)
    l2.deposit(ALICE, 100_000_000)
    l2.mine()
    l2.deposit(BOB, 50_000_000)
    l2.mine(2)

    # Batches 0..2: the two deposits, transfers, a withdrawal; all match.
    b0 = l2.build([])
    assert len(b0.batch.header.deposits) == 2
    l2.state = b0.state
    b1 = l2.build(l2.transfers(6))
    l2.state = b1.state
    w = sign(
        Withdrawal(Sats(20_000), Sats(100), l2.nonces[BOB], p2wpkh(hash160(new_key().pubkey))), BOB_KEY, 7702
    )
    l2.nonces[BOB] += 1
    b2 = l2.build([w, *l2.transfers(4)])
    l2.state = b2.state
    for b in (b0, b1, b2):
        l2.anchor(b.batch)
    l2.mine()
    code, doc, _ = replay(node, l2)
    assert code == 0 and doc["final_state_root"] == b2.state.root.hex()
    assert doc["batches"] == 3 and doc["deposits_credited"] == 2 and doc["withdrawals"] == 1

    # Batch 3: a changed data byte, then a wrong root, each named; then the real one supersedes them.
    b3 = l2.build(l2.transfers(10))
    (outs,) = encode_anchor_outputs(b3.batch)
    spk = bytearray(outs[1].script_pubkey)
    spk[-1] ^= 0x01
    l2.anchor_outputs([[outs[0], TxOut(0, bytes(spk)), *outs[2:]]])
    l2.mine()
    code, doc, _ = replay(node, l2)
    assert code == 1 and doc["divergence"]["batch"] == 3 and doc["divergence"]["error"] == "DataHashMismatch"
    bad_root = replace(b3.batch, header=replace(b3.batch.header, post_state_root=Hash32(b"\x77" * 32)))
    l2.anchor(bad_root)
    l2.mine()
    code, doc, _ = replay(node, l2)
    assert code == 1 and doc["rejected"][1]["error"] == "RootMismatch"
    assert doc["rejected"][1]["got"] == "77" * 32 and doc["rejected"][1]["expected"] == b3.state.root.hex()
    l2.anchor(b3.batch)
    l2.mine()
    l2.state = b3.state
    code, doc, _ = replay(node, l2)
    assert code == 0 and doc["batches"] == 4 and len(doc["superseded"]) == 2

    # Batch 4 needs two transactions: chunk data swapped between them, then chunk 1 alone (chunk 0
    # missing), then chunk 0: chunks mined in reverse order still match.
    b4 = l2.build(l2.transfers(1_600))
    outputs = encode_anchor_outputs(b4.batch)
    assert len(outputs) == 2
    l2.anchor_outputs([[outputs[0][0], *outputs[1][1:]], [outputs[1][0], *outputs[0][1:]]])
    l2.mine()
    code, doc, _ = replay(node, l2)
    assert code == 1 and doc["divergence"]["batch"] == 4 and doc["divergence"]["error"] == "DataHashMismatch"
    l2.anchor_outputs([outputs[1]])
    l2.mine()
    code, doc, _ = replay(node, l2)
    assert code == 1 and any(r["message"] == "missing chunk 0 of 2" for r in doc["rejected"])
    l2.anchor_outputs([outputs[0]])
    l2.mine()
    l2.state = b4.state
    code, doc, _ = replay(node, l2)
    assert code == 0 and doc["final_state_root"] == b4.state.root.hex() and doc["transfers"] == 1_620

    # Batch 5 skips an eligible deposit: forced inclusion fails, naming it; the honest batch 5 fixes it.
    l2.deposit(ALICE, 30_000_000)
    l2.mine(2)
    skipping = l2.build(l2.transfers(2), skip_deposits=True)
    l2.anchor(skipping.batch)
    l2.mine()
    code, doc, _ = replay(node, l2)
    assert code == 1 and doc["divergence"]["batch"] == 5 and doc["divergence"]["error"] == "MissingDeposit"
    text = subprocess.run(
        [
            sys.executable,
            "-m",
            "btcl2",
            "replay",
            "--bitcoin-rpc",
            node.url,
            "--bitcoin-cookie",
            str(node.cookie_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert text.returncode == 1 and "DIVERGENCE: batch 5: MissingDeposit: eligible deposit" in text.stdout
    for sender in (ALICE, BOB):
        l2.nonces[sender] -= 1
    b5 = l2.build(l2.transfers(2))
    assert len(b5.batch.header.deposits) == 1
    l2.anchor(b5.batch)
    l2.anchor(b0.batch)  # an identical repeat: ignored
    l2.mine()
    l2.state = b5.state
    datadir = tmp_path / "derived"
    code, doc, _ = replay(node, l2, "--datadir", str(datadir), "--report", str(tmp_path / "r.json"))
    assert code == 0 and doc["final_state_root"] == b5.state.root.hex() and doc["repeated_anchors"] == 1
    assert json.loads((tmp_path / "r.json").read_text()) == doc
    store = DerivedStore(datadir)
    try:
        head = store.head()
        assert head is not None and head[0] == 5 and head[2] == b5.state.root
    finally:
        store.close()

    # A reorg drops batch 6's anchor: replay of the new chain reports it missing; re-mined, it matches.
    b6 = l2.build(l2.transfers(2))
    l2.anchor(b6.batch)
    (anchor_block,) = l2.mine()
    code, doc, _ = replay(node, l2, "--to-batch", "6")
    assert code == 0 and doc["final_state_root"] == b6.state.root.hex()
    node.call("invalidateblock", anchor_block)
    code, doc, _ = replay(node, l2, "--to-batch", "6")
    assert code == 1 and doc["divergence"]["batch"] == 6 and doc["divergence"]["error"] == "MissingBatch"
    if not node.call("getrawmempool"):
        pytest.fail("the disconnected anchor did not return to the mempool")
    mine(node, 1, new_key().p2wpkh_address)  # another coinbase, so not the invalidated block again
    code, doc, _ = replay(node, l2, "--to-batch", "6")
    assert code == 0 and doc["final_state_root"] == b6.state.root.hex()


def _forged_txs(l2: L2, pool: CoinPool, forged: Batch, attestation: Attestation) -> list[Tx]:
    """The attacker's anchor of `forged` and its attestation record, each spending a P2TR output whose
    script-path witness has the shape of the poster's P2WPKH spend (tests/framework/forge.py): no poster key."""
    lookalike = forge_p2wpkh_lookalike(PARAMS.poster_pubkey)
    coin = pool.take()
    op = OutPoint(bytes.fromhex(coin.txid)[::-1], coin.vout)
    outs = (TxOut(200_000, lookalike.script_pubkey), TxOut(200_000, lookalike.script_pubkey))
    outs += (TxOut(coin.value - 400_000 - 5_000, pool.key.p2wpkh_script),)
    funding = l2.signed(Tx(2, (TxIn(op),), outs, 0), [(op, TxOut(coin.value, pool.key.p2wpkh_script))])
    l2.send(funding)  # an ordinary standard transaction
    l2.mine()
    (anchor_outs,) = encode_anchor_outputs(forged)
    spends = [TxIn(OutPoint(funding.txid, i), witness=lookalike.witness) for i in (0, 1)]
    return [Tx(2, (spends[0],), tuple(anchor_outs), 0), Tx(2, (spends[1],), (attestation.output(),), 0)]


def test_forged_anchor_and_attestation_are_ignored(node: RegtestNode, pool: CoinPool) -> None:
    """Without the poster key an attacker mines (generateblock: consensus-valid, non-standard by policy) a
    batch 1 of its own ahead of the poster's and a garbage attestation record. Replay, the signers' and
    relayer's pipeline and the sequencer's ChainAnchors ignore both; the honest chain goes on."""
    start = node.call("getblockcount") + 1
    l2 = L2(node, pool, start)
    l2.deposit(ALICE, 100_000_000)
    l2.mine(3)
    b0 = l2.build([])
    l2.state = b0.state
    l2.anchor(b0.batch)
    l2.mine()
    # A valid batch 1 that would win if its anchor counted: it censors Alice's transfer below.
    takeover = l2.build([])
    roots = (
        b0.batch.hash,
        b0.batch.header.post_state_root,
        exits_root(exit_records(b0.batch, PARAMS.l2_chain_id)),
    )
    unsigned = Attestation(0, *roots, 0, b"")
    garbage = sign_message(secret_from_seed(b"attacker"), unsigned.message(PARAMS.l2_chain_id))
    record = replace(unsigned, signers=bitmap_of([0, 1]), signature=garbage)
    forged = _forged_txs(l2, pool, takeover.batch, record)
    mined = node.call("generateblock", new_key().p2wpkh_address, [tx.hex() for tx in forged])
    block = node.call("getblock", mined["hash"], 3)
    assert [tx["txid"] for tx in block["tx"][1:]] == [tx.txid_hex for tx in forged]
    prevout = block["tx"][1]["vin"][0]["prevout"]  # the shape Core >= 25 gives (undo data, no txindex)
    assert set(prevout) == {"generated", "height", "value", "scriptPubKey"}
    assert prevout["value"] == Decimal("0.002") and prevout["generated"] is False
    assert prevout["scriptPubKey"]["hex"] == forge_p2wpkh_lookalike(PARAMS.poster_pubkey).script_pubkey.hex()

    b1 = l2.build(l2.transfers(1))
    assert b1.state.root != takeover.state.root
    l2.anchor(b1.batch)
    l2.mine()
    l2.state = b1.state
    code, doc, _ = replay(node, l2)
    assert [a["hash"] for a in doc["applied"]] == [b0.batch.hash.hex(), b1.batch.hash.hex()]
    assert doc["final_state_root"] == b1.state.root.hex()
    assert code == 0, doc["divergence"]
    assert [(u["batch"], u["anchors"][0]["txid"]) for u in doc["unauthenticated"]] == [
        (1, forged[0].txid_hex)
    ]
    assert not doc["attestation_failures"] and not doc["conflicts"]

    # The pipeline signers, coordinator and relayer run in process; and the sequencer's own anchor scan.
    out = Derivation(RpcBlockSource(node.rpc), PARAMS, start).run()
    assert out.divergence is None and [a.hash for a in out.applied] == [
        b0.batch.hash.hex(),
        b1.batch.hash.hex(),
    ]
    assert out.attestations is not None and not out.attestations.failures
    hashes = {1: takeover.batch.hash}
    anchors = ChainAnchors(node.rpc, PARAMS, start, hashes.get)
    anchors.refresh()
    assert anchors.anchor_height(1) is None
    hashes[1] = b1.batch.hash
    assert anchors.anchor_height(1) == node.call("getblockcount")
