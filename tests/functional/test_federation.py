"""Federation payouts end to end: a real regtest node, anvil with the contracts, three `btcl2 signer run`
processes (2-of-3) and `btcl2 coordinator run`, driven as operators and users would.

L2 withdrawals reach Bitcoin through batches built here with the pure core and anchored with the devnet
poster key; EVM withdrawals are real Bridge burns of WBTC minted from an SPV proof. Signer 3 runs with
another fee account, so its own replay disagrees with the anchored roots.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from framework.node import RegtestNode, free_port
from framework.util import CoinPool, mine, new_key, to_sats

from btcl2.bitcoin.address import REGTEST, script_to_address
from btcl2.bitcoin.block import Block
from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.sighash import SIGHASH_ALL
from btcl2.bitcoin.sign import PrevoutInfo, sign_transaction
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.deploy import REGTEST_GENESIS, BridgeConfig, Deployment, deploy_bridge_stack
from btcl2.bridge.evm import EvmClient, account, events_of
from btcl2.bridge.spv import mint_proof
from btcl2.core.anchor import build_anchor_transactions, encode_anchor_outputs
from btcl2.core.deposits import DepositKind, deposit_tag_script
from btcl2.core.eip712 import address_from_private_key, sign
from btcl2.core.params import Params
from btcl2.core.state import State
from btcl2.core.transition import build_batch
from btcl2.core.types import Hash32, Sats, Withdrawal
from btcl2.derive.l1 import RpcBlockSource
from btcl2.derive.pipeline import DepositIndex
from btcl2.failpoints import FAILPOINT_EXIT_CODE
from btcl2.federation.config import DEVNET_EVM_FINALITY_DEPTH
from btcl2.federation.payout import (
    FederationCoin,
    PayoutItem,
    WithdrawalKind,
    WithdrawalRef,
    build_payout,
    finalize,
    input_sighash,
    paid_refs,
)
from btcl2.federation.views import BitcoinView
from btcl2.secretfile import write_secret_file
from btcl2.wallet.keyfile import KeyFile, write_keyfile

pytestmark = pytest.mark.functional

PARAMS = Params()
FED_KEYS = [PrivateKey(hashlib.sha256(b"btcl2 devnet federation %d" % i).digest()) for i in (1, 2, 3)]
POSTER = PrivateKey(hashlib.sha256(b"btcl2 devnet poster").digest())
POSTER_SPK = p2wpkh(hash160(POSTER.pubkey()))
ALICE_KEY = hashlib.sha256(b"federation alice").digest()
ALICE = address_from_private_key(ALICE_KEY)
OWNER, CONFIRMER, USER, ERIN = (account(ANVIL_DEV_KEYS[i]) for i in (0, 2, 3, 4))
EVM_DEPTH = DEVNET_EVM_FINALITY_DEPTH
"""The signers' and coordinator's EVM finality depth for burns."""
MINER = new_key()
L2_DEST = new_key()
L2_AMOUNT = 100_000
BURN = 50_000
WFEE = PARAMS.withdrawal_fee_sats
"""Kept by the federation from every withdrawal: a payout output is the amount less this."""
WAIT = 60.0


@dataclass
class Stack:
    """Everything the module's tests share."""

    node: RegtestNode
    evm: EvmClient
    dep: Deployment
    tmp: Path
    from_height: int
    l2_ref: WithdrawalRef
    signer_urls: list[str] = field(default_factory=list)
    signers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    coordinator: subprocess.Popen[bytes] | None = None
    status_url: str = ""
    burns: list[WithdrawalRef] = field(default_factory=list)
    vanished: list[WithdrawalRef] = field(default_factory=list)
    """Burns paid on Bitcoin, then removed by an EVM reorg deeper than the finality depth."""

    def btcl2(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "btcl2", *args], capture_output=True, text=True, timeout=60
        )


def _signed(pool: CoinPool, tx: Tx, coins: list[tuple[OutPoint, TxOut]], key: PrivateKey) -> Tx:
    prevouts = {op: PrevoutInfo(o.script_pubkey, o.value) for op, o in coins}
    result = sign_transaction(tx, [key], prevouts)
    assert result.complete, result.errors
    return result.tx


def _send(node: RegtestNode, tx: Tx) -> None:
    node.call("sendrawtransaction", tx.hex())


def _fund_and_deposit(node: RegtestNode, pool: CoinPool) -> list[tuple[OutPoint, TxOut]]:
    """One transaction: Alice's L2 deposit, USER's EVM deposit, and coins of the poster key; returns them."""
    coin = pool.take()
    op = OutPoint(bytes.fromhex(coin.txid)[::-1], coin.vout)
    outs = (
        TxOut(1_000_000, PARAMS.federation_script_pubkey),
        TxOut(0, deposit_tag_script(DepositKind.L2, ALICE)),
        *(TxOut(1_000_000, POSTER_SPK) for _ in range(3)),
        TxOut(coin.value - 4_000_000 - 5_000, pool.key.p2wpkh_script),
    )
    tx = _signed(
        pool, Tx(2, (TxIn(op),), outs, 0), [(op, TxOut(coin.value, pool.key.p2wpkh_script))], pool.key.priv
    )
    _send(node, tx)
    return [(OutPoint(tx.txid, i), tx.vout[i]) for i in (2, 3, 4)]


def _evm_deposit(node: RegtestNode, pool: CoinPool) -> tuple[Tx, int]:
    coin = pool.take()
    op = OutPoint(bytes.fromhex(coin.txid)[::-1], coin.vout)
    outs = (
        TxOut(2_000_000, PARAMS.federation_script_pubkey),
        TxOut(0, deposit_tag_script(DepositKind.EVM, bytes.fromhex(USER.address[2:]))),
        TxOut(coin.value - 2_000_000 - 5_000, pool.key.p2wpkh_script),
    )
    tx = _signed(
        pool, Tx(2, (TxIn(op),), outs, 0), [(op, TxOut(coin.value, pool.key.p2wpkh_script))], pool.key.priv
    )
    _send(node, tx)
    return tx, 0


def _sync_headers(evm: EvmClient, dep: Deployment, node: RegtestNode) -> None:
    cursor = node.call("getbestblockhash")
    missing: list[bytes] = []
    while not evm.call(dep.light_client, "isInBestChain", bytes.fromhex(cursor)[::-1]):
        missing.append(bytes.fromhex(node.call("getblockheader", cursor, False)))
        cursor = node.call("getblockheader", cursor)["previousblockhash"]
    missing.reverse()
    for i in range(0, len(missing), 100):
        evm.transact(dep.light_client, "submitHeaders", b"".join(missing[i : i + 100]), sender=USER)


def _anchor_l2(
    node: RegtestNode, from_height: int, poster_coins: list[tuple[OutPoint, TxOut]]
) -> WithdrawalRef:
    """Batch 0 credits Alice's deposit, batch 1 holds her withdrawal; both anchored by the poster key."""
    tip = node.call("getblockcount") - PARAMS.k_deposit_confs + 1  # the sequencer's L1 origin: K deep
    origin = (tip, Hash32(bytes.fromhex(node.call("getblockhash", tip))[::-1]))
    index = DepositIndex(PARAMS)
    heights = range(from_height, tip + 1)
    for height, (_, block) in zip(heights, RpcBlockSource(node.rpc).blocks(heights), strict=True):
        index.add_block(height, block)
    credits = [d.credit() for d in index.eligible_at(tip) if d.kind == DepositKind.L2]
    b0 = build_batch(State(), PARAMS, credits, [], origin, 1_700_000_000)
    w = sign(Withdrawal(Sats(L2_AMOUNT), Sats(100), 0, L2_DEST.p2wpkh_script), ALICE_KEY, PARAMS.l2_chain_id)
    b1 = build_batch(b0.state, PARAMS, [], [w], origin, 1_700_000_001)
    assert len(b0.batch.header.deposits) == 1 and not b1.rejected
    for batch, coin in ((b0.batch, poster_coins[0]), (b1.batch, poster_coins[1])):
        (tx,) = build_anchor_transactions(encode_anchor_outputs(batch), [coin], POSTER_SPK, 2, POSTER)
        _send(node, tx)
    return WithdrawalRef(WithdrawalKind.L2, bytes(w.tx_hash))


def _write_signer(
    tmp: Path, i: int, node: RegtestNode, evm_url: str, bridge: str, from_height: int
) -> tuple[Path, Path, int]:
    key_path = tmp / f"signer{i}.key"
    write_keyfile(key_path, KeyFile(FED_KEYS[i - 1], REGTEST))
    port = free_port()
    lines = [
        f'datadir = "{tmp / f"signer{i}"}"',
        f'bitcoin_rpc = "{node.url}"',
        f'bitcoin_cookie = "{node.cookie_file}"',
        f'evm_rpc = "{evm_url}"',
        f'bridge = "{bridge}"',
        f'token = "signer-token-{i}-0123456789"',
        f"from_height = {from_height}",
        f"evm_confirmations = {EVM_DEPTH}",
        f"port = {port}",
    ]
    if i == 3:  # another fee account: this signer's replay of the anchored batches cannot match
        lines += ["[params]", 'fee_account = "' + "77" * 20 + '"']
    config = tmp / f"signer{i}.toml"
    write_secret_file(config, "\n".join(lines) + "\n")
    return key_path, config, port


def _wait(
    predicate: Callable[[], bool], what: str, node: RegtestNode | None = None, timeout: float = WAIT
) -> None:
    """Poll `predicate`; with `node`, mine a block between polls so payouts confirm."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if node is not None:
            mine(node, 1, MINER.p2wpkh_address)
        time.sleep(0.4)
    raise AssertionError(f"timed out waiting for {what}")


def _post(url: str, body: Any, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _answers(url: str, token: str) -> bool:
    req = urllib.request.Request(url + "/info", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(node: RegtestNode, pool: CoinPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("federation")
    from_height = node.call("getblockcount") + 1
    anvil = Anvil(log_path=tmp / "anvil.log")
    anvil.start()
    st: Stack | None = None
    try:
        evm = EvmClient(anvil.url)
        config = BridgeConfig.for_params(PARAMS, REGTEST_GENESIS, OWNER.address, CONFIRMER.address)
        dep = deploy_bridge_stack(evm, OWNER, config)
        poster_coins = _fund_and_deposit(node, pool)
        evm_tx, vout = _evm_deposit(node, pool)
        (block_hash,) = mine(node, 1, MINER.p2wpkh_address)
        mine(node, PARAMS.k_deposit_confs, MINER.p2wpkh_address)
        _sync_headers(evm, dep, node)
        block = Block.decode(bytes.fromhex(node.call("getblock", block_hash, 0)))
        evm.transact(dep.bridge, "mintWithProof", *mint_proof(block, evm_tx.txid, vout).args(), sender=USER)
        l2_ref = _anchor_l2(node, from_height, poster_coins)
        mine(node, PARAMS.f_anchor_confs, MINER.p2wpkh_address)
        st = Stack(node, evm, dep, tmp, from_height, l2_ref)
        for i in (1, 2, 3):
            key_path, cfg, port = _write_signer(tmp, i, node, anvil.url, dep.bridge.address, from_height)
            log = (tmp / f"signer{i}.log").open("wb")
            cmd = [
                sys.executable,
                "-m",
                "btcl2",
                "signer",
                "run",
                "--key",
                str(key_path),
                "--config",
                str(cfg),
            ]
            st.signers.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            st.signer_urls.append(f"http://127.0.0.1:{port}")
        for i, url in enumerate(st.signer_urls, 1):
            _wait(lambda u=url, i=i: _answers(u, f"signer-token-{i}-0123456789"), f"signer {i}")  # type: ignore[misc]
        yield st
    finally:
        if st is not None:
            for proc in [*st.signers, *([st.coordinator] if st.coordinator else [])]:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)
            for i in (1, 2, 3):
                log_file = tmp / f"signer{i}.log"
                if log_file.exists():
                    sys.stderr.write(f"--- signer{i} log tail ---\n" + log_file.read_text()[-3000:])
        anvil.stop()


def _start_coordinator(st: Stack, failpoint: str | None = None) -> subprocess.Popen[bytes]:
    port = free_port()
    signers = "".join(
        f'[[signers]]\nurl = "{u}"\ntoken = "signer-token-{i}-0123456789"\n'
        for i, u in enumerate(st.signer_urls, 1)
    )
    text = (
        f'datadir = "{st.tmp / "coordinator"}"\nbitcoin_rpc = "{st.node.url}"\nbitcoin_cookie = "{st.node.cookie_file}"\n'
        f'evm_rpc = "{st.evm.url}"\nbridge = "{st.dep.bridge.address}"\nconfirmer_key = "{ANVIL_DEV_KEYS[2]}"\n'
        f"from_height = {st.from_height}\nevm_confirmations = {EVM_DEPTH}\nport = {port}\npoll_interval = 0.2\n"
        f"{signers}"
    )
    cfg = st.tmp / "coordinator.toml"
    write_secret_file(cfg, text, replace=True)
    env = dict(os.environ)
    env.pop("BTCL2_FAILPOINT", None)
    if failpoint is not None:
        env["BTCL2_FAILPOINT"] = failpoint
    log = (st.tmp / "coordinator.log").open("ab")
    cmd = [sys.executable, "-m", "btcl2", "coordinator", "run", "--config", str(cfg)]
    st.coordinator = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    st.status_url = f"http://127.0.0.1:{port}"
    return st.coordinator


def _stop_coordinator(st: Stack) -> None:
    if st.coordinator is not None and st.coordinator.poll() is None:
        st.coordinator.terminate()
        st.coordinator.wait(10)
    st.coordinator = None


def _status(st: Stack, ref: WithdrawalRef) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{st.status_url}/withdrawal/{ref.text}", timeout=5) as resp:
            found: dict[str, Any] = json.loads(resp.read())
            return found
    except OSError:
        return None


def _paid(st: Stack, ref: WithdrawalRef) -> bool:
    found = _status(st, ref)
    return found is not None and bool(found.get("paid"))


def _burn_ref(st: Stack, amount: int, script: bytes, sender: Any = USER) -> tuple[WithdrawalRef, int]:
    """Bridge.burn; the withdrawal's ref (from its event) and the EVM block that holds it."""
    receipt = st.evm.transact(st.dep.bridge, "burn", amount, script, sender=sender)
    assert receipt.status == 1
    (event,) = events_of(st.dep.bridge, receipt)
    return WithdrawalRef.evm(bytes(event.args["id"])), event.block_number


def _evm_finalize(st: Stack) -> None:
    """Mine EVM blocks until the latest burn is EVM_DEPTH deep."""
    for _ in range(EVM_DEPTH - 1):
        st.evm.rpc("evm_mine")


def _burn(st: Stack, script: bytes | None = None) -> WithdrawalRef:
    ref, _ = _burn_ref(st, BURN, script or new_key().p2wpkh_script)
    _evm_finalize(st)
    st.burns.append(ref)
    return ref


def _fed_coin_payout(st: Stack, items: list[PayoutItem]) -> tuple[Tx, list[int]]:
    coins = BitcoinView(st.node.rpc, PARAMS).federation_coins(PARAMS.k_deposit_confs)
    coin = max(coins, key=lambda c: c.amount)
    return build_payout(items, [coin], PARAMS, 2), [coin.amount]


def _ask(st: Stack, i: int, tx: Tx, amounts: list[int]) -> tuple[int, dict[str, Any]]:
    return _post(
        st.signer_urls[i - 1] + "/sign", {"tx": tx.hex(), "amounts": amounts}, f"signer-token-{i}-0123456789"
    )


def _l2_item(
    script: bytes | None = None, amount: int = L2_AMOUNT, ref: WithdrawalRef | None = None
) -> PayoutItem:
    return PayoutItem(
        ref or WithdrawalRef(WithdrawalKind.L2, b"\x00" * 32), script or L2_DEST.p2wpkh_script, amount
    )


def test_signer_refusals(stack: Stack) -> None:
    st = stack
    tx, amounts = _fed_coin_payout(st, [_l2_item(ref=st.l2_ref)])
    assert _post(st.signer_urls[0] + "/sign", {"tx": tx.hex(), "amounts": amounts}, None)[0] == 401
    assert (
        _post(st.signer_urls[0] + "/sign", {"tx": tx.hex(), "amounts": amounts}, "wrong-token-000000")[0]
        == 401
    )
    # Signer 3's replay disagrees with the anchored root: it refuses L2 withdrawals from that batch.
    code, answer = _ask(st, 3, tx, amounts)
    assert (
        code == 409 and answer["error"] == "UnknownWithdrawal" and "diverged at batch 1" in answer["message"]
    )
    stranger = new_key().p2wpkh_script
    cases = [
        ("WrongPayout", [_l2_item(stranger, ref=st.l2_ref)]),  # an address the withdrawal does not name
        ("WrongPayout", [_l2_item(amount=2 * L2_AMOUNT, ref=st.l2_ref)]),  # a doubled amount
        ("UnknownWithdrawal", [_l2_item(stranger, ref=WithdrawalRef(WithdrawalKind.L2, b"\x42" * 32))]),
        ("UnknownWithdrawal", [PayoutItem(WithdrawalRef.evm(b"\x99" * 32), stranger, BURN)]),
    ]
    for error, items in cases:
        code, answer = _ask(st, 1, *_fed_coin_payout(st, items))
        assert (code, answer["error"]) == (409, error), answer


def test_both_kinds_paid_exactly_once(stack: Stack) -> None:
    st = stack
    key_file = st.tmp / "user.key"
    write_keyfile(key_file, KeyFile(PrivateKey(bytes.fromhex(ANVIL_DEV_KEYS[3][2:])), REGTEST))
    dest = new_key()
    done = st.btcl2(
        "withdraw",
        "--from",
        "evm",
        "--key",
        str(key_file),
        "--amount",
        "0.0005",
        "--btc-address",
        dest.p2wpkh_address,
        "--evm-rpc",
        st.evm.url,
        "--bridge",
        st.dep.bridge.address,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (shown["withdrawal_fee_sats"], shown["receive_sats"]) == (WFEE, BURN - WFEE), shown
    evm_ref = WithdrawalRef.parse(shown["id"])
    (event,) = st.evm.get_events(st.dep.bridge, "WithdrawalRequested", st.dep.deploy_block)
    assert evm_ref == WithdrawalRef.evm(bytes(event.args["id"])) and evm_ref.kind == WithdrawalKind.EVM
    st.burns.append(evm_ref)
    _evm_finalize(st)
    _start_coordinator(st)
    for ref in (st.l2_ref, evm_ref):
        _wait(lambda r=ref: _paid(st, r), f"payout of {ref.text}", st.node)  # type: ignore[misc]
    shown = st.btcl2("withdraw", "status", evm_ref.text, "--coordinator", st.status_url)
    assert shown.returncode == 0 and "confirmed" in shown.stdout and "bitcoin txid" in shown.stdout, shown
    status = _status(st, evm_ref)
    assert status is not None
    assert st.evm.call(st.dep.bridge, "payoutTxid", evm_ref.id) == bytes.fromhex(status["txid"])[::-1]
    payout = Tx.from_hex(st.node.call("getrawtransaction", status["txid"]))
    assert TxOut(BURN - WFEE, dest.p2wpkh_script) in payout.vout
    # Asked again for a paid withdrawal (a fresh transaction from another coin): refused by every signer.
    for i in (2, 3):
        code, answer = _ask(st, i, *_fed_coin_payout(st, [PayoutItem(evm_ref, dest.p2wpkh_script, BURN)]))
        assert (code, answer["error"]) == (409, "AlreadyPaid"), answer


def test_one_signer_down_still_paid(stack: Stack) -> None:
    st = stack
    st.signers[0].terminate()
    st.signers[0].wait(10)
    ref = _burn(st)
    _wait(lambda: _paid(st, ref), f"payout of {ref.text} with signer 1 down", st.node)


@pytest.mark.parametrize("point", ["proposed", "signed", "broadcast", "confirmed", "evm_confirmed"])
def test_coordinator_killed_at_each_step(stack: Stack, point: str) -> None:
    st = stack
    _stop_coordinator(st)
    ref = _burn(st)
    proc = _start_coordinator(st, f"coordinator.{point}")
    _wait(lambda: proc.poll() is not None, f"failpoint {point}", st.node)
    assert proc.returncode == FAILPOINT_EXIT_CODE
    _start_coordinator(st)
    _wait(lambda: _paid(st, ref), f"payout of {ref.text} after a crash at {point}", st.node)


def _payouts_of(st: Stack) -> dict[WithdrawalRef, list[Tx]]:
    """Every federation payout in Bitcoin's best chain, by the withdrawals it pays."""
    found: dict[WithdrawalRef, list[Tx]] = {}
    for height in range(st.from_height, st.node.call("getblockcount") + 1):
        block = Block.decode(bytes.fromhex(st.node.call("getblock", st.node.call("getblockhash", height), 0)))
        for tx in block.txs:
            for ref in paid_refs(tx, PARAMS):
                found.setdefault(ref, []).append(tx)
    return found


def test_evm_reorg_after_burn_pays_nothing_and_robs_no_one(stack: Stack) -> None:
    """The attack: Dave burns, the burn reaches the old depth (2 EVM blocks, then 3), an EVM reorg of 3
    blocks removes it. No BTC may be paid for it; the coordinator keeps running; Erin's next burn gets its
    own id and is paid in full; the Bridge never shows Erin paid by Dave's payout; the audit holds."""
    st = stack
    if st.coordinator is None or st.coordinator.poll() is not None:
        _start_coordinator(st)
    st.evm.transact(st.dep.wbtc, "transfer", ERIN.address, 2 * BURN, sender=USER)
    _evm_finalize(st)
    dave_dest, erin_dest = new_key(), new_key()
    balance = st.evm.call(st.dep.wbtc, "balanceOf", USER.address)
    dave, burn_block = _burn_ref(st, 2 * BURN, dave_dest.p2wpkh_script)
    st.evm.rpc("evm_mine")  # 2 EVM blocks: the depth signers used to require
    at_old_depth = _ask(st, 2, *_fed_coin_payout(st, [PayoutItem(dave, dave_dest.p2wpkh_script, 2 * BURN)]))
    st.evm.rpc("evm_mine")  # 3 blocks
    deadline = time.monotonic() + 10  # the coordinator's chance to pay Dave at the old depth
    while time.monotonic() < deadline and _status(st, dave) is None:
        mine(st.node, 1, MINER.p2wpkh_address)
        time.sleep(0.5)
    st.evm.rpc("anvil_reorg", st.evm.block_number() - burn_block + 1, [])
    assert st.evm.call(st.dep.bridge, "withdrawalHash", dave.id) == bytes(32)  # the burn is gone
    assert st.evm.call(st.dep.wbtc, "balanceOf", USER.address) == balance  # Dave holds his WBTC again
    erin, _ = _burn_ref(st, BURN, erin_dest.p2wpkh_script, sender=ERIN)
    _evm_finalize(st)
    assert erin != dave
    st.burns.append(erin)
    _wait(lambda: _paid(st, erin), f"payout of Erin's {erin.text}", st.node)
    mine(st.node, PARAMS.f_anchor_confs, MINER.p2wpkh_address)
    payouts = _payouts_of(st)
    assert dave not in payouts, "BTC paid for a burn an EVM reorg removed"
    assert all(
        o.script_pubkey != dave_dest.p2wpkh_script for txs in payouts.values() for t in txs for o in t.vout
    )
    (erin_payout,) = payouts[erin]
    assert TxOut(BURN - WFEE, erin_dest.p2wpkh_script) in erin_payout.vout
    assert st.evm.call(st.dep.bridge, "payoutTxid", erin.id) == erin_payout.txid
    assert st.coordinator is not None and st.coordinator.poll() is None, "the coordinator stopped"
    assert (at_old_depth[0], at_old_depth[1].get("error")) == (409, "UnknownWithdrawal"), at_old_depth
    code, answer = _ask(st, 2, *_fed_coin_payout(st, [PayoutItem(dave, dave_dest.p2wpkh_script, 2 * BURN)]))
    assert (code, answer["error"]) == (409, "UnknownWithdrawal"), answer
    report = _audit(st)
    assert report["holds"], report["discrepancies"]


def _audit(st: Stack) -> dict[str, Any]:
    done = st.btcl2(
        "audit", "--bitcoin-rpc", st.node.url, "--bitcoin-cookie", str(st.node.cookie_file),
        "--evm-rpc", st.evm.url, "--bridge", st.dep.bridge.address, "--from-height", str(st.from_height), "--json",
    )  # fmt: skip
    report: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (0 if report["holds"] else 1), done.stderr
    return report


def test_burn_reorged_out_after_its_payout_is_reconciled_not_fatal(stack: Stack) -> None:
    """Beyond the model (a reorg deeper than the finality depth): Dave's burn is paid on Bitcoin, then the
    EVM chain drops it before confirmPayout. The coordinator records it to reconcile and keeps paying; the
    audit names Dave's payout, with its amount, and nothing else; Erin's next burn is hers alone."""
    st = stack
    _stop_coordinator(st)
    dave = _burn(st)
    st.burns.remove(dave)
    burn_block = int(
        st.evm.get_events(st.dep.bridge, "WithdrawalRequested", st.dep.deploy_block)[-1].block_number
    )
    proc = _start_coordinator(st, "coordinator.confirmed")  # dies once the payout has F confirmations
    _wait(lambda: proc.poll() is not None, "the payout of Dave's burn", st.node)
    assert proc.returncode == FAILPOINT_EXIT_CODE
    st.evm.rpc("anvil_reorg", st.evm.block_number() - burn_block + 1, [])
    assert st.evm.call(st.dep.bridge, "withdrawalHash", dave.id) == bytes(32)
    st.vanished.append(dave)
    _start_coordinator(st)
    _wait(lambda: _paid(st, dave), f"the coordinator to finish the payout of {dave.text}", st.node)
    status = _status(st, dave)
    assert status is not None and "finalized view" in str(status["reconcile"]), status
    shown = st.btcl2("withdraw", "status", dave.text, "--coordinator", st.status_url)
    assert shown.returncode == 0 and "RECONCILE" in shown.stdout, shown
    erin_dest = new_key()
    erin, _ = _burn_ref(st, BURN // 2, erin_dest.p2wpkh_script, sender=ERIN)
    _evm_finalize(st)
    st.burns.append(erin)
    _wait(lambda: _paid(st, erin), f"payout of Erin's {erin.text}", st.node)
    assert st.coordinator is not None and st.coordinator.poll() is None, "the coordinator stopped"
    (erin_payout,) = _payouts_of(st)[erin]
    assert TxOut(BURN // 2 - WFEE, erin_dest.p2wpkh_script) in erin_payout.vout
    assert st.evm.call(st.dep.bridge, "payoutTxid", erin.id) == erin_payout.txid
    assert st.evm.call(st.dep.bridge, "payoutTxid", dave.id) == bytes(32)
    report = _audit(st)
    found = {(d["kind"], d["subject"]): d["detail"] for d in report["discrepancies"]}
    assert ("paid-unknown", dave.text) in found and f"{BURN - WFEE} sats" in found[
        ("paid-unknown", dave.text)
    ]
    assert set(found) == {("paid-unknown", dave.text), ("conservation", "federation BTC")}, found
    assert f"({-BURN:+d})" in found[("conservation", "federation BTC")]  # exactly Dave's gain, no one's loss


def _whole_coin_deposit(st: Stack, pool: CoinPool, confs: int) -> tuple[Tx, Tx, str]:
    """A payment of a whole pool coin (50 BTC) to the federation, mined `confs` deep: the federation's
    largest coin. Also returns a conflicting spend of the same pool coin (kept for a reorg) and the
    deposit's block hash."""
    coin = pool.take()
    op = OutPoint(bytes.fromhex(coin.txid)[::-1], coin.vout)
    prev = [(op, TxOut(coin.value, pool.key.p2wpkh_script))]
    to_fed = (TxOut(coin.value - 5_000, PARAMS.federation_script_pubkey),)
    deposit = _signed(pool, Tx(2, (TxIn(op),), to_fed, 0), prev, pool.key.priv)
    back = (TxOut(coin.value - 10_000, pool.key.p2wpkh_script),)
    conflict = _signed(pool, Tx(2, (TxIn(op),), back, 0), prev, pool.key.priv)
    _send(st.node, deposit)
    (block,) = mine(st.node, 1, MINER.p2wpkh_address)
    if confs > 1:
        mine(st.node, confs - 1, MINER.p2wpkh_address)
    return deposit, conflict, block


def _broadcast_payout(st: Stack, ref: WithdrawalRef) -> Tx:
    """The payout of `ref` once the coordinator broadcast it (no block is mined meanwhile)."""
    _wait(lambda: (_status(st, ref) or {}).get("status") == "broadcast", f"broadcast of {ref.text}")
    status = _status(st, ref)
    assert status is not None
    return Tx.from_hex(st.node.call("getrawtransaction", status["txid"]))


def _double_spend_by_reorg(st: Stack, block: str, conflict: Tx) -> None:
    """Take `block` (and what is above it) out of the best chain; mine `conflict` on the new branch."""
    st.node.call("invalidateblock", block)
    st.node.call("generateblock", MINER.p2wpkh_address, [conflict.hex()])


def _paid_on_chain(st: Stack, ref: WithdrawalRef) -> list[str]:
    """Txids of every transaction in the best chain that pays `ref`."""
    found = []
    for height in range(st.from_height, st.node.call("getblockcount") + 1):
        block = Block.decode(bytes.fromhex(st.node.call("getblock", st.node.call("getblockhash", height), 0)))
        found += [tx.txid_hex for tx in block.txs if ref in paid_refs(tx, PARAMS)]
    return found


def test_reorg_of_a_shallow_deposit_freezes_no_payout(stack: Stack, pool: CoinPool) -> None:
    """A deposit with one confirmation is the federation's largest coin when a withdrawal arrives; a
    one-block reorg then double-spends it. The withdrawal is still paid exactly once, and later ones too."""
    st = stack
    _stop_coordinator(st)
    deposit, conflict, block = _whole_coin_deposit(st, pool, 1)
    ref = _burn(st)
    _start_coordinator(st)
    first = _broadcast_payout(st, ref)
    _double_spend_by_reorg(st, block, conflict)
    _wait(lambda: _paid(st, ref), f"payout of {ref.text} after the reorg", st.node)
    later = _burn(st)
    _wait(lambda: _paid(st, later), f"payout of {later.text} after the reorg", st.node)
    assert len(_paid_on_chain(st, ref)) == 1 and len(_paid_on_chain(st, later)) == 1
    # The payout never touched the shallow deposit (fewer than K confirmations).
    assert OutPoint(deposit.txid, 0) not in {i.prevout for i in first.vin}


def test_payout_killed_by_a_reorg_is_rebuilt_and_paid_once(stack: Stack, pool: CoinPool) -> None:
    """A payout spends a deposit K deep; a K-block reorg double-spends that deposit, so the payout can never
    confirm. The coordinator journals it dead, rebuilds it from other coins, the signers sign the rebuild
    after proving the death on their own nodes, and the withdrawal is paid exactly once."""
    st = stack
    _stop_coordinator(st)
    deposit, conflict, block = _whole_coin_deposit(st, pool, PARAMS.k_deposit_confs)
    ref = _burn(st)
    _start_coordinator(st)
    first = _broadcast_payout(st, ref)
    assert OutPoint(deposit.txid, 0) in {i.prevout for i in first.vin}  # the largest coin, K deep
    _stop_coordinator(st)
    _double_spend_by_reorg(st, block, conflict)
    # Killed right after journaling the payout dead, then right after journaling its rebuild.
    for point in ("dead", "rebuilt"):
        proc = _start_coordinator(st, f"coordinator.{point}")
        _wait(lambda p=proc: p.poll() is not None, f"failpoint {point}", st.node)  # type: ignore[misc]
        assert proc.returncode == FAILPOINT_EXIT_CODE
    _start_coordinator(st)
    _wait(lambda: _paid(st, ref), f"payout of {ref.text} rebuilt after the reorg", st.node)
    status = _status(st, ref)
    assert status is not None and status["txid"] != first.txid_hex
    (dead,) = status["dead"]
    assert "can never exist" in dead["reason"] and conflict.txid_hex in dead["reason"], dead
    shown = st.btcl2("withdraw", "status", ref.text, "--coordinator", st.status_url)
    assert shown.returncode == 0 and "dead payout" in shown.stdout and "confirmed" in shown.stdout, shown
    assert _paid_on_chain(st, ref) == [status["txid"]]
    later = _burn(st)
    _wait(lambda: _paid(st, later), f"payout of {later.text} after the rebuild", st.node)


def test_immature_coinbase_and_shallow_coins_never_spent(stack: Stack, pool: CoinPool) -> None:
    """A coinbase paying the federation (the largest coin, K deep but immature) and a deposit with one
    confirmation: the coordinator spends neither, and a signer refuses a payout that does."""
    st = stack
    _stop_coordinator(st)
    fed_address = script_to_address(PARAMS.federation_script_pubkey, REGTEST)
    (cb_block,) = mine(st.node, 1, fed_address)
    mine(st.node, PARAMS.k_deposit_confs, MINER.p2wpkh_address)
    coinbase = OutPoint.from_hex(st.node.call("getblock", cb_block)["tx"][0], 0)
    found = st.node.call("gettxout", coinbase.txid_hex, 0, False)
    assert found["coinbase"] and found["confirmations"] == PARAMS.k_deposit_confs + 1
    cb_value = to_sats(found["value"])
    deposit, _, _ = _whole_coin_deposit(st, pool, 1)
    shallow = OutPoint(deposit.txid, 0)
    item = PayoutItem(WithdrawalRef.evm((9999).to_bytes(32, "big")), new_key().p2wpkh_script, BURN)
    for op, value in ((coinbase, cb_value), (shallow, deposit.vout[0].value)):
        tx = build_payout([item], [FederationCoin(op, value)], PARAMS, 2)
        code, answer = _ask(st, 2, tx, [value])
        assert (code, answer["error"]) == (409, "ShallowInput"), answer
    ref = _burn(st)
    _start_coordinator(st)
    first = _broadcast_payout(st, ref)
    assert not {coinbase, shallow} & {i.prevout for i in first.vin}
    _wait(lambda: _paid(st, ref), f"payout of {ref.text}", st.node)


def _stop_signer(st: Stack, i: int) -> None:
    proc = st.signers[i - 1]
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def test_vanished_burn_in_an_unsigned_payout_wedges_nothing(stack: Stack) -> None:
    """Erin's and Dave's burns are final; the coordinator proposes one payout of both and signer 2 signs it,
    but signer 3 is down, so it is never broadcast. An EVM reorg deeper than the finality depth then removes
    Dave's burn: every signer refuses the payout (UnknownWithdrawal). The coordinator abandons it and pays
    Erin from a replacement that spends its input, which signer 2 signs although it signed the first one
    (the two conflict: at most one can confirm). Dave is never paid, Erin once, and later burns too."""
    st = stack
    _stop_coordinator(st)
    erin_dest, dave_dest = new_key(), new_key()
    st.evm.transact(st.dep.wbtc, "transfer", ERIN.address, BURN, sender=USER)
    erin, _ = _burn_ref(st, BURN, erin_dest.p2wpkh_script, sender=ERIN)
    dave, burn_block = _burn_ref(st, 2 * BURN, dave_dest.p2wpkh_script)
    _evm_finalize(st)
    _stop_signer(st, 1)  # down since test_one_signer_down_still_paid; signer 2 alone signs
    _stop_signer(st, 3)
    _start_coordinator(st)
    _wait(lambda: (_status(st, erin) or {}).get("signatures") == 1, "signer 2's signature")
    first = _status(st, erin)
    assert first is not None and first["status"] == "signing"
    assert (_status(st, dave) or {}).get("payout") == first["payout"]
    _stop_coordinator(st)
    st.evm.rpc("anvil_reorg", st.evm.block_number() - burn_block + 1, [])
    assert st.evm.call(st.dep.bridge, "withdrawalHash", dave.id) == bytes(32)
    _restart_signer(st, 3, wipe=False)
    proc = _start_coordinator(st, "coordinator.abandoned")  # killed right after journaling the abandonment
    _wait(lambda: proc.poll() is not None, "the abandonment", st.node)
    assert proc.returncode == FAILPOINT_EXIT_CODE
    _start_coordinator(st)
    st.burns.append(erin)
    _wait(lambda: _paid(st, erin), f"payout of Erin's {erin.text}", st.node)
    status = _status(st, erin)
    assert status is not None and status["payout"] != first["payout"]
    (abandoned,) = status["dead"]
    assert abandoned["state"] == "abandoned" and dave.text in abandoned["reason"], abandoned
    assert "UnknownWithdrawal" in abandoned["reason"], abandoned
    dave_status = _status(st, dave)
    assert dave_status is not None and dave_status["status"] == "abandoned", dave_status
    payouts = _payouts_of(st)
    assert dave not in payouts and len(payouts[erin]) == 1
    assert TxOut(BURN - WFEE, erin_dest.p2wpkh_script) in payouts[erin][0].vout
    later = _burn(st)
    _wait(lambda: _paid(st, later), f"payout of {later.text} after the abandonment", st.node)
    # Signer 1 is down: the replacement had signer 2's signature, given after it signed the first payout.
    assert "supersedes payout" in (st.tmp / "signer2.log").read_text()


def test_no_withdrawal_paid_twice(stack: Stack) -> None:
    st = stack
    seen: dict[WithdrawalRef, list[str]] = {}
    tip = st.node.call("getblockcount")
    for height in range(st.from_height, tip + 1):
        block = Block.decode(bytes.fromhex(st.node.call("getblock", st.node.call("getblockhash", height), 0)))
        for tx in block.txs:
            for ref in paid_refs(tx, PARAMS):
                seen.setdefault(ref, []).append(tx.txid_hex)
    assert set(seen) == {st.l2_ref, *st.burns, *st.vanished}
    assert all(len(txids) == 1 for txids in seen.values()), seen
    # Finding 9: after every payout so far, the withdrawal fees kept cover the Bitcoin fees paid, and the
    # federation holds all it owes but for the burns an EVM reorg removed after their payout (beyond the model).
    report = _audit(st)
    terms = report["terms"]
    assert terms["withdrawal fees kept"] == WFEE * sum(len(t) for t in seen.values())
    assert report["fee_term"] == terms["withdrawal fees kept"] + terms["payout fees paid"] >= 0, report
    assert terms["federation BTC (UTXO set)"] - report["owed"] == -BURN * len(st.vanished), report
    assert "fee-deficit" not in {d["kind"] for d in report["discrepancies"]}
    for ref in st.burns:
        assert st.evm.call(st.dep.bridge, "payoutTxid", ref.id) == bytes.fromhex(seen[ref][0])[::-1]


def test_payout_passes_testmempoolaccept(stack: Stack) -> None:
    st = stack
    items = [
        PayoutItem(WithdrawalRef.evm((1000 + i).to_bytes(32, "big")), new_key().p2wpkh_script, 20_000 + i)
        for i in range(10)
    ]
    tx, amounts = _fed_coin_payout(st, items)
    sigs = {
        k.pubkey(): [
            k.sign_ecdsa(input_sighash(tx, i, a, PARAMS)) + bytes([SIGHASH_ALL])
            for i, a in enumerate(amounts)
        ]
        for k in FED_KEYS[:2]
    }
    (accept,) = st.node.call("testmempoolaccept", [finalize(tx, sigs, PARAMS).hex()])
    assert accept["allowed"], accept
    assert script_to_address(PARAMS.federation_script_pubkey, REGTEST) is not None
    _stop_coordinator(st)


def _restart_signer(st: Stack, i: int, wipe: bool) -> None:
    """Stop signer i and start it again, with its database deleted when `wipe` (a lost signer record)."""
    proc = st.signers[i - 1]
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    if wipe:
        shutil.rmtree(st.tmp / f"signer{i}")
    cmd = [sys.executable, "-m", "btcl2", "signer", "run"]
    cmd += ["--key", str(st.tmp / f"signer{i}.key"), "--config", str(st.tmp / f"signer{i}.toml")]
    log = (st.tmp / f"signer{i}.log").open("ab")
    st.signers[i - 1] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    token = f"signer-token-{i}-0123456789"
    _wait(lambda: _answers(st.signer_urls[i - 1], token), f"signer {i} restarted")


def test_signer_with_a_lost_record_does_not_sign_a_second_payout(stack: Stack) -> None:
    """A signer restarted on an empty database must not sign a second payout for a withdrawal it signed.

    Payout A (signed by signers 2 and 3) is in the mempool; signer 2 loses its database and restarts. Asked
    to pay the same withdrawal again from another federation coin — a transaction that could confirm beside
    A and pay it twice — it refuses, because it rebuilt its record from its node before serving.
    """
    st = stack
    _stop_coordinator(st)
    dest = new_key().p2wpkh_script
    ref = _burn(st, dest)
    item = PayoutItem(ref, dest, BURN)
    coins = sorted(BitcoinView(st.node.rpc, PARAMS).federation_coins(1), key=lambda c: c.amount)
    assert len(coins) >= 2 and coins[-2].amount > 2 * BURN
    first = build_payout([item], [coins[-1]], PARAMS, 2)
    amounts = [coins[-1].amount]
    sigs: dict[bytes, list[bytes]] = {}
    for i in (2, 3):
        code, answer = _ask(st, i, first, amounts)
        assert code == 200, answer
        sigs[bytes.fromhex(answer["pubkey"])] = [bytes.fromhex(s) for s in answer["signatures"]]
    _send(st.node, finalize(first, sigs, PARAMS))
    assert first.txid_hex in st.node.call("getrawmempool")

    _restart_signer(st, 2, wipe=True)
    second = build_payout([item], [coins[-2]], PARAMS, 2)
    code, answer = _ask(st, 2, second, [coins[-2].amount])
    assert (code, answer.get("error")) == (409, "ConflictingPayout"), answer
    assert first.txid_hex in answer["message"]
    # The payout it did sign is still its own: asked again for it, it signs (the coordinator's retry).
    assert _ask(st, 2, first, amounts)[0] == 200
    mine(st.node, 1, MINER.p2wpkh_address)
    assert paid_refs(Tx.from_hex(st.node.call("getrawtransaction", first.txid_hex)), PARAMS) == (ref,)
