"""The `btcl2` command line."""

import sys

import click


@click.group()
@click.version_option(package_name="btcl2")
def cli() -> None:
    """btcl2: a cross-chain Bitcoin L2 node."""


def _register() -> None:
    """Each role package owns its commands; the entry point only gathers them."""
    from btcl2.regtest.cli import regtest

    cli.add_command(regtest)


_register()


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
