"""`btcl2 poster run` (the poster as its own process) and `btcl2 poster status`."""

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from btcl2.bitcoin.address import network_by_name
from btcl2.bitcoin.rpc import BitcoinRPC, RPCError
from btcl2.core.params import Params
from btcl2.errors import BtcL2Error
from btcl2.logs import log_format_option, setup_logging
from btcl2.poster.attest import AttestationJournal, AttestationPoster, load_signers
from btcl2.poster.fees import FeePolicy
from btcl2.poster.journal import Journal
from btcl2.poster.service import Poster, PosterSettings
from btcl2.poster.sources import BatchSource, RpcBatchSource
from btcl2.storage.db import Database
from btcl2.wallet.keyfile import load_keyfile

log = logging.getLogger(__name__)

LEGACY_ATTESTATION_JOURNAL = "attestations.json"
"""Where earlier versions kept the attestation journal (next to the poster's database); imported once."""
JOURNAL_DIR = "poster"
"""The journal's LevelDB directory under the datadir (the sequencer's datadir with --post)."""


def make_poster(
    rpc: BitcoinRPC,
    db: Database,
    batches: BatchSource,
    key_path: Path,
    params: Params,
    settings: PosterSettings,
    attest_signers: Path | None = None,
) -> Poster:
    """A Poster over the journal in `db`, signing with the key file at `key_path`.

    With `attest_signers` (or the environment variable BTCL2_ATTEST_SIGNERS) naming a TOML file of
    `[[signers]]` (url, token), it also posts the federation's batch attestations, journaled in the same
    database (a JSON journal `<journal dir>/../attestations.json` of an earlier version is imported once)."""
    keyfile = load_keyfile(key_path, network_by_name(params.network))
    poster = Poster(rpc, Journal(db), batches, keyfile, params, settings)
    signers_file = attest_signers or os.environ.get("BTCL2_ATTEST_SIGNERS")
    if signers_file:
        AttestationJournal(db).import_legacy(Path(db.path).parent / LEGACY_ATTESTATION_JOURNAL)
        poster.attester = AttestationPoster(db, load_signers(Path(signers_file)), batches, params)
    return poster


async def _serve(
    datadir: Path,
    bitcoin_rpc: str,
    cookie: str | None,
    sequencer_rpc: str,
    key: Path,
    settings: PosterSettings,
) -> None:
    params = Params()
    db = Database(datadir / JOURNAL_DIR)
    source = RpcBatchSource(sequencer_rpc)
    try:
        async with BitcoinRPC(bitcoin_rpc, cookie_file=cookie) as rpc:
            poster = make_poster(rpc, db, source, key, params, settings)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, poster.stop)
            log.info("poster: next batch %d, journal %s", poster.journal.next_batch, db.path)
            await poster.run()
    finally:
        await source.close()
        db.close()


@click.group()
def poster() -> None:
    """The anchor poster."""


@poster.command("run")
@click.option(
    "--datadir", type=click.Path(path_type=Path, file_okay=False), required=True, help="Data directory."
)
@click.option("--bitcoin-rpc", required=True, help="Bitcoin Core JSON-RPC URL.")
@click.option("--bitcoin-cookie", default=None, help="Path of the Bitcoin node's .cookie file.")
@click.option("--sequencer-rpc", required=True, help="The sequencer's JSON-RPC URL (batches are read there).")
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The poster's key file (its P2WPKH address pays the anchors).",
)
@click.option(
    "--fee-floor", type=click.IntRange(1), default=2, show_default=True, help="Lowest fee rate, sat/vB."
)
@click.option(
    "--fee-ceiling", type=click.IntRange(1), default=100, show_default=True, help="Highest fee rate, sat/vB."
)
@click.option(
    "--conf-target",
    type=click.IntRange(1, 1008),
    default=3,
    show_default=True,
    help="estimatesmartfee target, blocks.",
)
@click.option(
    "--bump-after",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Blocks unconfirmed before a fee bump.",
)
@click.option("--poll-interval", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--debug", is_flag=True, help="Log at debug level.")
@log_format_option
def run(
    datadir: Path,
    bitcoin_rpc: str,
    bitcoin_cookie: str | None,
    sequencer_rpc: str,
    key_path: Path,
    fee_floor: int,
    fee_ceiling: int,
    conf_target: int,
    bump_after: int,
    poll_interval: float,
    debug: bool,
    log_format: str,
) -> None:
    """Anchor every batch the sequencer seals: journaled, fee-bumped, re-posted after a reorg."""
    setup_logging(logging.DEBUG if debug else logging.INFO, log_format)
    try:
        settings = PosterSettings(FeePolicy(fee_floor, fee_ceiling, conf_target, bump_after), poll_interval)
        asyncio.run(_serve(datadir, bitcoin_rpc, bitcoin_cookie, sequencer_rpc, key_path, settings))
    except BtcL2Error as exc:
        log.critical("poster halted: %s: %s", type(exc).__name__, exc)
        sys.exit(1)


def _rows_from_journal(datadir: Path, first: int) -> list[dict[str, Any]]:
    db = Database(datadir / JOURNAL_DIR)
    try:
        journal = Journal(db)
        f = Params().f_anchor_confs
        return [
            {"batch": n, **_anchor_doc(journal.batch_anchor(n, journal.tip, f))}
            for n in range(first, journal.next_batch)
        ]
    finally:
        db.close()


def _anchor_doc(anchor: Any) -> dict[str, Any]:
    return {"status": anchor.status, "txids": list(anchor.txids), "confirmations": anchor.confirmations}


async def _rows_from_sequencer(url: str, first: int) -> list[dict[str, Any]]:
    source = RpcBatchSource(url)
    try:
        head = await source.head()
        rows = []
        for n in range(first, -1 if head is None else head + 1):
            answer = await source.call("l2_getBatch", n)
            anchor = answer.get("result", {}).get("anchor")
            if anchor is None:
                anchor = {"status": "unknown", "txids": [], "confirmations": 0}
            rows.append({"batch": n, **anchor})
        return rows
    finally:
        await source.close()


@poster.command("status")
@click.option(
    "--datadir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Read the journal there (the poster must not be running).",
)
@click.option("--sequencer-rpc", default=None, help="Ask a sequencer running with --post instead.")
@click.option(
    "--from", "first", type=click.IntRange(0), default=0, show_default=True, help="First batch shown."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(datadir: Path | None, sequencer_rpc: str | None, first: int, as_json: bool) -> None:
    """Per batch: sealed, broadcast, anchored (1 confirmation) or final (F), its txids and confirmations."""
    if (datadir is None) == (sequencer_rpc is None):
        raise click.UsageError("give exactly one of --datadir and --sequencer-rpc")
    try:
        if datadir is not None:
            rows = _rows_from_journal(datadir, first)
        else:
            assert sequencer_rpc is not None
            rows = asyncio.run(_rows_from_sequencer(sequencer_rpc, first))
    except (BtcL2Error, RPCError) as exc:
        click.echo(f"poster status: error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        with contextlib.suppress(KeyError):
            click.echo(
                f"batch {row['batch']}: {row['status']}, {row['confirmations']} confirmations"
                f"{': ' + ', '.join(row['txids']) if row['txids'] else ''}"
            )
