"""The EVM contracts against a real anvil, fed with real Bitcoin data from a regtest node.

Deposits are made on the regtest node as a user would (createrawtransaction with the federation address and
an OP_RETURN tag, signrawtransactionwithkey, sendrawtransaction, mined), the node's headers are submitted to
the light client (getblockheader <hash> false), and the Bridge mints from SPV proofs built from getblock.
A heavier branch is mined by hand (build_block_on), given to the node with submitblock and then to the light
client, which must follow the node's reorg.
"""

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from framework.node import RegtestNode
from framework.util import CoinPool, btc, build_block_on, mine, new_key, with_extra_outputs

from btcl2.bitcoin import address
from btcl2.bitcoin.block import Block, BlockHeader
from btcl2.bitcoin.hashes import sha256d
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.tx import Tx, TxOut
from btcl2.bridge.admin import execute_admin, queue_admin
from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.artifacts import BUILD_DIR, load_artifact
from btcl2.bridge.deploy import (
    MAINNET_POW_LIMIT_BITS,
    REGTEST_GENESIS,
    REGTEST_POW_LIMIT_BITS,
    BridgeConfig,
    Checkpoint,
    Deployment,
    deploy_bridge_stack,
)
from btcl2.bridge.evm import Contract, ContractRevert, EvmClient, account, events_of
from btcl2.bridge.spv import MintProof, headers_bytes, mint_proof
from btcl2.core.deposits import DepositKind, deposit_tag_script
from btcl2.core.params import Params

pytestmark = pytest.mark.functional

PARAMS = Params()
FED = PARAMS.federation_script_pubkey
FED_ADDRESS = address.script_to_address(FED, address.REGTEST)
K = PARAMS.k_deposit_confs
FEE = 2_000
MINER = new_key()
HEADERS_PER_TX = 100
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    """One anvil for the module, on a free loopback port, stopped at the end."""
    with Anvil(hardfork="prague") as a:
        yield a


@pytest.fixture(scope="module")
def evm(anvil: Anvil) -> EvmClient:
    return EvmClient(anvil.url)


OWNER = account(ANVIL_DEV_KEYS[0])
GUARDIAN = account(ANVIL_DEV_KEYS[1])
CONFIRMER = account(ANVIL_DEV_KEYS[2])
USER = account(ANVIL_DEV_KEYS[3])
STRANGER = account(ANVIL_DEV_KEYS[4])


def _deploy(evm: EvmClient, **overrides: Any) -> Deployment:
    config = BridgeConfig.for_params(PARAMS, REGTEST_GENESIS, GUARDIAN.address, CONFIRMER.address)
    return deploy_bridge_stack(evm, OWNER, replace(config, **overrides))


@pytest.fixture
def stack(evm: EvmClient, node: RegtestNode) -> Deployment:
    """Fresh contracts for each test, the light client synced to the node."""
    dep = _deploy(evm)
    sync_headers(evm, dep.light_client, node, USER)
    return dep


def sync_headers(evm: EvmClient, lc: Contract, node: RegtestNode, sender: LocalAccount) -> list[Any]:
    """Submit the node's best-chain headers the light client lacks; returns the receipts."""
    tip: str = node.rpc.call("getbestblockhash")
    missing: list[bytes] = []
    cursor = tip
    while not evm.call(lc, "isInBestChain", bytes.fromhex(cursor)[::-1]):
        missing.append(bytes.fromhex(node.rpc.call("getblockheader", cursor, False)))
        cursor = node.rpc.call("getblockheader", cursor)["previousblockhash"]
    missing.reverse()
    return [
        evm.transact(lc, "submitHeaders", b"".join(missing[i : i + HEADERS_PER_TX]), sender=sender)
        for i in range(0, len(missing), HEADERS_PER_TX)
    ]


def get_block(node: RegtestNode, block_hash: str) -> Block:
    return Block.decode(bytes.fromhex(node.rpc.call("getblock", block_hash, 0)))


def make_deposit(
    node: RegtestNode, pool: CoinPool, amount: int, tag: bytes, outputs: dict[str, Any] | None = None
) -> tuple[Tx, Block]:
    """A deposit paying the federation `amount` with OP_RETURN `tag`, mined in one block."""
    coin = pool.take()
    outs = dict(outputs or {})
    outs[FED_ADDRESS] = btc(amount)
    spent = sum(int(v * 100_000_000) for v in outs.values())
    outs[MINER.p2wpkh_address] = btc(coin.value - spent - FEE)
    signed = with_extra_outputs(node, [coin], outs, [TxOut(0, tag)])
    node.rpc.call("sendrawtransaction", signed)
    (block_hash,) = mine(node, 1, MINER.p2wpkh_address)
    tx = Tx.from_hex(signed)
    return tx, get_block(node, block_hash)


def fed_vout(tx: Tx) -> int:
    return next(i for i, o in enumerate(tx.vout) if o.script_pubkey == FED)


def wbtc_balance(evm: EvmClient, dep: Deployment, who: str) -> int:
    balance: int = evm.call(dep.wbtc, "balanceOf", who)
    return balance


def admin_now(evm: EvmClient, bridge: Contract, fn: str, *args: Any, owner: LocalAccount = OWNER) -> None:
    """Run admin function `fn` through the Bridge's timelock: queue, let the EVM clock pass the delay, execute."""
    queue_admin(evm, bridge, owner, fn, *args)
    evm.rpc("evm_increaseTime", evm.call(bridge, "adminDelay"))
    evm.rpc("evm_mine")
    execute_admin(evm, bridge, owner, fn, *args)


def assert_reverts(name: str, fn: Any, *args: Any, **kwargs: Any) -> ContractRevert:
    with pytest.raises(ContractRevert) as e:
        fn(*args, **kwargs)
    assert e.value.name == name, str(e.value)
    return e.value


def test_build_is_reproducible(tmp_path: Path) -> None:
    node_bin = shutil.which("node")
    assert node_bin is not None
    for out in ("a", "b"):
        subprocess.run(
            [node_bin, str(REPO / "contracts" / "build.js"), str(tmp_path / out)], check=True, timeout=120
        )
    names = sorted(p.name for p in (tmp_path / "a").glob("*.json"))
    assert {"Bridge.json", "BitcoinLightClient.json", "WrappedBTC.json"} <= set(names)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() == (BUILD_DIR / name).read_bytes(), (
            "stale: run make contracts"
        )


def test_mint_exactly_once(evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment) -> None:
    amount = 1_234_567
    tx, block = make_deposit(
        node, pool, amount, deposit_tag_script(DepositKind.EVM, bytes.fromhex(USER.address[2:]))
    )
    mine(node, K - 1, MINER.p2wpkh_address)
    sync_headers(evm, stack.light_client, node, STRANGER)
    proof = mint_proof(block, tx.txid, fed_vout(tx))
    assert evm.call(stack.light_client, "confirmations", block.hash) == K
    # Anyone may submit the proof: the stranger pays the gas, the tag's address gets the WBTC.
    receipt = evm.transact(stack.bridge, "mintWithProof", *proof.args(), sender=STRANGER)
    assert wbtc_balance(evm, stack, USER.address) == amount
    assert evm.call(stack.wbtc, "totalSupply") == amount
    (minted,) = events_of(stack.bridge, receipt)
    assert minted.name == "Minted"
    assert minted.args == {
        "btcTxid": tx.txid,
        "vout": proof.output_index,
        "recipient": USER.address,
        "amount": amount,
        "blockHash": block.hash,
    }
    assert evm.call(stack.bridge, "minted", tx.txid, proof.output_index)
    assert_reverts(
        "AlreadyMinted", evm.transact, stack.bridge, "mintWithProof", *proof.args(), sender=STRANGER
    )
    assert wbtc_balance(evm, stack, USER.address) == amount


def test_proof_checks(evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment) -> None:
    tag = deposit_tag_script(DepositKind.EVM, bytes.fromhex(USER.address[2:]))
    tx, block = make_deposit(node, pool, 50_000, tag)
    proof = mint_proof(block, tx.txid, fed_vout(tx))
    mint = evm.transact
    assert_reverts("BlockNotInBestChain", mint, stack.bridge, "mintWithProof", *proof.args(), sender=USER)
    sync_headers(evm, stack.light_client, node, USER)
    if K > 1:
        assert_reverts(
            "InsufficientConfirmations", mint, stack.bridge, "mintWithProof", *proof.args(), sender=USER
        )
    mine(node, K - 1, MINER.p2wpkh_address)
    sync_headers(evm, stack.light_client, node, USER)
    bad_branch = replace(proof, merkle_proof=(b"\x00" * 32, *proof.merkle_proof[1:]))
    assert_reverts("BadMerkleProof", mint, stack.bridge, "mintWithProof", *bad_branch.args(), sender=USER)
    bad_index = replace(proof, tx_index=proof.tx_index + (1 << len(proof.merkle_proof)))
    assert_reverts("BadTxIndex", mint, stack.bridge, "mintWithProof", *bad_index.args(), sender=USER)
    coinbase = mint_proof(block, block.txs[0].txid, 0)
    assert_reverts("BadTxIndex", mint, stack.bridge, "mintWithProof", *coinbase.args(), sender=USER)
    segwit = replace(proof, raw_tx_no_witness=tx.encode(include_witness=True))
    assert_reverts("WitnessSerialization", mint, stack.bridge, "mintWithProof", *segwit.args(), sender=USER)
    change = replace(proof, output_index=2)  # the change output pays the miner key
    assert_reverts("NotFederationOutput", mint, stack.bridge, "mintWithProof", *change.args(), sender=USER)
    beyond = replace(proof, output_index=len(tx.vout))
    assert_reverts("OutputIndexOutOfRange", mint, stack.bridge, "mintWithProof", *beyond.args(), sender=USER)
    mint(stack.bridge, "mintWithProof", *proof.args(), sender=USER)
    assert wbtc_balance(evm, stack, USER.address) == 50_000


def test_output_to_other_script_and_l2_tag(
    evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment
) -> None:
    user20 = bytes.fromhex(USER.address[2:])
    other = new_key()
    # An output paying a non-federation script, placed first: claiming it must fail.
    tx, block = make_deposit(
        node, pool, 40_000, deposit_tag_script(DepositKind.EVM, user20), {other.p2wpkh_address: btc(40_000)}
    )
    l2_tx, l2_block = make_deposit(node, pool, 40_000, deposit_tag_script(DepositKind.L2, user20))
    mine(node, K, MINER.p2wpkh_address)
    sync_headers(evm, stack.light_client, node, USER)
    to_other = next(i for i, o in enumerate(tx.vout) if o.script_pubkey == other.p2wpkh_script)
    wrong = mint_proof(block, tx.txid, to_other)
    assert_reverts(
        "NotFederationOutput", evm.transact, stack.bridge, "mintWithProof", *wrong.args(), sender=USER
    )
    l2 = mint_proof(l2_block, l2_tx.txid, fed_vout(l2_tx))
    e = assert_reverts(
        "NotAnEvmDeposit", evm.transact, stack.bridge, "mintWithProof", *l2.args(), sender=USER
    )
    assert e.reason.args == (1,)
    assert wbtc_balance(evm, stack, USER.address) == 0
    right = mint_proof(block, tx.txid, fed_vout(tx))
    evm.transact(stack.bridge, "mintWithProof", *right.args(), sender=USER)
    assert wbtc_balance(evm, stack, USER.address) == 40_000


def _mined_header(prev: BlockHeader, **changes: Any) -> BlockHeader:
    """A child of `prev` with the regtest target, mined here (about two tries)."""
    target = 0x7FFFFF << (8 * (0x20 - 3))
    h = BlockHeader(0x20000000, prev.hash, b"\x42" * 32, prev.time + 1, 0x207FFFFF, 0)
    h = replace(h, **changes)
    while int.from_bytes(h.hash, "little") > target:
        h = replace(h, nonce=h.nonce + 1)
    return h


def test_bad_headers_rejected(evm: EvmClient, node: RegtestNode, stack: Deployment) -> None:
    lc = stack.light_client
    tip = BlockHeader.decode(
        bytes.fromhex(node.rpc.call("getblockheader", node.rpc.call("getbestblockhash"), False))
    )
    good = _mined_header(tip)
    bad_pow = good
    target = 0x7FFFFF << (8 * (0x20 - 3))
    while int.from_bytes(bad_pow.hash, "little") <= target:
        bad_pow = replace(bad_pow, nonce=bad_pow.nonce + 1)
    submit = evm.transact
    assert_reverts("InsufficientProofOfWork", submit, lc, "submitHeaders", bad_pow.encode(), sender=USER)
    broken_link = _mined_header(replace(tip, nonce=tip.nonce ^ 1))
    assert_reverts("UnknownParent", submit, lc, "submitHeaders", broken_link.encode(), sender=USER)
    # A batch fails whole: a good header followed by a broken one stores neither.
    assert_reverts(
        "UnknownParent", submit, lc, "submitHeaders", good.encode() + broken_link.encode(), sender=USER
    )
    easier_bits = _mined_header(tip, bits=0x2100FFFF)
    assert_reverts("BadDifficultyBits", submit, lc, "submitHeaders", easier_bits.encode(), sender=USER)
    assert_reverts("BadHeadersLength", submit, lc, "submitHeaders", good.encode()[:79], sender=USER)
    assert_reverts("BadHeadersLength", submit, lc, "submitHeaders", b"", sender=USER)
    assert evm.call(lc, "bestHash") == tip.hash
    receipt = submit(lc, "submitHeaders", good.encode(), sender=USER)
    (added,) = events_of(lc, receipt)
    assert added.name == "HeaderAdded" and added.args["blockHash"] == good.hash
    assert evm.call(lc, "bestHash") == good.hash
    # Resubmitting a known header is a no-op (the relayer may race with another relayer).
    assert events_of(lc, submit(lc, "submitHeaders", good.encode(), sender=USER)) == []


def test_reorg_orphans_a_proof(evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment) -> None:
    lc = stack.light_client
    tx, block = make_deposit(
        node, pool, 70_000, deposit_tag_script(DepositKind.EVM, bytes.fromhex(USER.address[2:]))
    )
    mine(node, K - 1, MINER.p2wpkh_address)
    sync_headers(evm, lc, node, USER)
    proof = mint_proof(block, tx.txid, fed_vout(tx))
    assert evm.call(lc, "confirmations", block.hash) == K
    old_tip = bytes.fromhex(node.rpc.call("getbestblockhash"))[::-1]
    # A branch from the deposit block's parent, one block longer than the current one, without the deposit.
    parent = block.header.prev_hash[::-1].hex()
    cursor = parent
    for i in range(K + 1):
        fork_block = build_block_on(node, cursor, MINER.p2wpkh_script, tag=1000 + i)
        # "inconclusive" is Core's answer for a valid block that does not (yet) make the heavier chain.
        assert node.rpc.call("submitblock", fork_block.encode().hex()) in (None, "inconclusive")
        cursor = fork_block.hash_hex
    assert node.rpc.call("getbestblockhash") == cursor
    receipts = sync_headers(evm, lc, node, USER)
    reorgs = [e for r in receipts for e in events_of(lc, r) if e.name == "Reorg"]
    assert len(reorgs) == 1
    assert reorgs[0].args["oldTip"] == old_tip
    assert reorgs[0].args["forkPoint"] == block.header.prev_hash
    assert evm.call(lc, "bestHash") == bytes.fromhex(cursor)[::-1]
    assert evm.call(lc, "bestHeight") == node.rpc.call("getblockcount")
    assert evm.call(lc, "confirmations", block.hash) == 0
    assert not evm.call(lc, "isInBestChain", block.hash)
    assert_reverts(
        "BlockNotInBestChain", evm.transact, stack.bridge, "mintWithProof", *proof.args(), sender=USER
    )
    assert wbtc_balance(evm, stack, USER.address) == 0


def test_pause_stops_mint_and_burn(
    evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment
) -> None:
    proof = _confirmed_deposit(evm, node, pool, stack, 30_000)
    evm.transact(stack.bridge, "mintWithProof", *proof.args(), sender=USER)
    assert_reverts("NotGuardian", evm.transact, stack.bridge, "pause", sender=USER)
    receipt = evm.transact(stack.bridge, "pause", sender=GUARDIAN)
    assert [e.name for e in events_of(stack.bridge, receipt)] == ["Paused"]
    proof2 = _confirmed_deposit(evm, node, pool, stack, 20_000)
    assert_reverts("BridgePaused", evm.transact, stack.bridge, "mintWithProof", *proof2.args(), sender=USER)
    assert_reverts(
        "BridgePaused", evm.transact, stack.bridge, "burn", 10_000, MINER.p2wpkh_script, sender=USER
    )
    assert_reverts("NotOwner", evm.transact, stack.bridge, "unpause", sender=GUARDIAN)
    evm.transact(stack.bridge, "unpause", sender=OWNER)
    evm.transact(stack.bridge, "mintWithProof", *proof2.args(), sender=USER)
    evm.transact(stack.bridge, "burn", 10_000, MINER.p2wpkh_script, sender=USER)
    assert wbtc_balance(evm, stack, USER.address) == 40_000


def _confirmed_deposit(
    evm: EvmClient, node: RegtestNode, pool: CoinPool, dep: Deployment, amount: int
) -> MintProof:
    tx, block = make_deposit(
        node, pool, amount, deposit_tag_script(DepositKind.EVM, bytes.fromhex(USER.address[2:]))
    )
    mine(node, K - 1, MINER.p2wpkh_address)
    sync_headers(evm, dep.light_client, node, USER)
    return mint_proof(block, tx.txid, fed_vout(tx))


def test_mint_cap(evm: EvmClient, node: RegtestNode, pool: CoinPool) -> None:
    dep = _deploy(evm, mint_cap_capacity=100_000, mint_cap_refill_per_second=0)
    big = _confirmed_deposit(evm, node, pool, dep, 100_001)
    small = _confirmed_deposit(evm, node, pool, dep, 60_000)
    e = assert_reverts("MintCapExceeded", evm.transact, dep.bridge, "mintWithProof", *big.args(), sender=USER)
    assert e.reason.args == (100_001, 100_000)
    evm.transact(dep.bridge, "mintWithProof", *small.args(), sender=USER)
    assert evm.call(dep.bridge, "availableToMint") == 40_000
    assert_reverts("NotOwner", queue_admin, evm, dep.bridge, USER, "setMintCap", 1, 1)
    admin_now(evm, dep.bridge, "setMintCap", 200_000, 0)
    assert evm.call(dep.bridge, "availableToMint") == 40_000
    assert_reverts("MintCapExceeded", evm.transact, dep.bridge, "mintWithProof", *big.args(), sender=USER)


def test_burn_and_payout(evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment) -> None:
    proof = _confirmed_deposit(evm, node, pool, stack, 80_000)
    evm.transact(stack.bridge, "mintWithProof", *proof.args(), sender=USER)
    burn = evm.transact
    for script in (b"\x51", b"\x00\x14" + b"\x01" * 19, b"\x6a\x04test", MINER.p2wpkh_script + b"\x00"):
        assert_reverts("NonStandardScript", burn, stack.bridge, "burn", 20_000, script, sender=USER)
    assert_reverts(
        "BelowMinimumWithdrawal", burn, stack.bridge, "burn", 9_999, MINER.p2wpkh_script, sender=USER
    )
    assert_reverts(
        "InsufficientBalance", burn, stack.bridge, "burn", 80_001, MINER.p2wpkh_script, sender=USER
    )
    receipt = burn(stack.bridge, "burn", 30_000, MINER.p2pkh_script, sender=USER)
    (ev,) = events_of(stack.bridge, receipt)
    assert ev.name == "WithdrawalRequested"
    wid = burn_id(evm, stack, USER.address, 30_000, MINER.p2pkh_script, 0)
    assert ev.args == {
        "id": wid,
        "from": USER.address,
        "amount": 30_000,
        "script": MINER.p2pkh_script,
        "nonce": 0,
    }
    assert evm.call(stack.bridge, "withdrawalId", USER.address, 30_000, MINER.p2pkh_script, 0) == wid
    assert evm.call(stack.bridge, "burnNonce", USER.address) == 1
    assert wbtc_balance(evm, stack, USER.address) == 50_000
    assert evm.call(stack.wbtc, "totalSupply") == 50_000
    btc_txid = sha256d(b"payout")
    assert_reverts(
        "NotPayoutConfirmer", evm.transact, stack.bridge, "confirmPayout", wid, btc_txid, sender=USER
    )
    for unknown in (bytes(32), (1).to_bytes(32, "big"), sha256d(b"no such burn")):  # counters are no ids
        assert_reverts(
            "UnknownWithdrawal",
            evm.transact,
            stack.bridge,
            "confirmPayout",
            unknown,
            btc_txid,
            sender=CONFIRMER,
        )
    assert_reverts("ZeroTxid", evm.transact, stack.bridge, "confirmPayout", wid, bytes(32), sender=CONFIRMER)
    receipt = evm.transact(stack.bridge, "confirmPayout", wid, btc_txid, sender=CONFIRMER)
    (paid,) = events_of(stack.bridge, receipt)
    assert (paid.name, paid.args) == ("PayoutConfirmed", {"id": wid, "btcTxid": btc_txid})
    assert_reverts(
        "PayoutAlreadyConfirmed", evm.transact, stack.bridge, "confirmPayout", wid, btc_txid, sender=CONFIRMER
    )
    # The same burn again gets a new id (the burner's nonce moved); another burner's equal burn another one.
    (again,) = events_of(stack.bridge, burn(stack.bridge, "burn", 30_000, MINER.p2pkh_script, sender=USER))
    assert again.args["nonce"] == 1 and again.args["id"] not in (wid, 0, 1)
    assert again.args["id"] == burn_id(evm, stack, USER.address, 30_000, MINER.p2pkh_script, 1)
    assert burn_id(evm, stack, STRANGER.address, 30_000, MINER.p2pkh_script, 0) != wid
    # Only the Bridge mints or burns WBTC.
    assert_reverts("NotBridge", evm.transact, stack.wbtc, "mint", USER.address, 1, sender=OWNER)


def burn_id(evm: EvmClient, dep: Deployment, burner: str, amount: int, script: bytes, nonce: int) -> bytes:
    """The id docs/PROTOCOL.md specifies: keccak256(abi.encode(chainid, bridge, burner, amount, script, nonce))."""
    chain_id = int(evm.rpc("eth_chainId"), 16)
    types = ["uint256", "address", "address", "uint64", "bytes", "uint256"]
    return keccak(abi_encode(types, [chain_id, dep.bridge.address, burner, amount, script, nonce]))


def test_burn_ids_survive_a_reorg(
    evm: EvmClient, node: RegtestNode, pool: CoinPool, stack: Deployment
) -> None:
    """An EVM reorg drops USER's burn; STRANGER's burn mined instead never gets USER's id, and USER's burn
    sent again gets exactly its old id (so the one payout Bitcoin shows for it covers it)."""
    proof = _confirmed_deposit(evm, node, pool, stack, 60_000)
    evm.transact(stack.bridge, "mintWithProof", *proof.args(), sender=USER)
    evm.transact(stack.wbtc, "transfer", STRANGER.address, 20_000, sender=USER)
    evm.rpc("evm_mine")
    script = MINER.p2wpkh_script
    (first,) = events_of(stack.bridge, evm.transact(stack.bridge, "burn", 20_000, script, sender=USER))
    evm.rpc("anvil_reorg", 1, [])
    assert evm.call(stack.bridge, "withdrawalHash", first.args["id"]) == bytes(32)
    (other,) = events_of(stack.bridge, evm.transact(stack.bridge, "burn", 20_000, script, sender=STRANGER))
    assert other.args["id"] != first.args["id"]
    (resent,) = events_of(stack.bridge, evm.transact(stack.bridge, "burn", 20_000, script, sender=USER))
    assert resent.args["id"] == first.args["id"]
    assert evm.call(stack.bridge, "deployBlock") == stack.deploy_block > 0


def test_imitator_events_ignored(evm: EvmClient, stack: Deployment) -> None:
    fake = evm.deploy(load_artifact("FakeBridge"), [], STRANGER)
    start = evm.block_number()
    r1 = evm.transact(fake, "fakeMint", b"\x01" * 32, 0, USER.address, 10**8, b"\x02" * 32, sender=STRANGER)
    r2 = evm.transact(fake, "fakeWithdrawal", bytes(32), 10**8, p2wpkh(b"\x03" * 20), sender=STRANGER)
    # Same event signatures, so decoding with the Bridge's ABI would succeed: only the address tells them apart.
    assert [e.name for e in events_of(fake, r1) + events_of(fake, r2)] == ["Minted", "WithdrawalRequested"]
    assert events_of(stack.bridge, r1) == [] and events_of(stack.bridge, r2) == []
    assert evm.get_events(stack.bridge, "Minted", from_block=start) == []
    assert evm.get_events(stack.bridge, "WithdrawalRequested", from_block=start) == []


def test_two_step_ownership(evm: EvmClient, stack: Deployment) -> None:
    bridge = stack.bridge
    admin_now(evm, bridge, "transferOwnership", USER.address)
    assert evm.call(bridge, "owner") == OWNER.address
    assert_reverts("NotPendingOwner", evm.transact, bridge, "acceptOwnership", sender=STRANGER)
    receipt = evm.transact(bridge, "acceptOwnership", sender=USER)
    assert [e.name for e in events_of(bridge, receipt)] == ["OwnershipTransferred"]
    assert evm.call(bridge, "owner") == USER.address
    assert_reverts("NotOwner", queue_admin, evm, bridge, OWNER, "setGuardian", STRANGER.address)
    admin_now(evm, bridge, "setGuardian", STRANGER.address, owner=USER)
    assert evm.call(bridge, "guardian") == STRANGER.address


MAINNET_GENESIS = bytes.fromhex(
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e"
    "67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c"
)
MAINNET_BLOCK_1 = bytes.fromhex(
    "010000006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000982051fd1e4ba744bbbe680e"
    "1fee14677ba1a3c3540bf7b1cdb606e857233e0e61bc6649ffff001d01e36299"
)


def _deploy_light_client(
    evm: EvmClient, checkpoint: Checkpoint, retarget: bool, pow_limit_bits: int
) -> Contract:
    args = [
        checkpoint.hash,
        checkpoint.height,
        checkpoint.chainwork,
        checkpoint.header,
        retarget,
        pow_limit_bits,
    ]
    return evm.deploy(load_artifact("BitcoinLightClient"), args, OWNER)


def test_mainnet_rules_accept_block_one(evm: EvmClient) -> None:
    lc = _deploy_light_client(evm, Checkpoint(MAINNET_GENESIS, 0, 0x100010001), True, MAINNET_POW_LIMIT_BITS)
    block1 = BlockHeader.decode(MAINNET_BLOCK_1)
    for bad in (replace(block1, nonce=block1.nonce + 1), replace(block1, bits=0x1D00FFFE)):
        with pytest.raises(ContractRevert) as e:
            evm.transact(lc, "submitHeaders", bad.encode(), sender=USER)
        assert e.value.name in ("InsufficientProofOfWork", "BadDifficultyBits")
    evm.transact(lc, "submitHeaders", MAINNET_BLOCK_1, sender=USER)
    assert evm.call(lc, "bestHeight") == 1
    assert (
        evm.call(lc, "bestHash")[::-1].hex()
        == "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048"
    )
    assert evm.call(lc, "bestChainwork") == 0x200020002


def _set_compact(bits: int) -> int:
    size, word = bits >> 24, bits & 0x007FFFFF
    return word >> (8 * (3 - size)) if size <= 3 else word << (8 * (size - 3))


def _get_compact(target: int) -> int:
    size = (target.bit_length() + 7) // 8
    compact = target << (8 * (3 - size)) if size <= 3 else target >> (8 * (size - 3))
    if compact & 0x00800000:
        compact >>= 8
        size += 1
    return compact | (size << 24)


def _next_bits(bits: int, timespan: int, pow_limit: int) -> int:
    """Bitcoin Core's CalculateNextWorkRequired (mainnet), in Python."""
    period = 14 * 24 * 3600
    timespan = min(max(timespan, period // 4), period * 4)
    return _get_compact(min(_set_compact(bits) * timespan // period, pow_limit))


def _mine(h: BlockHeader) -> BlockHeader:
    target = _set_compact(h.bits)
    while int.from_bytes(h.hash, "little") > target:
        h = replace(h, nonce=h.nonce + 1)
    return h


@pytest.mark.parametrize("spacing", [60, 600, 3000])
def test_retarget_at_the_2016_boundary(evm: EvmClient, spacing: int) -> None:
    """Mainnet's retarget rules with regtest's easy pow limit, so 2016 headers can be mined here."""
    bits = REGTEST_POW_LIMIT_BITS
    pow_limit = _set_compact(bits)
    easier = _get_compact(_set_compact(bits) // 2)  # start below the limit so the target can also rise
    genesis = _mine(BlockHeader(1, b"\x00" * 32, b"\x01" * 32, 1_600_000_000, easier, 0))
    lc = _deploy_light_client(evm, Checkpoint(genesis.encode(), 0, 4), True, bits)
    headers = [genesis]
    for height in range(1, 2016):
        headers.append(
            _mine(
                BlockHeader(
                    0x20000000, headers[-1].hash, b"\x02" * 32, genesis.time + spacing * height, easier, 0
                )
            )
        )
    for i in range(1, 2016, 200):
        evm.transact(lc, "submitHeaders", headers_bytes(headers[i : i + 200]), sender=USER)
    assert evm.call(lc, "bestHeight") == 2015
    # Within a period the bits may not change (a sibling of header 2015 with other bits).
    changed = _mine(replace(headers[-1], prev_hash=headers[-2].hash, bits=easier - 1, nonce=0))
    assert_reverts("BadDifficultyBits", evm.transact, lc, "submitHeaders", changed.encode(), sender=USER)
    expected = _next_bits(easier, headers[-1].time - genesis.time, pow_limit)
    assert evm.call(lc, "expectedBits", headers[-1].hash, 2016) == expected
    stale = _mine(BlockHeader(0x20000000, headers[-1].hash, b"\x03" * 32, headers[-1].time + 1, easier, 0))
    if expected != easier:
        assert_reverts("BadDifficultyBits", evm.transact, lc, "submitHeaders", stale.encode(), sender=USER)
    boundary = _mine(replace(stale, bits=expected, nonce=0))
    evm.transact(lc, "submitHeaders", boundary.encode(), sender=USER)
    assert evm.call(lc, "bestHash") == boundary.hash
    assert evm.call(lc, "getHeader", boundary.hash)[-1] == boundary.time  # a new period starts here
