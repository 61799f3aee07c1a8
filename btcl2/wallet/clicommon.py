"""What every user command shares: one-line errors, --json output, and the Bitcoin node and sequencer options.

A user command never shows a traceback: invalid input, an unreachable node, a rejected transaction and
even an unexpected bug all end as one line on stderr and a non-zero exit status.
"""

import json
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn, TypeVar

import click

from btcl2.bitcoin.address import Network, network_by_name
from btcl2.core.params import Params
from btcl2.errors import BtcL2Error, InvalidInput
from btcl2.wallet.l2client import DEFAULT_SEQUENCER

_F = TypeVar("_F", bound=Callable[..., Any])
MAX_FEE_RATE = Decimal(10_000)
"""sat/vB; Bitcoin Core's default maxfeerate (0.1 BTC/kvB) refuses more anyway."""


class UserError(click.ClickException):
    """One line on stderr ("Error: ..."), exit status 1 (2 for usage mistakes)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class UsageUserError(UserError):
    """A usage mistake (unknown option, missing argument): one line, exit status 2 like click's."""

    exit_code = 2


class _OneLineUsage:
    """Turns click's multi-line usage errors into one line."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)  # type: ignore[misc, no-any-return]
        except click.exceptions.NoArgsIsHelpError:
            raise  # a bare group name asks for its help, which is not an error to squeeze into a line
        except click.UsageError as e:
            # Click's usage errors print the usage block too; a user command answers in one line.
            raise UsageUserError(f"{e.format_message()} (see --help)") from None


class UserCommand(_OneLineUsage, click.Command):
    """A click command whose every failure is one line: usage mistakes, btcl2 errors, I/O errors, bugs."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BtcL2Error as e:
            raise UserError(str(e) or type(e).__name__) from None
        except OSError as e:
            raise UserError(f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}") from None
        except Exception as e:  # the boundary of a user command: report, never dump a traceback
            raise UserError(f"unexpected error: {type(e).__name__}: {e}") from None


class UserGroup(_OneLineUsage, click.Group):
    """A group whose subcommands are UserCommands and whose usage errors are one line too."""

    command_class = UserCommand

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:
            raise UsageUserError(f"{e.format_message()} (see --help)") from None


def json_option(f: _F) -> _F:
    """--json: print one JSON object instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


def sats_option(f: _F) -> _F:
    """--sats: amounts are integer satoshis rather than BTC."""
    return click.option("--sats", is_flag=True, help="Amounts are integer satoshis, not BTC.")(f)


def bitcoin_options(f: _F) -> _F:
    """--bitcoin-rpc URL and --bitcoin-cookie FILE, or BTCL2_BITCOIN_RPC / BTCL2_BITCOIN_COOKIE."""
    f = click.option(
        "--bitcoin-cookie",
        envvar="BTCL2_BITCOIN_COOKIE",
        default=None,
        help="Bitcoin node's RPC cookie file [env BTCL2_BITCOIN_COOKIE].",
    )(f)
    return click.option(
        "--bitcoin-rpc",
        envvar="BTCL2_BITCOIN_RPC",
        default=None,
        help="Bitcoin node JSON-RPC URL, e.g. http://127.0.0.1:18443 [env BTCL2_BITCOIN_RPC].",
    )(f)


def sequencer_option(f: _F) -> _F:
    """--sequencer URL, or BTCL2_SEQUENCER, default http://127.0.0.1:8600."""
    return click.option(
        "--sequencer",
        envvar="BTCL2_SEQUENCER",
        default=DEFAULT_SEQUENCER,
        show_default=True,
        help="Sequencer JSON-RPC URL [env BTCL2_SEQUENCER].",
    )(f)


def network() -> Network:
    """The Bitcoin network of the rollup parameters (addresses of other networks are refused)."""
    return network_by_name(Params().network)


def parse_fee_rate(text: str) -> Decimal:
    """A fee rate in sat/vB ("2", "1.5"); InvalidInput unless 0 < rate <= MAX_FEE_RATE."""
    try:
        rate = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidInput(f"invalid fee rate {text!r}: expected sat/vB such as 2") from None
    if not rate.is_finite() or not 0 < rate <= MAX_FEE_RATE:
        raise InvalidInput(f"fee rate {text!r} must be above 0 and at most {MAX_FEE_RATE} sat/vB")
    return rate


def emit(as_json: bool, data: dict[str, Any], lines: Sequence[str]) -> None:
    """Print `data` as JSON, or `lines` as text."""
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        for line in lines:
            click.echo(line)


def fail(message: str) -> NoReturn:
    """Stop the command with one line on stderr and exit status 1."""
    raise UserError(message)


def note(message: str) -> None:
    """A progress line on stderr (stdout stays parseable)."""
    print(message, file=sys.stderr, flush=True)
