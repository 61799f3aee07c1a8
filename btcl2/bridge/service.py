"""`btcl2 relayer run` wiring: the watcher (DIR/watcher) and the relayer with its journal (DIR/relayer)."""

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from btcl2.bitcoin.rpc import BitcoinRPC, SyncBitcoinRPC
from btcl2.bitcoin.tx import Tx
from btcl2.bridge.artifacts import load_artifact
from btcl2.bridge.evm import Contract, EvmClient
from btcl2.bridge.journal import RelayerStore
from btcl2.bridge.relayer import Relayer, RelayerConfig
from btcl2.bridge.sender import TxSender
from btcl2.core.deposits import parse_deposit
from btcl2.core.params import Params
from btcl2.errors import Critical
from btcl2.storage.db import Database
from btcl2.watcher.events import DepositLike
from btcl2.watcher.watcher import Watcher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RelayerSetup:
    """Everything `serve` needs, from the command line."""

    datadir: Path
    """Holds the watcher's and the relayer's databases."""
    bitcoin_rpc: str
    """Bitcoin Core JSON-RPC URL."""
    bitcoin_cookie: str | None
    """Its cookie file."""
    evm: EvmClient
    """The EVM endpoint."""
    bridge: Contract
    """The Bridge."""
    light_client: str | None
    """The light client's address, or None to take the Bridge's."""
    account: LocalAccount
    """Pays for the relayer's transactions."""
    start_height: int | None
    """First Bitcoin height watched (None: the light client's checkpoint)."""
    history: int
    """Bitcoin blocks the watcher keeps for reorgs."""
    stuck_after: float
    """Seconds before a pending transaction is replaced."""
    config: RelayerConfig
    """Pacing."""
    params: Params = field(default_factory=Params)
    """Rollup parameters: the federation script deposits pay."""
    conflicts: dict[int, str] = field(default_factory=dict)
    """Filled by the relayer: batches the Bridge holds in another version than its replay (read by metrics)."""


def build_relayer(setup: RelayerSetup, node: SyncBitcoinRPC, store: RelayerStore) -> Relayer:
    """The relayer for `setup`, after checking the contracts fit the parameters."""
    evm, bridge = setup.evm, setup.bridge
    lc_address = setup.light_client or str(evm.call(bridge, "lightClient"))
    light_client = Contract(lc_address, load_artifact("BitcoinLightClient"))
    fed = bytes(evm.call(bridge, "federationScript"))
    if fed != setup.params.federation_script_pubkey:
        raise Critical(f"the Bridge's federation script {fed.hex()} is not the parameters' one")
    sender = TxSender(evm, setup.account, store, stuck_after=setup.stuck_after)
    relayer = Relayer(node, evm, bridge, light_client, sender, store, setup.config)
    relayer.conflicts = setup.conflicts
    return relayer


async def serve(setup: RelayerSetup) -> None:
    """Run the relayer and its watcher until SIGINT/SIGTERM or a Critical error; with an AttestationVerifier
    on the Bridge it also submits the batch attestations it finds on Bitcoin."""
    relayer_db = Database(setup.datadir / "relayer")
    watch_db = Database(setup.datadir / "watcher")
    params = setup.params
    spk = params.federation_script_pubkey

    def parser(tx: Tx) -> DepositLike | None:
        return parse_deposit(tx, spk, params)

    try:
        node = SyncBitcoinRPC(setup.bitcoin_rpc, cookie_file=setup.bitcoin_cookie, retries=2, timeout=60.0)
        relayer = build_relayer(setup, node, RelayerStore(relayer_db))
        start = setup.start_height if setup.start_height is not None else relayer.checkpoint_height
        async with BitcoinRPC(setup.bitcoin_rpc, cookie_file=setup.bitcoin_cookie) as rpc:
            relayer.watcher = Watcher(
                rpc,
                watch_db,
                parser,
                [relayer],
                k=relayer.k,
                start_height=start,
                history=setup.history,
                poll_interval=setup.config.poll_interval,
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, relayer.stop)
            if int(str(setup.evm.call(setup.bridge, "attestationVerifier")), 16) != 0:
                # Imported here: only a relayer that submits attestations loads the BLS machinery.
                from btcl2.bridge.attest import ReplayAttestations

                # Attestations are found by replaying Bitcoin from the L2's start, as every signer does.
                relayer.attestations = ReplayAttestations(node, params, start)
            log.info(
                "relayer: %s for Bridge %s, light client %s, K=%d, watching from height %d, attestations %s",
                setup.account.address,
                setup.bridge.address,
                relayer.light_client.address,
                relayer.k,
                start,
                "on" if relayer.attestations is not None else "off (no verifier)",
            )
            await relayer.run()
    finally:
        watch_db.close()
        relayer_db.close()


def journal_report(db: Database) -> dict[str, Any]:
    """The journal and the deposits as JSON-ready objects (hashes in display order)."""
    store = RelayerStore(db)
    txs = [
        {
            "id": e.id,
            "purpose": e.purpose.name.lower(),
            "subject": e.subject.hex(),
            "nonce": e.nonce,
            "status": e.status.name.lower(),
            "tx_hash": "0x" + (e.mined_hash or e.latest.tx_hash).hex(),
            "versions": ["0x" + v.tx_hash.hex() for v in e.versions],
            "block_number": e.block_number,
            "note": e.note,
        }
        for e in store.entries()
    ]
    deposits = [
        {
            "outpoint": f"{d.outpoint.txid_hex}:{d.outpoint.vout}",
            "recipient": "0x" + d.recipient.hex(),
            "amount_sats": d.amount,
            "height": d.height,
            "block": d.block_hash[::-1].hex(),
            "status": d.status.name.lower(),
            "journal_id": d.journal_id,
            "mint_tx": "0x" + d.mint_tx.hex() if d.mint_tx else None,
            "reason": d.reason,
        }
        for d in store.deposits()
    ]
    attestations = [
        {
            "batch": a.batch_number,
            "btc_txid": a.btc_txid[::-1].hex(),
            "status": a.status.name.lower(),
            "journal_id": a.journal_id,
            "evm_tx": "0x" + a.evm_tx.hex() if a.evm_tx else None,
            "reason": a.reason,
        }
        for a in store.attestations()
    ]
    return {
        "last_event": store.last_seq(),
        "transactions": txs,
        "deposits": deposits,
        "attestations": attestations,
    }
