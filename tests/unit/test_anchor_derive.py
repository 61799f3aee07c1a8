"""The derivation pipeline over an in-memory chain: matches, divergences, duplicates, the LevelDB store."""

import hashlib
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from btcl2.bitcoin.block import Block, BlockHeader
from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.sign import PrevoutInfo, sign_transaction
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.core.anchor import Codec, encode_anchor_outputs
from btcl2.core.attestation import Attestation, aggregate, bitmap_of, secret_from_seed, sign_message
from btcl2.core.deposits import Deposit, DepositKind, deposit_tag_script
from btcl2.core.eip712 import address_from_private_key, sign
from btcl2.core.exits import exit_records, exits_root
from btcl2.core.params import Params
from btcl2.core.state import State
from btcl2.core.transition import build_batch, transactions_root
from btcl2.core.types import Batch, Hash32, Sats, Transfer
from btcl2.derive.l1 import RpcBlockSource
from btcl2.derive.pipeline import Derivation, Outcome
from btcl2.derive.store import DerivedStore
from btcl2.errors import Critical, ReorgDetected

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framework.forge import forge_p2wpkh_lookalike

PARAMS = Params()
ATTESTATION_SECRETS = [
    secret_from_seed(hashlib.sha256(b"btcl2 devnet attestation %d" % i).digest()) for i in (1, 2, 3)
]
ALICE_KEY = hashlib.sha256(b"alice").digest()
ALICE = address_from_private_key(ALICE_KEY)
BOB = address_from_private_key(hashlib.sha256(b"bob").digest())


class FakeChain:
    """A list of blocks linked by parent hash; the BlockSource the pipeline reads."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.mine([])

    def mine(self, txs: list[Tx]) -> int:
        height = len(self.blocks)
        prev = self.blocks[-1].hash if self.blocks else bytes(32)
        coinbase = Tx(
            2, (TxIn(OutPoint(bytes(32), 0xFFFFFFFF), bytes([1, height % 256, 7])),), (TxOut(0, b"\x51"),), 0
        )
        self.blocks.append(Block(BlockHeader(1, prev, bytes(32), height, 0x207FFFFF, 0), (coinbase, *txs)))
        return height

    def hash(self, height: int) -> Hash32:
        return Hash32(self.blocks[height].hash)

    def tip_height(self) -> int:
        return len(self.blocks) - 1

    def blocks_at(self, heights: range) -> list[tuple[bytes, Block]]:
        return [(self.blocks[h].hash, self.blocks[h]) for h in heights]


SPENT: dict[OutPoint, TxOut] = {}
"""The output each test transaction's first input spends, as a node's undo data would say."""


class Source:
    def __init__(self, chain: FakeChain) -> None:
        self.chain = chain
        self.prevout_reads = 0

    def tip_height(self) -> int:
        return self.chain.tip_height()

    def blocks(self, heights: range) -> list[tuple[bytes, Block]]:
        return self.chain.blocks_at(heights)

    def first_prevouts(self, block_hash: bytes) -> dict[bytes, TxOut]:
        self.prevout_reads += 1
        (block,) = [b for b in self.chain.blocks if b.hash == block_hash]
        return {tx.txid: SPENT.get(tx.vin[0].prevout, TxOut(0, b"\x51")) for tx in block.txs[1:]}


def deposit_tx(n: int, amount: int = 500_000) -> Tx:
    outs = (
        TxOut(amount, PARAMS.federation_script_pubkey),
        TxOut(0, deposit_tag_script(DepositKind.L2, ALICE)),
    )
    return Tx(2, (TxIn(OutPoint(hashlib.sha256(b"dep%d" % n).digest(), 0)),), outs, 0)


POSTER_KEY = PrivateKey(hashlib.sha256(b"btcl2 devnet poster").digest())
OTHER_KEY = PrivateKey(hashlib.sha256(b"someone else").digest())


def signed_by(tx: Tx, key: PrivateKey) -> Tx:
    """`tx` with its first input a signed P2WPKH spend of an output of `key` (recorded in SPENT)."""
    op = tx.vin[0].prevout
    SPENT[op] = TxOut(100_000, p2wpkh(hash160(key.pubkey())))
    result = sign_transaction(tx, [key], {op: PrevoutInfo(SPENT[op].script_pubkey, SPENT[op].value)})
    assert result.complete
    return result.tx


def forged(tx: Tx) -> Tx:
    """`tx` spending a P2TR output whose script-path witness looks like the poster's P2WPKH spend."""
    lookalike = forge_p2wpkh_lookalike(PARAMS.poster_pubkey)
    op = OutPoint(hashlib.sha256(b"forged" + tx.vin[0].prevout.encode()).digest(), 0)
    SPENT[op] = TxOut(100_000, lookalike.script_pubkey)
    return replace(tx, vin=(TxIn(op, witness=lookalike.witness), *tx.vin[1:]))


def anchor_txs(
    batch: Batch, codec: Codec = Codec.LZMA, size: int = 99_000, key: PrivateKey | None = POSTER_KEY
) -> list[Tx]:
    """The anchor transactions of `batch`, each signed by `key` (unsigned when None)."""
    txs = [
        Tx(2, (TxIn(OutPoint(hashlib.sha256(batch.hash + bytes([i])).digest(), 0)),), tuple(outs), 0)
        for i, outs in enumerate(encode_anchor_outputs(batch, codec, size))
    ]
    return txs if key is None else [signed_by(tx, key) for tx in txs]


def attestation_tx(batch: Batch, secrets: list[int] = ATTESTATION_SECRETS[:2]) -> Tx:
    """The poster's transaction carrying an attestation of `batch` by `secrets` (signers 1 and 2 of 3)."""
    roots = (batch.hash, batch.header.post_state_root, exits_root(exit_records(batch, PARAMS.l2_chain_id)))
    unsigned = Attestation(batch.header.number, *roots, 0, b"")
    message = unsigned.message(PARAMS.l2_chain_id)
    signature = aggregate([sign_message(secret, message) for secret in secrets])
    record = replace(unsigned, signers=bitmap_of([0, 1]), signature=signature)
    op = OutPoint(hashlib.sha256(b"attest" + batch.hash + bytes(len(secrets))).digest(), 0)
    return signed_by(Tx(2, (TxIn(op),), (record.output(),), 0), POSTER_KEY)


def setup_chain() -> tuple[FakeChain, list[Batch], State]:
    """Deposit at height 1; batch 0 credits it (origin 2, anchored at 4, K = 2); batch 1 is a transfer."""
    chain = FakeChain()
    dep = deposit_tx(0)
    chain.mine([dep])
    origin = chain.mine([])
    chain.mine([])  # the origin is K deep before its batch is anchored
    credit = Deposit(OutPoint(dep.txid, 0), DepositKind.L2, ALICE, Sats(500_000)).credit()
    b0 = build_batch(State(), PARAMS, [credit], [], (origin, chain.hash(origin)), 100)
    chain.mine(anchor_txs(b0.batch))
    t = sign(Transfer(BOB, Sats(1_000), Sats(10), 0), ALICE_KEY, PARAMS.l2_chain_id)
    b1 = build_batch(b0.state, PARAMS, [], [t], (origin + 1, chain.hash(origin + 1)), 101)
    chain.mine(anchor_txs(b1.batch))
    return chain, [b0.batch, b1.batch], b1.state


def test_replay_matches_and_writes_store(tmp_path: Path) -> None:
    chain, batches, state = setup_chain()
    chain.mine(anchor_txs(batches[0]))  # identical repeat: a no-op
    store = DerivedStore(tmp_path / "db")
    out = Derivation(Source(chain), PARAMS, store=store).run()
    assert out.divergence is None
    assert out.state.root == state.root and len(out.applied) == 2
    assert out.repeats == 1 and out.progress.transfers == 1 and out.progress.deposits_credited == 1
    head = store.head()
    assert head is not None and head[0] == 1 and head[2] == state.root
    leaf = store.tree(state.root).get(BOB)
    assert leaf is not None and store.account_leaf(leaf) == state.account(BOB).encode()
    store.close()


def test_to_batch_missing_and_conflict() -> None:
    chain, batches, _ = setup_chain()
    out = Derivation(Source(chain), PARAMS, to_batch=2).run()
    assert out.divergence is not None and out.divergence.finding.error == "MissingBatch"
    other = replace(batches[1], header=replace(batches[1].header, timestamp=999))
    chain.mine(anchor_txs(other))
    out = Derivation(Source(chain), PARAMS).run()
    assert out.divergence is None and out.conflicts[0].finding.error == "ConflictingAnchor"


def test_wrong_root_then_valid_anchor_supersedes() -> None:
    chain, batches, _ = setup_chain()
    bad = replace(batches[1], header=replace(batches[1].header, post_state_root=Hash32(b"\x01" * 32)))
    chain.blocks.pop()  # drop the good batch 1 anchor, put the bad one first
    chain.mine(anchor_txs(bad))
    out = Derivation(Source(chain), PARAMS).run()
    div = out.divergence
    assert div is not None and div.batch_number == 1 and div.finding.error == "RootMismatch"
    assert div.finding.got == "01" * 32 and div.finding.expected is not None
    chain.mine(anchor_txs(batches[1]))
    out = Derivation(Source(chain), PARAMS).run()
    assert out.divergence is None and out.superseded[0].finding.error == "RootMismatch"


def test_skipped_deposit_and_missing_chunk() -> None:
    chain = FakeChain()
    chain.mine([deposit_tx(1)])
    origin = chain.mine([])
    chain.mine([])
    skipping = build_batch(State(), PARAMS, [], [], (origin, chain.hash(origin)), 100).batch
    chain.mine(anchor_txs(skipping))
    out = Derivation(Source(chain), PARAMS).run()
    assert out.divergence is not None and out.divergence.finding.error == "MissingDeposit"
    chain2 = FakeChain()
    origin = chain2.mine([])
    txs = anchor_txs(
        build_batch(State(), PARAMS, [], [], (origin, chain2.hash(origin)), 1).batch, Codec.NONE, 150
    )
    assert len(txs) >= 2
    chain2.mine(txs[1:])
    out = Derivation(Source(chain2), PARAMS).run()
    assert out.divergence is not None and "missing chunk 0 of" in out.divergence.finding.message


def test_bad_transaction_is_named() -> None:
    chain, batches, _ = setup_chain()
    good = batches[1]
    t = good.transactions[0]
    forged = replace(t, signature=t.signature[:64] + bytes([55]))
    bad = replace(
        good,
        transactions=(forged,),
        header=replace(good.header, transactions_root=transactions_root([forged])),
    )
    chain.blocks.pop()
    chain.mine(anchor_txs(bad))
    out = Derivation(Source(chain), PARAMS).run()
    div = out.divergence
    assert div is not None and div.finding.error == "BadSignature"
    assert div.finding.transaction == forged.tx_hash.hex()


def test_unauthenticated_anchor_is_ignored() -> None:
    """Others anchor a valid batch 1 first: signed by another key, unsigned, and a taproot script-path spend
    whose witness has the shape of the poster's P2WPKH spend. All ignored and reported; the poster's applies."""
    chain, batches, state = setup_chain()
    genuine = chain.blocks.pop()
    origin = 3
    empty = build_batch(
        State(), PARAMS, [], [], (origin, chain.hash(origin)), 200
    )  # not even on batch 0's state: it does not matter, it is never read
    takeover = replace(batches[1], transactions=(), header=replace(batches[1].header, timestamp=5))
    lookalike = replace(batches[1], transactions=(), header=replace(batches[1].header, timestamp=6))
    chain.mine(
        [
            *anchor_txs(takeover, key=OTHER_KEY),
            *anchor_txs(empty.batch, key=None),
            *[forged(tx) for tx in anchor_txs(lookalike, key=None)],
        ]
    )
    chain.blocks.append(replace(genuine, header=replace(genuine.header, prev_hash=chain.blocks[-1].hash)))
    out = Derivation(Source(chain), PARAMS).run()
    assert out.divergence is None and out.state.root == state.root
    assert [u.finding.error for u in out.unauthenticated] == ["UnauthenticatedAnchor"] * 3
    assert [u.batch_number for u in out.unauthenticated] == [1, 0, 1]
    assert not out.conflicts and not out.superseded


def test_forged_attestation_record_is_ignored() -> None:
    """A bad attestation record fails replay only when the poster wrote it: a look-alike spend is ignored."""
    chain, batches, _ = setup_chain()
    bad = attestation_tx(batches[0], [secret_from_seed(b"attacker")])
    chain.mine([forged(bad)])
    out = Derivation(Source(chain), PARAMS).run()
    assert out.divergence is None and out.attestations is not None and not out.attestations.failures
    chain.mine([bad])  # the same record in the poster's own transaction does count
    out = Derivation(Source(chain), PARAMS).run()
    assert out.divergence is not None and out.divergence.finding.error == "BadAggregate"


def test_origin_with_fewer_than_k_confirmations_is_rejected() -> None:
    """A batch anchored in the block right after its L1 origin credited from an origin only 1 deep."""
    chain = FakeChain()
    origin = chain.mine([])
    batch = build_batch(State(), PARAMS, [], [], (origin, chain.hash(origin)), 100).batch
    chain.mine(anchor_txs(batch))
    out = Derivation(Source(chain), PARAMS).run()
    assert out.divergence is not None and out.divergence.finding.error == "L1OriginTooRecent"


def _fork(chain: FakeChain, height: int) -> None:
    """Replace the blocks from `height` on by one empty block of another branch (other header time)."""
    del chain.blocks[height:]
    prev = chain.blocks[-1].hash
    coinbase = chain.blocks[0].txs[0]
    chain.blocks.append(Block(BlockHeader(1, prev, bytes(32), 10_000 + height, 0x207FFFFF, 1), (coinbase,)))


def test_stale_batches_after_a_reorg_fail_nothing() -> None:
    """A reorg took batch 0's origin: its anchors (and batch 1's, built on it) confirm again in the new
    branch as stale, fail nothing, and batch 0 sealed again on the new branch applies."""
    chain, batches, _ = setup_chain()  # origin of batch 0 at 2, anchors at 4 and 5
    _fork(chain, 2)
    chain.mine([])
    chain.mine([*anchor_txs(batches[0]), *anchor_txs(batches[1])])  # back from the mempool, mined again
    out = Derivation(Source(chain), PARAMS).run()
    assert out.divergence is None and not out.applied and not out.conflicts
    assert [(s.batch_number, s.finding.error) for s in out.stale] == [
        (0, "L1OriginReorged"),
        (1, "L1OriginReorged"),
    ]
    dep = chain.blocks[1].txs[1]
    credit = Deposit(OutPoint(dep.txid, 0), DepositKind.L2, ALICE, Sats(500_000)).credit()
    again = build_batch(State(), PARAMS, [credit], [], (3, chain.hash(3)), 102)
    chain.mine(anchor_txs(again.batch))
    chain.mine(anchor_txs(batches[0]))  # another copy of the stale version after the new one applied
    chain.mine([attestation_tx(batches[0])])  # the members attested the old version while it was valid
    out = Derivation(Source(chain), PARAMS).run()
    assert out.divergence is None and out.state.root == again.state.root and len(out.applied) == 1
    assert [s.batch_number for s in out.stale] == [0, 1, 0] and not out.conflicts
    assert out.attestations is not None and out.attestations.stale == 1 and not out.attestations.failures
    chain.mine([attestation_tx(again.batch)])
    out = Derivation(Source(chain), PARAMS).run()
    assert out.attestations is not None and list(out.attestations.attested) == [0]
    # A batch whose origin hash names no block of the scanned chain at a height it has is the same case;
    # one whose origin height lies outside the scanned range is still a divergence.
    far = build_batch(again.state, PARAMS, [], [], (50, chain.hash(3)), 103).batch
    chain.mine(anchor_txs(far))
    out = Derivation(Source(chain), PARAMS).run()
    assert out.divergence is not None and out.divergence.finding.error == "L1OriginMismatch"


class CountingSource(Source):
    """A Source that counts the block heights read."""

    def __init__(self, chain: FakeChain) -> None:
        super().__init__(chain)
        self.read = 0

    def blocks(self, heights: range) -> list[tuple[bytes, Block]]:
        self.read += len(heights)
        return super().blocks(heights)


def _summary(out: Outcome) -> tuple[object, ...]:
    return (
        out.state.root,
        [a.number for a in out.applied],
        [(s.batch_number, s.finding.error) for s in out.stale],
        [(c.batch_number, c.finding.error) for c in out.conflicts],
        out.repeats,
        None if out.divergence is None else (out.divergence.batch_number, out.divergence.finding.error),
    )


def test_follow_reads_new_blocks_only_and_matches_a_fresh_run() -> None:
    """`follow` after `run`: the same outcome as a run from scratch at every tip, reading each block once
    while the chain only grows, starting over after a reorg."""
    chain, batches, _ = setup_chain()
    source = CountingSource(chain)
    follower = Derivation(source, PARAMS)
    assert _summary(follower.run()) == _summary(Derivation(Source(chain), PARAMS).run())
    assert source.read == len(chain.blocks)
    assert source.prevout_reads == 2  # only the two blocks holding the poster's anchors
    half = anchor_txs(batches[1], size=400)  # batch 1 again, in two chunks: the first alone is incomplete
    assert len(half) > 1
    chain.mine(half[:1])
    out = follower.follow()
    assert _summary(out) == _summary(Derivation(Source(chain), PARAMS).run())
    assert out.repeats == 0 and source.read == len(chain.blocks) + 1  # the new block, and one to check
    chain.mine(half[1:])
    chain.mine(anchor_txs(batches[0]))
    out = follower.follow()
    assert _summary(out) == _summary(Derivation(Source(chain), PARAMS).run())
    assert out.repeats >= 2 and out.divergence is None
    # A reorg below the last block scanned: the follower starts over and agrees with a fresh run again.
    _fork(chain, 2)
    chain.mine([])
    chain.mine([*anchor_txs(batches[0]), *anchor_txs(batches[1])])
    out = follower.follow()
    assert _summary(out) == _summary(Derivation(Source(chain), PARAMS).run())
    assert [s.batch_number for s in out.stale] == [0, 1] and not out.applied
    # A chain now shorter than what was scanned: starts over too.
    del chain.blocks[3:]
    assert _summary(follower.follow()) == _summary(Derivation(Source(chain), PARAMS).run())


class CannedRPC:
    """One getblock verbosity 3 reply, as Core's JSON (amounts parsed as Decimal by the client)."""

    def __init__(self, reply: object) -> None:
        self.reply = reply

    def call(self, method: str, *params: object) -> object:
        assert method == "getblock" and params[1] == 3
        return self.reply


def test_first_prevouts_parses_core_replies_exactly() -> None:
    txid = "ab" * 32
    spk = p2wpkh(bytes(20))
    prevout = {
        "generated": False,
        "height": 7,
        "value": Decimal("20999999.97690000"),
        "scriptPubKey": {"hex": spk.hex()},
    }
    tx = {"txid": txid, "vin": [{"txid": "cd" * 32, "vout": 0, "prevout": prevout}]}
    reply = {"tx": [{"txid": "00" * 32, "vin": [{"coinbase": "00"}]}, tx]}
    spent = RpcBlockSource(CannedRPC(reply)).first_prevouts(bytes(32))  # type: ignore[arg-type]
    assert spent == {bytes.fromhex(txid)[::-1]: TxOut(2_099_999_997_690_000, spk)}
    # Without undo data (the block left the chain) Core omits "prevout": scan again.
    no_undo = {"tx": [reply["tx"][0], {"txid": txid, "vin": [{"txid": "cd" * 32, "vout": 0}]}]}
    with pytest.raises(ReorgDetected):
        RpcBlockSource(CannedRPC(no_undo)).first_prevouts(bytes(32))  # type: ignore[arg-type]
    # An amount with sub-satoshi precision, or a float, is not a node's reply.
    for value in (Decimal("0.000000001"), 0.1):
        bad = {"tx": [reply["tx"][0], {**tx, "vin": [{"prevout": {**prevout, "value": value}}]}]}
        with pytest.raises(Critical):
            RpcBlockSource(CannedRPC(bad)).first_prevouts(bytes(32))  # type: ignore[arg-type]
