"""Faults the soak harness injects besides crashes: Bitcoin reorgs (invalidateblock and a longer competing
branch), EVM reorgs (anvil_reorg) and RPC outages (the proxy)."""

import time
from random import Random

from btcl2.bitcoin.address import REGTEST
from btcl2.bitcoin.rpc import SyncBitcoinRPC
from btcl2.bitcoin.tx import Tx
from btcl2.bridge.evm import EvmClient
from btcl2.core.deposits import parse_deposit
from btcl2.core.params import Params
from btcl2.devnet.stack import seed_key
from btcl2.soak.proxy import FaultyProxy, Mode
from btcl2.wallet.keyfile import KeyFile


def reorg_miner(replaced: str) -> str:
    """The address that mines the branch replacing block `replaced` (hex): one of its own, so the first
    competing block differs from the one it replaces even when that block was mined the same way, from the
    same mempool, in the same second (Core would answer duplicate-invalid)."""
    return KeyFile(seed_key(b"btcl2 soak reorg miner " + replaced.encode()), REGTEST).btc_address


def _has_deposit(rpc: SyncBitcoinRPC, height: int, params: Params) -> bool:
    block = rpc.call("getblock", rpc.call("getblockhash", height), 2)
    spk = params.federation_script_pubkey
    return any(parse_deposit(Tx.from_hex(tx["hex"]), spk, params) is not None for tx in block["tx"])


def bitcoin_reorg(rpc: SyncBitcoinRPC, depth: int, miner: str, params: Params) -> int:
    """Replace the last `depth` blocks by a branch of depth + 1 (the disconnected transactions return to
    the mempool and are mined again in it); returns the fork height.

    A reorg of K or more blocks must not disconnect a credited deposit: that is outside the security model
    (the sequencer halts by design, DESIGN.md invariant 4). So before such a reorg, when one of the blocks
    it would replace holds a deposit, empty blocks push the deposits deeper first.
    """
    if depth >= params.k_deposit_confs:
        tip = int(rpc.call("getblockcount"))
        if any(_has_deposit(rpc, h, params) for h in range(tip - depth + 1, tip + 1)):
            for _ in range(depth):
                rpc.call("generateblock", miner, [])
    tip = int(rpc.call("getblockcount"))
    fork = tip - depth
    replaced = rpc.call("getblockhash", fork + 1)
    rpc.call("invalidateblock", replaced)
    rpc.call("generatetoaddress", depth + 1, reorg_miner(replaced))
    return fork


def evm_reorg(evm: EvmClient, depth: int) -> None:
    """anvil_reorg: the last `depth` EVM blocks replaced by empty ones (their transactions are dropped, as
    a reorg that the senders must notice and resend)."""
    evm.rpc("anvil_reorg", depth, [])


def outage(proxy: FaultyProxy, rng: Random, seconds: float) -> Mode:
    """One outage of `seconds`: the proxy delays, drops or resets every connection meanwhile."""
    mode = rng.choice([Mode.DELAY, Mode.DROP, Mode.RESET])
    proxy.set(mode, delay=rng.uniform(0.5, 3.0))
    time.sleep(seconds)
    proxy.set(Mode.PASS)
    return mode
