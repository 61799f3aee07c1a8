"""`python -m btcl2.watcher`: run the watcher alone and print its events as JSON lines on stdout.

Deposits are payments to one script (--script); every line is one event with its sequence number. After
a restart some events may be printed again with the same sequence number: readers de-duplicate by it.
"""

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import click

from btcl2.bitcoin.rpc import BitcoinRPC
from btcl2.storage.db import Database
from btcl2.watcher.events import WatcherEvent, event_to_json, payments_to
from btcl2.watcher.watcher import Watcher


class JsonLinesPrinter:
    """A consumer that writes each event to stdout as one JSON line, flushed at once."""

    def on_event(self, seq: int, event: WatcherEvent) -> None:
        sys.stdout.write(json.dumps(event_to_json(seq, event), sort_keys=True) + "\n")
        sys.stdout.flush()


async def _main(
    rpc_url: str,
    cookie: str | None,
    datadir: Path,
    k: int,
    script: bytes,
    start_height: int,
    history: int,
    poll_interval: float,
) -> None:
    db = Database(datadir)
    try:
        async with BitcoinRPC(rpc_url, cookie_file=cookie) as rpc:
            watcher = Watcher(
                rpc,
                db,
                payments_to(script),
                [JsonLinesPrinter()],
                k=k,
                start_height=start_height,
                history=history,
                poll_interval=poll_interval,
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, watcher.stop)
            logging.getLogger(__name__).info(
                "watcher running (pid %d): SIGTERM stops it cleanly", os.getpid()
            )
            await watcher.run()
    finally:
        db.close()


@click.command()
@click.option("--rpc-url", required=True, help="Bitcoin Core JSON-RPC endpoint, e.g. http://127.0.0.1:18443/")
@click.option("--cookie", default=None, help="Path of the node's .cookie file.")
@click.option(
    "--datadir", required=True, type=click.Path(path_type=Path), help="The watcher's database directory."
)
@click.option(
    "-k", "--confirmations", "k", default=2, show_default=True, help="Deposit confirmation depth K."
)
@click.option(
    "--script", "script_hex", required=True, help="Hex scriptPubKey whose payments count as deposits."
)
@click.option("--start-height", default=0, show_default=True, help="First block height to look at.")
@click.option("--history", default=1000, show_default=True, help="Blocks of history kept for reorgs.")
@click.option("--poll-interval", default=1.0, show_default=True, help="Seconds between polls of the node.")
def main(
    rpc_url: str,
    cookie: str | None,
    datadir: Path,
    k: int,
    script_hex: str,
    start_height: int,
    history: int,
    poll_interval: float,
) -> None:
    """Follow Bitcoin and print block and deposit events as JSON lines."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        script = bytes.fromhex(script_hex)
    except ValueError:
        raise click.BadParameter(f"not hex: {script_hex!r}", param_hint="--script") from None
    asyncio.run(_main(rpc_url, cookie, datadir, k, script, start_height, history, poll_interval))


if __name__ == "__main__":
    main()
