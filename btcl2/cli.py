"""The `btcl2` command line."""

import click


@click.group()
@click.version_option(package_name="btcl2")
def cli() -> None:
    """btcl2: a cross-chain Bitcoin L2 node."""


def main() -> None:
    cli()
