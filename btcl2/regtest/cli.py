"""`btcl2 regtest ...`: the embedded Bitcoin regtest node."""

import asyncio
import logging
from pathlib import Path

import click

from btcl2.errors import BtcL2Error


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
def regtest_up(
    datadir: Path, rpcport: int, rpcbind: str, rpcuser: str | None, rpcpassword: str | None, debug: bool
) -> None:
    """Run a regtest node in the foreground, serving Bitcoin Core's JSON-RPC, until SIGINT/SIGTERM or `stop`.

    Without --rpcuser/--rpcpassword it writes DATADIR/regtest/.cookie as Core does and removes it on exit.
    """
    from btcl2.regtest.daemon import NodeConfig, serve

    if (rpcuser is None) != (rpcpassword is None):
        raise click.UsageError("--rpcuser and --rpcpassword go together")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        logging.getLogger("bitcoinkernel").setLevel(logging.WARNING)
    config = NodeConfig(datadir.absolute(), rpcport, rpcbind, rpcuser, rpcpassword)
    try:
        asyncio.run(serve(config))
    except OSError as e:
        raise click.ClickException(f"cannot serve RPC on {rpcbind}:{rpcport}: {e.strerror or e}") from e
    except BtcL2Error as e:
        raise click.ClickException(str(e)) from e
