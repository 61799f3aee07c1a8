"""`btcl2 audit`: read conservation and exactly-once from the chains, print every term, exit non-zero naming
what broke."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from btcl2.audit.conservation import AuditReport, audit
from btcl2.bitcoin.tx import COIN
from btcl2.wallet.clicommon import UserCommand, bitcoin_options, emit, fail, json_option

_FROM_FLAGS = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the audit reads each chain."""

    bitcoin_rpc: str
    """Bitcoin Core JSON-RPC URL."""
    bitcoin_cookie: str | None
    """Its cookie file."""
    evm_rpc: str
    """The EVM JSON-RPC URL."""
    bridge: str
    """The Bridge contract."""
    from_height: int
    """The L2's start height on Bitcoin."""


def devnet_endpoints(datadir: Path) -> Endpoints:
    """The endpoints of the devnet in `datadir` (its devnet.toml)."""
    from btcl2.devnet.config import DevnetFileError, read_devnet

    doc = read_devnet(datadir)
    if doc.contracts is None or doc.from_height is None:
        raise DevnetFileError(f"the devnet in {datadir} has not finished its first start")
    return Endpoints(
        doc.bitcoin_rpc, str(doc.bitcoin_cookie), doc.evm_rpc, doc.contracts.bridge, doc.from_height
    )


def run_audit(where: Endpoints) -> AuditReport:
    """One audit of the chains at `where` (the token is the Bridge's own `wbtc()`)."""
    from btcl2.bitcoin.rpc import SyncBitcoinRPC
    from btcl2.bridge.artifacts import load_artifact
    from btcl2.bridge.evm import Contract, EvmClient
    from btcl2.core.params import Params

    rpc = SyncBitcoinRPC(where.bitcoin_rpc, cookie_file=where.bitcoin_cookie, retries=2, timeout=60.0)
    evm = EvmClient(where.evm_rpc)
    bridge = Contract(where.bridge, load_artifact("Bridge"))
    wbtc = Contract(str(evm.call(bridge, "wbtc")), load_artifact("WrappedBTC"))
    return audit(rpc, evm, bridge, wbtc, Params(), where.from_height)


def btc(sats: int) -> str:
    """Signed satoshis as BTC with 8 decimals."""
    sign = "-" if sats < 0 else ""
    return f"{sign}{abs(sats) // COIN}.{abs(sats) % COIN:08d}"


def report_lines(report: AuditReport) -> list[str]:
    """The printed audit: each term, the verdict, and every discrepancy."""
    lines = [f"audit at Bitcoin height {report.bitcoin_height}, EVM block {report.evm_block}:"]
    lines += [f"  {label:<32} {btc(value):>15} BTC" for label, value in report.rows()]
    lines.append(f"  {'= what the federation owes':<32} {btc(report.owed):>15} BTC")
    lines.append(
        f"  replay: {report.l2_batches} batch(es), root {report.l2_root[:16]}…, "
        f"{'matched' if report.replay_ok else 'DIVERGED'}; {report.paid} withdrawal(s) paid, "
        f"{report.deposits_credited} deposit(s) credited"
    )
    found = report.discrepancies
    lines.append("  conservation and exactly-once hold" if not found else f"  {len(found)} discrepancy(ies):")
    lines += [f"    {d}" for d in found]
    return lines


def report_json(report: AuditReport) -> dict[str, Any]:
    """The --json document."""
    return {
        "holds": report.holds,
        "terms": {label: value for label, value in report.rows()},
        "owed": report.owed,
        "fee_term": report.fee_term,
        "bitcoin_height": report.bitcoin_height,
        "evm_block": report.evm_block,
        "l2_root": report.l2_root,
        "l2_batches": report.l2_batches,
        "replay_ok": report.replay_ok,
        "paid": report.paid,
        "deposits_credited": report.deposits_credited,
        "discrepancies": [
            {"kind": d.kind, "subject": d.subject, "detail": d.detail} for d in report.discrepancies
        ],
    }


@click.command("audit", cls=UserCommand)
@click.option(
    "--devnet",
    "devnet_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Audit the devnet in DIR (its devnet.toml); flags still win.",
)
@bitcoin_options
@click.option("--evm-rpc", envvar="BTCL2_EVM_RPC", default=None, help="EVM JSON-RPC URL [env BTCL2_EVM_RPC].")
@click.option("--bridge", envvar="BTCL2_BRIDGE", default=None, help="Bridge contract address.")
@click.option("--from-height", type=click.IntRange(0), default=None, help="The L2's start height on Bitcoin.")
@json_option
@click.pass_context
def audit_command(
    ctx: click.Context,
    devnet_dir: Path | None,
    bitcoin_rpc: str | None,
    bitcoin_cookie: str | None,
    evm_rpc: str | None,
    bridge: str | None,
    from_height: int | None,
    as_json: bool,
) -> None:
    """Check conservation (federation BTC == L2 balances + WBTC supply + unpaid withdrawals + unminted exits
    - payout fees + uncredited deposits) and exactly-once (no deposit credited twice or on two chains, no
    withdrawal paid twice), each term read from Bitcoin, a replay of it, and the EVM. Exits 1 naming every
    discrepancy."""
    given = {
        "bitcoin_rpc": bitcoin_rpc,
        "bitcoin_cookie": bitcoin_cookie,
        "evm_rpc": evm_rpc,
        "bridge": bridge,
        "from_height": from_height,
    }
    if devnet_dir is not None:
        import os

        dev = devnet_endpoints(Path(os.path.abspath(devnet_dir)))
        for name in given:
            if ctx.get_parameter_source(name) not in _FROM_FLAGS:
                given[name] = getattr(dev, name)
    missing = [
        f"--{n.replace('_', '-')}"
        for n in ("bitcoin_rpc", "evm_rpc", "bridge", "from_height")
        if given[n] is None
    ]
    if missing:
        fail(f"no devnet found and {', '.join(missing)} not given")
    report = run_audit(
        Endpoints(
            str(given["bitcoin_rpc"]),
            None if given["bitcoin_cookie"] is None else str(given["bitcoin_cookie"]),
            str(given["evm_rpc"]),
            str(given["bridge"]),
            int(given["from_height"]),  # type: ignore[arg-type]
        )
    )
    emit(as_json, report_json(report), report_lines(report))
    if not report.holds:
        fail("audit failed: " + "; ".join(str(d) for d in report.discrepancies))
