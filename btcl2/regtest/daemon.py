"""Runs the embedded regtest node in the foreground until SIGINT, SIGTERM or the `stop` RPC."""

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

# Importing the method modules registers their RPCs.
from btcl2.regtest import rpc_blockchain, rpc_control, rpc_mempool, rpc_mining, rpc_rawtx  # noqa: F401
from btcl2.regtest.node import Node
from btcl2.regtest.rpcserver import RPCServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeConfig:
    """How to run one embedded node."""

    datadir: Path
    """Top data directory; chain data lives in DATADIR/regtest like Core's."""
    rpcport: int = 18443
    rpcbind: str = "127.0.0.1"
    rpcuser: str | None = None
    rpcpassword: str | None = None


async def serve(config: NodeConfig, ready: asyncio.Event | None = None) -> None:
    """Open the node, serve RPC until asked to stop, then shut down cleanly."""
    netdir = config.datadir / "regtest"
    netdir.mkdir(parents=True, exist_ok=True)
    node = Node(netdir)
    server = RPCServer(node, user=config.rpcuser, password=config.rpcpassword, cookie_path=netdir / ".cookie")
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.rpcbind, config.rpcport)
    try:
        await site.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop_requested.set)
        log.info(
            "btcl2 regtest node at height %d, RPC on %s:%d", node.chain.height, config.rpcbind, config.rpcport
        )
        if ready is not None:
            ready.set()
        await server.stop_requested.wait()
        await asyncio.sleep(0.05)  # let the `stop` reply leave before the listener closes
    finally:
        await runner.cleanup()
        server.remove_cookie()
        node.close()
        log.info("btcl2 regtest node stopped")
