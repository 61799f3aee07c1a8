"""`btcl2 sequencer run`: the sequencer, its watcher and its JSON-RPC API in one process."""

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from btcl2.bitcoin.rpc import BitcoinRPC, SyncBitcoinRPC
from btcl2.bitcoin.tx import Tx
from btcl2.core.deposits import parse_deposit
from btcl2.errors import BtcL2Error, Temporary
from btcl2.explorer.routes import install as install_explorer
from btcl2.logs import log_format_option, setup_logging
from btcl2.poster.api import install as install_poster_api
from btcl2.poster.cli import JOURNAL_DIR, make_poster
from btcl2.poster.service import PosterSettings
from btcl2.poster.sources import StoreBatchSource
from btcl2.sequencer.adopt import DerivedChain
from btcl2.sequencer.anchors import ChainAnchors
from btcl2.sequencer.api import APIServer, SequencerAPI
from btcl2.sequencer.config import SequencerConfig, load_config
from btcl2.sequencer.fees import FeeRatePoller
from btcl2.sequencer.service import Sequencer
from btcl2.sequencer.store import SequencerStore
from btcl2.storage.db import Database
from btcl2.watcher.events import DepositLike
from btcl2.watcher.watcher import Watcher

log = logging.getLogger(__name__)


class NodeTipPoller:
    """Keeps the sequencer told of the Bitcoin node's tip height, for the L1-origin lag check."""

    def __init__(self, rpc: BitcoinRPC, seq: Sequencer, interval: float) -> None:
        self.rpc = rpc
        self.seq = seq
        self.interval = interval
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Poll getblockcount until stop(); a node that is down is retried."""
        while not self._stopping.is_set():
            try:
                self.seq.node_tip = int(await self.rpc.call("getblockcount"))
            except Temporary as exc:
                log.warning("sequencer: bitcoin node unreachable: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    def stop(self) -> None:
        """Ask run() to return."""
        self._stopping.set()


async def _start_height(config: SequencerConfig, store: SequencerStore, rpc: BitcoinRPC) -> int:
    """The watcher's start height: configured, or the node's tip at the first run, then fixed."""
    stored = store.start_height()
    if stored is not None:
        return stored
    height = config.start_height if config.start_height is not None else int(await rpc.call("getblockcount"))
    store.set_start_height(height)
    return height


async def serve(config: SequencerConfig, poster_key: Path | None = None) -> None:
    """Run the watcher, the sequencer and the API until SIGINT/SIGTERM or a Critical error; with
    `poster_key`, the poster too (`--post`)."""
    params = config.params
    seq_db = Database(config.datadir / "sequencer")
    watch_db = Database(config.datadir / "watcher")
    post_db: Database | None = None
    try:
        async with BitcoinRPC(config.bitcoin_rpc, cookie_file=config.bitcoin_cookie) as rpc:
            store = SequencerStore(seq_db)
            start = await _start_height(config, store, rpc)
            spk = params.federation_script_pubkey

            def parser(tx: Tx) -> DepositLike | None:
                return parse_deposit(tx, spk, params)

            seq = Sequencer(
                store,
                params,
                None,
                batch_max_txs=config.batch_max_txs,
                batch_interval=config.batch_interval,
                mempool_max=config.mempool_max,
                fees=config.fee_policy(),
            )
            watcher = Watcher(
                rpc,
                watch_db,
                parser,
                [seq],
                k=params.k_deposit_confs,
                start_height=start,
                history=config.watcher_history,
                poll_interval=config.poll_interval,
            )
            seq.view = watcher.view
            seq.set_logged_seq(lambda: watcher.next_seq)
            api = APIServer(
                SequencerAPI(seq, rate=config.rate_limit, burst=config.rate_burst),
                config.rpchost,
                config.rpcport,
            )
            tip = NodeTipPoller(rpc, seq, config.poll_interval)
            fee_rates = FeeRatePoller(rpc, seq, seq.fees.rates, config.fee_interval)
            await fee_rates.refresh()  # the rate before the API answers; the floor if the node has none
            services: list[Any] = [watcher, seq, api, tip, fee_rates]
            # --- poster (--post): same TaskGroup, reads batches from the store, answers anchor status.
            poster = None
            if poster_key is not None:
                post_db = Database(config.datadir / JOURNAL_DIR)
                settings = PosterSettings(seq.fees.rates, poll_interval=config.poll_interval)
                poster = make_poster(rpc, post_db, StoreBatchSource(store), poster_key, params, settings)
                seq.anchors = poster
                services.append(poster)
            else:
                # The poster runs elsewhere (`btcl2 poster run`): the anchors are read from the chain.
                node = SyncBitcoinRPC(config.bitcoin_rpc, cookie_file=config.bitcoin_cookie)
                chain_anchors = ChainAnchors(node, params, start, _stored_hash(store), config.poll_interval)
                seq.anchors = chain_anchors
                services.append(chain_anchors)
            # Replay following the best chain: the batches the sequencer adopts after a reorg.
            follower = SyncBitcoinRPC(config.bitcoin_rpc, cookie_file=config.bitcoin_cookie)
            derived = DerivedChain(follower, params, start, config.poll_interval)
            seq.derived = derived
            services.append(derived)
            install_poster_api(api.api, seq, poster)
            # --- end poster
            # --- observability: /metrics, /explorer/, l2_listBatches, l2_federation (btcl2/explorer/)
            install_explorer(api.api, seq, poster, rpc)
            # --- end observability
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda: [s.stop() for s in services])
            head = seq.state.head
            log.info(
                "sequencer: head batch %s root %s; watching from height %d",
                None if head is None else head.number,
                seq.state.root.hex(),
                start,
            )
            async with asyncio.TaskGroup() as tg:
                for service in services:
                    tg.create_task(_supervised(service, services))
    finally:
        if post_db is not None:
            post_db.close()
        watch_db.close()
        seq_db.close()


def _stored_hash(store: SequencerStore) -> Callable[[int], bytes | None]:
    def batch_hash(number: int) -> bytes | None:
        batch = store.batch(number)
        return None if batch is None else batch.hash

    return batch_hash


async def _supervised(service: Any, services: list[Any]) -> None:
    """Run one service; if it fails, stop the others so the process exits (and say why)."""
    try:
        await service.run()
    except BaseException:
        for other in services:
            other.stop()
        raise


@click.group()
def sequencer() -> None:
    """The L2 sequencer."""


@sequencer.command("run")
@click.option("--datadir", type=click.Path(path_type=Path), default=None, help="Database directory.")
@click.option("--bitcoin-rpc", default=None, help="Bitcoin Core JSON-RPC URL, e.g. http://127.0.0.1:18443/")
@click.option("--bitcoin-cookie", default=None, help="Path of the Bitcoin node's .cookie file.")
@click.option("--rpcport", type=click.IntRange(1, 65535), default=None, help="JSON-RPC port [8600].")
@click.option(
    "--batch-max-txs", type=click.IntRange(1), default=None, help="Seal when this many txs are pending."
)
@click.option(
    "--batch-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds between batches [2].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML configuration file (flags override it).",
)
@click.option("--post", is_flag=True, help="Also run the poster: anchor every sealed batch on Bitcoin.")
@click.option(
    "--poster-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The poster's key file (required with --post).",
)
@click.option("--debug", is_flag=True, help="Log at debug level.")
@log_format_option
def run(
    datadir: Path | None,
    bitcoin_rpc: str | None,
    bitcoin_cookie: str | None,
    rpcport: int | None,
    batch_max_txs: int | None,
    batch_interval: float | None,
    config_file: Path | None,
    post: bool,
    poster_key: Path | None,
    debug: bool,
    log_format: str,
) -> None:
    """Run the sequencer: follow Bitcoin deposits, accept L2 transactions, seal batches, serve JSON-RPC,
    Prometheus metrics at /metrics and the explorer at /explorer/."""
    setup_logging(logging.DEBUG if debug else logging.INFO, log_format)
    flags = {
        "datadir": datadir,
        "bitcoin_rpc": bitcoin_rpc,
        "bitcoin_cookie": bitcoin_cookie,
        "rpcport": rpcport,
        "batch_max_txs": batch_max_txs,
        "batch_interval": batch_interval,
    }
    try:
        config = load_config(config_file, flags)
    except BtcL2Error as exc:
        raise click.UsageError(str(exc)) from None
    if post and poster_key is None:
        raise click.UsageError("--post needs --poster-key")
    try:
        asyncio.run(serve(config, poster_key if post else None))
    except* BtcL2Error as group:
        for error in group.exceptions:
            log.critical("sequencer halted: %s: %s", type(error).__name__, error)
        sys.exit(1)
