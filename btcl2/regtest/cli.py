"""`btcl2 regtest ...`: the embedded Bitcoin regtest node."""

import asyncio
import logging
from pathlib import Path

import click

from btcl2.errors import BtcL2Error
from btcl2.logs import log_format_option, metrics_port_option, setup_logging


@click.group()
def regtest() -> None:
    """The embedded Bitcoin regtest node (Bitcoin Core's consensus through libbitcoinkernel)."""


@regtest.command("up")
@click.option(
    "--datadir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Data directory."
)
@click.option("--rpcport", default=18443, show_default=True, type=click.IntRange(1, 65535))
@click.option("--rpcbind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--rpcuser", default=None, help="RPC user (without it a cookie file is written).")
@click.option("--rpcpassword", default=None, help="RPC password.")
@click.option("--debug", is_flag=True, help="Log every kernel and RPC event.")
@log_format_option
@metrics_port_option
def regtest_up(
    datadir: Path,
    rpcport: int,
    rpcbind: str,
    rpcuser: str | None,
    rpcpassword: str | None,
    debug: bool,
    log_format: str,
    metrics_port: int | None,
) -> None:
    """Run a regtest node in the foreground, serving Bitcoin Core's JSON-RPC, until SIGINT/SIGTERM or `stop`.

    Without --rpcuser/--rpcpassword it writes DATADIR/regtest/.cookie as Core does and removes it on exit.
    """
    from btcl2.regtest.daemon import NodeConfig, serve

    if (rpcuser is None) != (rpcpassword is None):
        raise click.UsageError("--rpcuser and --rpcpassword go together")
    setup_logging(logging.DEBUG if debug else logging.INFO, log_format)
    # --- metrics (--metrics-port): height and mempool size, read through the node's own RPC
    if metrics_port is not None:
        from btcl2.service_metrics import node_gauges, start_standalone

        cookie = None if rpcuser else str(datadir.absolute() / "regtest" / ".cookie")
        url = f"http://{rpcbind}:{rpcport}/"
        start_standalone("regtest", metrics_port, node_gauges(url, cookie, rpcuser, rpcpassword))
    # --- end metrics
    if not debug:
        logging.getLogger("bitcoinkernel").setLevel(logging.WARNING)
    config = NodeConfig(datadir.absolute(), rpcport, rpcbind, rpcuser, rpcpassword)
    try:
        asyncio.run(serve(config))
    except OSError as e:
        raise click.ClickException(f"cannot serve RPC on {rpcbind}:{rpcport}: {e.strerror or e}") from e
    except BtcL2Error as e:
        raise click.ClickException(str(e)) from e
