"""How every user command finds the devnet: defaults for its options, read from `<devnet>/devnet.toml`.

The root `btcl2` group puts `default_map_for(cli, defaults_from_devnet(...))` into click's `default_map`,
so options keep their own precedence: a flag on the command line, then its environment variable, then the
devnet, then the option's built-in default. No command needs to know about the devnet.
"""

import os
from pathlib import Path
from typing import Any

import click

from btcl2.devnet.config import DevnetFileError, devnet_path, read_devnet

DEFAULT_DEVNET = Path.home() / ".btcl2" / "devnet"
"""The devnet `btcl2 devnet up` starts when given no --datadir."""
ROLE_COMMANDS = frozenset({"sequencer", "relayer", "signer", "coordinator", "poster"})
"""Operator commands: configured explicitly, never from a devnet (an operator points them at real nodes)."""


def find_devnet(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The devnet's datadir: `explicit` (--devnet or BTCL2_DEVNET), else the default one if it exists."""
    if explicit:
        return Path(os.path.abspath(Path(explicit).expanduser()))
    return DEFAULT_DEVNET if devnet_path(DEFAULT_DEVNET).exists() else None


def defaults_from_devnet(datadir: Path | None = None) -> dict[str, Any]:
    """Option name -> value for every endpoint of the devnet in `datadir` (found as `find_devnet` does).

    Empty when there is no devnet. DevnetFileError when an explicitly named one is missing or malformed.
    """
    where = datadir if datadir is not None else find_devnet()
    if where is None:
        return {}
    doc = read_devnet(where)
    values: dict[str, Any] = {
        "bitcoin_rpc": doc.bitcoin_rpc,
        "bitcoin_cookie": str(doc.bitcoin_cookie),
        "sequencer": doc.sequencer_rpc,
        "evm_rpc": doc.evm_rpc,
        "coordinator_url": doc.coordinator_url,
    }
    if doc.contracts is not None:
        values["bridge"] = values["bridge_address"] = doc.contracts.bridge
    if doc.from_height is not None:
        values["from_height"] = doc.from_height
    return values


def _walk(command: click.Command, values: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {p.name: values[p.name] for p in command.params if p.name in values}
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            entry[name] = _walk(sub, values)
    return entry


def default_map_for(root: click.Group, values: dict[str, Any], datadir: Path | None) -> dict[str, Any]:
    """click's nested default_map for the user commands under `root`, and the devnet's own --datadir."""
    out: dict[str, Any] = {}
    for name, command in root.commands.items():
        if name in ROLE_COMMANDS:
            continue
        if name == "devnet":
            if datadir is not None:
                out[name] = {sub: {"datadir": str(datadir)} for sub in getattr(command, "commands", {})}
            continue
        out[name] = _walk(command, values)
        extra = getattr(command, "status", None)  # `deposit status` is made as "deposit status"
        if isinstance(extra, click.Command):
            out[f"{name} status"] = _walk(extra, values)
    return out


def install(ctx: click.Context, explicit: str | None) -> None:
    """Set the root context's default_map from the devnet (called by the root group's callback).

    A devnet named on the command line must exist; one named by BTCL2_DEVNET or the default location is
    used only if it exists, so that `btcl2 devnet up` can create it.
    """
    from btcl2.wallet.clicommon import UsageUserError

    from_cli = ctx.get_parameter_source("devnet_dir") == click.core.ParameterSource.COMMANDLINE
    datadir = find_devnet(explicit)
    if datadir is None:
        return
    if not devnet_path(datadir).exists():
        if from_cli and ctx.invoked_subcommand != "devnet":
            raise UsageUserError(f"no devnet at {datadir} (no devnet.toml): run `btcl2 devnet up`")
        values: dict[str, Any] = {}
    else:
        try:
            values = defaults_from_devnet(datadir)
        except DevnetFileError as exc:
            raise UsageUserError(str(exc)) from None
    ctx.default_map = {**default_map_for(ctx.command, values, datadir), **(ctx.default_map or {})}  # type: ignore[arg-type]
