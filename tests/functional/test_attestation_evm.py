"""The EVM side of attestations and exits against a real anvil (--hardfork prague, EIP-2537 precompiles) and a
regtest node: Solidity hash-to-curve equals py-ecc's, the Bridge accepts a valid aggregate and refuses a bad one,
one with too few signers, a non-member's and a tampered message; it accepts an attestation only with SPV proofs
that its anchor and its record are K deep (an attacker copying the aggregate from the mempool is refused), keeps
one version while its anchor is on the light client's best chain and takes another once a reorg dropped it; the
relayer reports a CONFLICT when the Bridge holds another version than its replay; an exit is minted once."""

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from framework.node import RegtestNode
from framework.util import CoinPool, btc, build_block, build_block_on, mine, new_key, with_extra_outputs
from py_ecc.bls.hash_to_curve import hash_to_G2
from py_ecc.optimized_bls12_381.optimized_curve import normalize

from btcl2.audit.attestations import attestation_conflicts, bridge_attestations
from btcl2.bitcoin.block import Block, merkle_root
from btcl2.bitcoin.rpc import SyncBitcoinRPC
from btcl2.bitcoin.tx import Tx
from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.attest import (
    AttestationProofs,
    ConfirmedAttestation,
    attestation_args,
    attestation_proofs,
    attested_batch,
    g2_from_eip2537,
    is_attested,
    mint_exit,
    submit_attestation,
)
from btcl2.bridge.deploy import REGTEST_GENESIS, BridgeConfig, Deployment, deploy_bridge_stack
from btcl2.bridge.evm import Contract, ContractRevert, EvmClient, account, events_of
from btcl2.bridge.journal import AttestStatus, RelayerStore
from btcl2.bridge.relayer import RelayerConfig
from btcl2.bridge.service import RelayerSetup, build_relayer
from btcl2.bridge.spv import headers_bytes, mint_proof
from btcl2.core.anchor import AnchorChunk, Codec, Commitment
from btcl2.core.attestation import (
    DST,
    Attestation,
    aggregate,
    bitmap_of,
    secret_from_seed,
    sign_message,
)
from btcl2.core.exits import exits_root, prove_exit
from btcl2.core.params import Params
from btcl2.core.types import Address20, ExitRecord, Hash32, Sats
from btcl2.derive.frames import AnchorRef
from btcl2.storage.db import Database

pytestmark = pytest.mark.functional

PARAMS = Params()
SECRETS = [secret_from_seed(hashlib.sha256(b"btcl2 devnet attestation %d" % i).digest()) for i in (1, 2, 3)]
OWNER, USER, OTHER, RELAYER = (account(k) for k in ANVIL_DEV_KEYS[:4])
K = PARAMS.k_deposit_confs
MINER = new_key()
FEE = 5_000


@dataclass
class Chain:
    evm: EvmClient
    dep: Deployment
    verifier: Contract
    node: RegtestNode
    pool: CoinPool

    @property
    def rpc(self) -> SyncBitcoinRPC:
        return self.node.rpc  # type: ignore[no-any-return]

    def mine(self, n: int) -> None:
        """Mine n blocks and give the light client every best-chain header it lacks."""
        mine(self.node, n, MINER.p2wpkh_address)
        self.sync_headers()

    def sync_headers(self) -> None:
        lc = self.dep.light_client
        cursor: str = self.rpc.call("getbestblockhash")
        missing: list[bytes] = []
        while not self.evm.call(lc, "isInBestChain", bytes.fromhex(cursor)[::-1]):
            missing.append(bytes.fromhex(self.rpc.call("getblockheader", cursor, False)))
            cursor = self.rpc.call("getblockheader", cursor)["previousblockhash"]
        for i in range(len(missing), 0, -100):
            self.evm.transact(
                lc, "submitHeaders", b"".join(reversed(missing[max(0, i - 100) : i])), sender=USER
            )

    def send(self, extra: list[Any]) -> str:
        """A transaction carrying `extra` outputs, sent to the node's mempool; its txid (display order)."""
        coin = self.pool.take()
        signed = with_extra_outputs(self.node, [coin], {MINER.p2wpkh_address: btc(coin.value - FEE)}, extra)
        return str(self.rpc.call("sendrawtransaction", signed))

    def publish(self, att: Attestation) -> tuple[AnchorRef, AnchorRef]:
        """An anchor transaction of the attested batch and the attestation transaction, mined in one block
        (1 confirmation); their places."""
        commitment = Commitment(
            Codec.NONE, att.batch_number, att.batch_hash, att.post_state_root, Hash32(bytes(32)), 1
        )
        anchor = self.send(AnchorChunk(commitment, 0, b"batch").outputs())
        record = self.send([att.output()])
        self.mine(1)
        height = int(self.rpc.call("getblockcount"))
        return AnchorRef(anchor, height), AnchorRef(record, height)

    def deep(self, att: Attestation) -> AttestationProofs:
        """The attestation's anchor and record published and K deep; their proofs."""
        anchor, record = self.publish(att)
        self.mine(K - 1)
        return attestation_proofs(self.rpc, att.batch_number, anchor, record)


@pytest.fixture(scope="module")
def pool(node: RegtestNode) -> CoinPool:
    """Two coins per attestation put on Bitcoin (its anchor and its record)."""
    return CoinPool.fund(node, n_mature=40)


@pytest.fixture(scope="module")
def chain(node: RegtestNode, pool: CoinPool) -> Iterator[Chain]:
    with Anvil(hardfork="prague") as anvil:
        evm = EvmClient(anvil.url)
        config = BridgeConfig.for_params(PARAMS, REGTEST_GENESIS, OWNER.address, OWNER.address)
        dep = deploy_bridge_stack(evm, OWNER, config)
        assert dep.attestation_verifier is not None
        c = Chain(evm, dep, dep.attestation_verifier, node, pool)
        c.sync_headers()
        yield c


def _attest(
    number: int, exits: bytes, signers: list[int], secrets: list[int] | None = None, version: bytes = b""
) -> Attestation:
    unsigned = Attestation(
        number,
        Hash32(hashlib.sha256(b"batch %d%s" % (number, version)).digest()),
        Hash32(hashlib.sha256(b"root %d" % number).digest()),
        Hash32(exits),
        0,
        b"",
    )
    message = unsigned.message(PARAMS.l2_chain_id)
    keys = secrets if secrets is not None else [SECRETS[i] for i in signers]
    sig = aggregate([sign_message(s, message) for s in keys])
    return replace(unsigned, signers=bitmap_of(signers), signature=sig)


def test_hash_to_curve_matches_py_ecc(chain: Chain) -> None:
    rng = random.Random(7)
    messages = [b"", b"abc", b"BL2M" + bytes(113)] + [rng.randbytes(rng.randrange(0, 300)) for _ in range(57)]
    for message in messages:
        got = bytes(chain.evm.call(chain.verifier, "hashToG2", message))
        x, y = normalize(hash_to_G2(message, DST, hashlib.sha256))
        want = ((int(x.coeffs[0]), int(x.coeffs[1])), (int(y.coeffs[0]), int(y.coeffs[1])))
        assert g2_from_eip2537(got) == want, message.hex()


def test_verifier_message_equals_python(chain: Chain) -> None:
    att = _attest(5, b"\x07" * 32, [0, 1])
    got = bytes(
        chain.evm.call(chain.verifier, "message", 5, att.batch_hash, att.post_state_root, att.exits_root)
    )
    assert got == att.message(PARAMS.l2_chain_id)


def test_bad_attestations_are_refused(chain: Chain) -> None:
    bridge = chain.dep.bridge
    good = _attest(1, b"\x00" * 32, [0, 2])
    cases = {
        "TooFewSigners": _attest(1, b"\x00" * 32, [1]),
        "UnknownSigner": replace(good, signers=good.signers | 1 << 5),
        "BadAggregate": replace(good, post_state_root=Hash32(b"\x01" * 32)),
        "BadAggregate ": replace(good, signers=bitmap_of([0, 1])),
    }
    outsider = secret_from_seed(hashlib.sha256(b"not a member").digest())
    cases["BadAggregate  "] = _attest(1, b"\x00" * 32, [0, 2], [SECRETS[0], outsider])
    for name, att in cases.items():
        proofs = chain.deep(att)
        with pytest.raises(ContractRevert) as info:
            submit_attestation(chain.evm, bridge, att, proofs, USER)
        assert info.value.name == name.strip(), (name, str(info.value))
    assert not is_attested(chain.evm, bridge, 1)


def test_exit_minted_once_against_attested_root(chain: Chain) -> None:
    bridge, wbtc = chain.dep.bridge, chain.dep.wbtc
    recipient = Address20(bytes.fromhex(OTHER.address[2:]))
    records = [
        ExitRecord(
            Hash32(hashlib.sha256(b"exit %d" % i).digest()),
            Address20(b"\x11" * 20),
            Sats(20_000 + i),
            recipient,
        )
        for i in range(5)
    ]
    root = exits_root(records)
    proof = prove_exit(records, records[3].exit_id)
    assert proof.verify(root)
    with pytest.raises(ContractRevert) as info:
        mint_exit(chain.evm, bridge, 2, proof, USER)
    assert info.value.name == "BatchNotAttested"
    att = _attest(2, root, [0, 1, 2])
    proofs = chain.deep(att)
    receipt = submit_attestation(chain.evm, bridge, att, proofs, USER)
    assert receipt.status == 1 and is_attested(chain.evm, bridge, 2)
    with pytest.raises(ContractRevert) as info:
        submit_attestation(chain.evm, bridge, att, proofs, USER)
    assert info.value.name == "BatchAlreadyAttested"
    before = chain.evm.call(wbtc, "balanceOf", OTHER.address)
    forged = replace(proof, record=replace(proof.record, amount=Sats(10**8)))
    with pytest.raises(ContractRevert) as info:
        mint_exit(chain.evm, bridge, 2, forged, USER)
    assert info.value.name == "BadExitProof"
    assert mint_exit(chain.evm, bridge, 2, proof, USER).status == 1
    assert chain.evm.call(wbtc, "balanceOf", OTHER.address) == before + records[3].amount
    with pytest.raises(ContractRevert) as info:
        mint_exit(chain.evm, bridge, 2, proof, USER)
    assert info.value.name == "ExitAlreadyMinted"
    args = attestation_args(att, proofs)
    assert len(args[5]) == 256


def _reverts(chain: Chain, att: Attestation, proofs: AttestationProofs) -> str:
    with pytest.raises(ContractRevert) as info:
        submit_attestation(chain.evm, chain.dep.bridge, att, proofs, USER)
    return info.value.name


def test_attestation_before_its_anchor_is_k_deep_is_refused(chain: Chain) -> None:
    """The attack: copy the aggregate as soon as it is on Bitcoin and submit it before its anchor is K deep
    (a reorg could still replace that batch version). Refused; the same, K deep, is accepted."""
    att = _attest(10, b"\x05" * 32, [0, 1])
    anchor, record = chain.publish(att)
    shallow = attestation_proofs(chain.rpc, 10, anchor, record)
    assert K > 1 and _reverts(chain, att, shallow) == "InsufficientConfirmations"
    unknown = replace(shallow, anchor=replace(shallow.anchor, block_hash=b"\x42" * 32))
    assert _reverts(chain, att, unknown) == "BlockNotInBestChain"
    chain.mine(K - 1)
    deep = attestation_proofs(chain.rpc, 10, anchor, record)
    # The anchor must name this batch and the record these exact fields.
    other = chain.deep(_attest(10, b"\x05" * 32, [0, 1], version=b"'"))
    assert _reverts(chain, att, replace(deep, anchor=other.anchor)) == "NotBatchOutput"
    assert _reverts(chain, att, replace(deep, record=other.record)) == "NotBatchOutput"
    assert _reverts(chain, replace(att, signers=bitmap_of([0, 1, 2])), deep) == "NotBatchOutput"
    siblings = (b"\x13" * 32, *deep.record.merkle_proof[1:])
    bad_branch = replace(deep, record=replace(deep.record, merkle_proof=siblings))
    assert _reverts(chain, att, bad_branch) == "BadMerkleProof"
    assert not is_attested(chain.evm, chain.dep.bridge, 10)
    assert submit_attestation(chain.evm, chain.dep.bridge, att, deep, USER).status == 1
    assert attested_batch(chain.evm, chain.dep.bridge, 10) == (
        att.batch_hash,
        att.post_state_root,
        att.exits_root,
    )


def _fork_light_client(chain: Chain, fork_at: str, blocks: int, txs: list[Tx]) -> list[Block]:
    """A heavier branch from block `fork_at`, built and mined here and given to the light client only (the
    node keeps its chain); its first block also carries `txs` (the light client checks headers, not scripts)."""
    first = build_block_on(chain.node, fork_at, MINER.p2wpkh_script, tag=900)
    body = (first.txs[0], *txs)
    branch = [_solve(Block(replace(first.header, merkle_root=merkle_root([t.txid for t in body])), body))]
    height = int(chain.rpc.call("getblockheader", fork_at)["height"]) + 1
    for i in range(1, blocks):
        prev = branch[-1]
        branch.append(
            build_block(prev.hash_hex, height + i - 1, prev.header.time, MINER.p2wpkh_script, 900 + i)
        )
    chain.evm.transact(chain.dep.light_client, "submitHeaders", headers_bytes(branch), sender=USER)
    return branch


def _solve(block: Block) -> Block:
    header = block.header
    target = (header.bits & 0xFFFFFF) << (8 * ((header.bits >> 24) - 3))
    while int.from_bytes(header.hash, "little") > target:
        header = replace(header, nonce=header.nonce + 1)
    return Block(header, block.txs)


def test_a_version_whose_anchor_left_the_best_chain_is_replaced(chain: Chain) -> None:
    """Batch 11 is attested from an anchor K deep; another version cannot displace it while that anchor's
    block is on the light client's best chain; once a heavier branch without it is the light client's best
    chain, a K-deep anchor and record of the new version replace it (AttestationReplaced)."""
    first = _attest(11, b"\x06" * 32, [0, 1])
    anchor, record = chain.publish(first)
    chain.mine(K - 1)
    proofs = attestation_proofs(chain.rpc, 11, anchor, record)
    assert submit_attestation(chain.evm, chain.dep.bridge, first, proofs, USER).status == 1
    second = _attest(11, b"\x07" * 32, [1, 2], version=b"'")
    commitment = Commitment(Codec.NONE, 11, second.batch_hash, second.post_state_root, Hash32(bytes(32)), 1)
    coins = [chain.pool.take(), chain.pool.take()]
    txs = [
        Tx.from_hex(with_extra_outputs(chain.node, [c], {MINER.p2wpkh_address: btc(c.value - FEE)}, extra))
        for c, extra in zip(
            coins, (AnchorChunk(commitment, 0, b"v2").outputs(), [second.output()]), strict=True
        )
    ]
    fork_at = str(chain.rpc.call("getblockhash", anchor.height - 1))
    tip = int(chain.rpc.call("getblockcount"))
    branch = _fork_light_client(chain, fork_at, tip - anchor.height + 2, txs)
    assert chain.evm.call(chain.dep.light_client, "confirmations", proofs.anchor.block_hash) == 0
    new = AttestationProofs(mint_proof(branch[0], txs[0].txid, 1), mint_proof(branch[0], txs[1].txid, 1))
    receipt = submit_attestation(chain.evm, chain.dep.bridge, second, new, USER)
    names = [e.name for e in events_of(chain.dep.bridge, receipt.logs)]
    assert receipt.status == 1 and "AttestationReplaced" in names
    assert attested_batch(chain.evm, chain.dep.bridge, 11) == (
        second.batch_hash,
        second.post_state_root,
        second.exits_root,
    )
    assert _reverts(chain, second, new) == "BatchAlreadyAttested"
    # The node's chain gets heavier again: the light client follows it back, the second version's anchor
    # left its best chain, and the first version, proven again, replaces it in turn.
    chain.mine(len(branch) + 1)
    assert submit_attestation(chain.evm, chain.dep.bridge, first, proofs, USER).status == 1
    assert attested_batch(chain.evm, chain.dep.bridge, 11) == (
        first.batch_hash,
        first.post_state_root,
        first.exits_root,
    )


class _Fixed:
    """An AttestationSource that holds what a replay found (the relayer's view under test)."""

    def __init__(self, found: list[ConfirmedAttestation]) -> None:
        self.found = found

    def confirmed(self, min_confirmations: int) -> list[ConfirmedAttestation]:
        return self.found


def test_relayer_reports_a_conflicting_attested_version(chain: Chain, tmp_path: Path) -> None:
    """The Bridge holds version A of batch 12; the relayer's replay has version B: the relayer records a
    CONFLICT (not already_attested), names it in `conflicts` and in its journal report, and logs it."""
    from btcl2.bridge.service import journal_report

    held = _attest(12, b"\x08" * 32, [0, 2])
    assert submit_attestation(chain.evm, chain.dep.bridge, held, chain.deep(held), USER).status == 1
    mine_version = _attest(12, b"\x09" * 32, [0, 1], version=b"'")
    anchor, record = chain.publish(mine_version)
    chain.mine(K - 1)
    store = RelayerStore(Database(tmp_path / "relayer"))
    try:
        setup = RelayerSetup(
            tmp_path,
            chain.node.url,
            str(chain.node.cookie_file),
            chain.evm,
            chain.dep.bridge,
            None,
            RELAYER,
            None,
            144,
            60.0,
            RelayerConfig(),
        )
        relayer = build_relayer(setup, chain.rpc, store)
        relayer.attestations = _Fixed([ConfirmedAttestation(mine_version, record, anchor)])
        assert relayer.submit_attestations()
        got = store.attestation(12)
        assert got is not None and got.status == AttestStatus.CONFLICT, got
        assert "batch hash" in relayer.conflicts[12] and "CONFLICT" in got.reason
        assert (
            setup.conflicts is relayer.conflicts
        )  # what the metric btcl2_relayer_attestation_conflicts counts
        report = journal_report(store.db)
        assert [a["status"] for a in report["attestations"] if a["batch"] == 12] == ["conflict"]
        # The audit reads the Bridge's versions from its events and names the same discrepancy.
        held_now = bridge_attestations(chain.evm, chain.dep.bridge, chain.evm.block_number())
        mine_roots = (mine_version.batch_hash, mine_version.post_state_root, mine_version.exits_root)
        (found,) = attestation_conflicts(held_now, {12: mine_roots})
        assert found.kind == "attestation-conflict" and found.subject == "batch 12"
        # The same version as the Bridge's is simply done.
        relayer.attestations = _Fixed([ConfirmedAttestation(held, record, anchor)])
        store.set_attestation(replace(got, btc_txid=b"\x00" * 32))
        assert relayer.submit_attestations()
        done = store.attestation(12)
        assert (
            done is not None and done.status == AttestStatus.ALREADY_ATTESTED and 12 not in relayer.conflicts
        )
    finally:
        store.db.close()


def test_relayer_replaces_a_version_whose_anchor_a_deep_reorg_dropped(chain: Chain, tmp_path: Path) -> None:
    """The Bridge holds version A of batch 13 while the relayer's replay has version B (anchored a block
    later): CONFLICT. A reorg deeper than K then drops both blocks and the new branch carries only B: the
    relayer's next pass has the Bridge replace A with B, records it attested and clears the conflict."""
    held = _attest(13, b"\x0a" * 32, [0, 1])
    held_anchor, held_record = chain.publish(held)
    mine_version = _attest(13, b"\x0b" * 32, [1, 2], version=b"'")
    anchor, record = chain.publish(mine_version)
    chain.mine(K - 1)
    proofs = attestation_proofs(chain.rpc, 13, held_anchor, held_record)
    assert submit_attestation(chain.evm, chain.dep.bridge, held, proofs, USER).status == 1
    store = RelayerStore(Database(tmp_path / "relayer"))
    try:
        setup = RelayerSetup(
            tmp_path, chain.node.url, str(chain.node.cookie_file), chain.evm, chain.dep.bridge,
            None, RELAYER, None, 144, 60.0, RelayerConfig(),
        )  # fmt: skip
        relayer = build_relayer(setup, chain.rpc, store)
        relayer.attestations = _Fixed([ConfirmedAttestation(mine_version, record, anchor)])
        assert relayer.submit_attestations() and 13 in relayer.conflicts
        # The reorg: both blocks leave the node's chain; a longer branch mines B's transactions only.
        old_tip = int(chain.rpc.call("getblockcount"))
        chain.rpc.call("invalidateblock", chain.rpc.call("getblockhash", held_anchor.height))
        chain.rpc.call("generateblock", MINER.p2wpkh_address, [anchor.txid, record.txid])
        for _ in range(old_tip - held_anchor.height + 1):
            chain.rpc.call("generateblock", MINER.p2wpkh_address, [])
        chain.sync_headers()
        assert chain.evm.call(chain.dep.light_client, "confirmations", proofs.anchor.block_hash) == 0
        moved = (AnchorRef(anchor.txid, held_anchor.height), AnchorRef(record.txid, held_anchor.height))
        relayer.attestations = _Fixed([ConfirmedAttestation(mine_version, moved[1], moved[0])])
        assert relayer.submit_attestations()
        done = store.attestation(13)
        assert done is not None and done.status == AttestStatus.ATTESTED, done
        assert 13 not in relayer.conflicts
        want = (mine_version.batch_hash, mine_version.post_state_root, mine_version.exits_root)
        assert attested_batch(chain.evm, chain.dep.bridge, 13) == want
    finally:
        store.db.close()
