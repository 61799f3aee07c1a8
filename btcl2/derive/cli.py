"""`btcl2 replay`: rebuild the L2 from Bitcoin alone and check every batch."""

import json
import sys
import time
from pathlib import Path

import click

from btcl2.bitcoin.rpc import RPCError, SyncBitcoinRPC
from btcl2.core.params import Params
from btcl2.derive.l1 import RpcBlockSource
from btcl2.derive.pipeline import Derivation, Progress
from btcl2.derive.report import report_json, summary
from btcl2.derive.store import DerivedStore
from btcl2.errors import BtcL2Error

EXIT_OK = 0
EXIT_DIVERGED = 1
EXIT_ERROR = 2
PROGRESS_EVERY = 2.0
"""Seconds between progress lines on stderr."""


class _ProgressLine:
    """Prints "height h/tip, batches n" to stderr at most every PROGRESS_EVERY seconds."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._last = time.monotonic()

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if self._enabled and now - self._last >= PROGRESS_EVERY:
            self._last = now
            click.echo(
                f"replay: height {p.height}/{p.tip}, transfers {p.transfers}, deposits {p.deposits_credited}",
                err=True,
            )


@click.command("replay")
@click.option(
    "--bitcoin-rpc",
    default=None,
    help="Bitcoin Core JSON-RPC URL, e.g. http://127.0.0.1:18443/ [default: the devnet's; required elsewhere].",
)
@click.option(
    "--bitcoin-cookie",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Bitcoin Core's .cookie file (user:password) [default: the devnet's].",
)
@click.option(
    "--from-height",
    type=click.IntRange(0),
    default=None,
    show_default="the devnet's start height, else 0",
    help="The L2's start height: anchors and deposits below it are ignored.",
)
@click.option(
    "--to-batch", type=click.IntRange(0), default=None, help="Stop after this batch; fail if it is missing."
)
@click.option(
    "--datadir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the derived state to LevelDB here (cleared first).",
)
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of the summary.")
def replay(
    bitcoin_rpc: str | None,
    bitcoin_cookie: Path | None,
    from_height: int | None,
    to_batch: int | None,
    datadir: Path | None,
    report_path: Path | None,
    as_json: bool,
) -> None:
    """Derive the L2 from Bitcoin alone: find every anchor, decode and re-execute each batch, check batch
    hash, data hash, state roots and forced inclusion of deposits.

    On a devnet (--devnet DIR, BTCL2_DEVNET or ~/.btcl2/devnet) the node, its cookie and the start height come
    from devnet.toml; elsewhere give --bitcoin-rpc (and --from-height if the L2 did not start at 0).

    Exit 0 when everything matches, 1 at a divergence (named: batch, transaction, expected vs got),
    2 when the node cannot be used.
    """
    if not bitcoin_rpc:
        click.echo("replay: error: no Bitcoin node: pass --bitcoin-rpc URL or run on a devnet", err=True)
        sys.exit(EXIT_ERROR)
    from_height = 0 if from_height is None else from_height
    params = Params()
    rpc = SyncBitcoinRPC(bitcoin_rpc, cookie_file=None if bitcoin_cookie is None else str(bitcoin_cookie))
    store = DerivedStore(datadir) if datadir is not None else None
    started = time.perf_counter()
    try:
        outcome = Derivation(
            RpcBlockSource(rpc),
            params,
            from_height,
            to_batch,
            store,
            _ProgressLine(sys.stderr.isatty() or not as_json),
        ).run()
    except (BtcL2Error, RPCError) as exc:
        click.echo(f"replay: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    finally:
        rpc.close()
        if store is not None:
            store.close()
    doc = report_json(outcome, time.perf_counter() - started)
    if report_path is not None:
        report_path.write_text(json.dumps(doc, indent=2) + "\n")
    click.echo(json.dumps(doc, indent=2) if as_json else summary(doc))
    sys.exit(EXIT_OK if doc["ok"] else EXIT_DIVERGED)
