"""The `btcl2` command line."""

import sys

import click


@click.group()
@click.version_option(package_name="btcl2")
@click.option(
    "--devnet",
    "devnet_dir",
    envvar="BTCL2_DEVNET",
    default=None,
    metavar="DIR",
    help="Take endpoints from DIR/devnet.toml [default: ~/.btcl2/devnet if it exists; env BTCL2_DEVNET].",
)
@click.pass_context
def cli(ctx: click.Context, devnet_dir: str | None) -> None:
    """btcl2: a cross-chain Bitcoin L2 node."""
    # --- devnet discovery: every command's endpoint options default to the devnet's (btcl2/devnet/discover.py)
    from btcl2.devnet.discover import install

    install(ctx, devnet_dir)
    # --- end devnet discovery


def _register() -> None:
    """Each role package owns its commands; the entry point only gathers them."""
    from btcl2.audit.cli import audit_command
    from btcl2.bridge import cli as bridge_cli
    from btcl2.derive.cli import replay
    from btcl2.devnet.cli import devnet
    from btcl2.federation import cli as federation_cli
    from btcl2.poster.cli import poster
    from btcl2.regtest.cli import regtest
    from btcl2.sequencer.cli import sequencer
    from btcl2.status.cli import status
    from btcl2.wallet import cli as wallet_cli
    from btcl2.wallet import cli_l2 as l2_cli

    cli.add_command(regtest)
    cli.add_command(sequencer)
    cli.add_command(wallet_cli.keys)
    cli.add_command(wallet_cli.wallet)
    cli.add_command(bridge_cli.deposit)  # the wallet's deposit, with --wait and `deposit status`
    cli.add_command(bridge_cli.relayer)
    cli.add_command(bridge_cli.evm_group)
    regtest.add_command(wallet_cli.fund)
    cli.add_command(l2_cli.transfer)
    cli.add_command(l2_cli.balance)
    cli.add_command(l2_cli.tx)
    cli.add_command(replay)
    cli.add_command(poster)
    cli.add_command(federation_cli.federation)
    cli.add_command(federation_cli.signer)
    cli.add_command(federation_cli.coordinator)
    cli.add_command(federation_cli.withdraw)
    cli.add_command(devnet)
    cli.add_command(status)
    cli.add_command(audit_command)


_register()


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
