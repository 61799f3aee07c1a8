"""Configuration of a signer and of the coordinator: one frozen value each, from a TOML file then CLI flags.

Top-level keys are the fields below; rollup parameters go in a `[params]` table (field names of
`btcl2.core.params.Params`, bytes as hex); the coordinator's signers are `[[signers]]` tables with `url`
and `token`. Unknown keys are an error. Both files hold secrets (bearer tokens, the confirmer's key), so a
file its group or other users may access is refused (btcl2.secretfile).
"""

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from btcl2.core.params import InvalidParams, Params, params_from_table
from btcl2.errors import InvalidInput
from btcl2.secretfile import InsecureSecretFile, SecretFileError, read_secret_file

EVM_FINALITY_DEPTH = 64
"""Default EVM blocks a burn needs (its own included) before a payout is built or signed: two epochs of
Ethereum mainnet, where a block that deep is finalized. Chains with other finality set `evm_confirmations`."""
DEVNET_EVM_FINALITY_DEPTH = 5
"""The devnet's (and functional tests') depth: deeper than the reorgs the tests inject (3), quick on anvil."""


class ConfigError(InvalidInput):
    """Raised when a configuration has an unknown key, a missing one, or a value of the wrong type."""


@dataclass(frozen=True, slots=True)
class SignerConfig:
    """Everything `btcl2 signer run` needs besides its key."""

    datadir: Path
    """Where the signer's LevelDB record lives."""
    bitcoin_rpc: str
    """The signer's OWN Bitcoin node."""
    token: str
    """Bearer token a coordinator must present (at least 16 characters)."""
    bitcoin_cookie: str | None = None
    """The node's cookie file."""
    evm_rpc: str | None = None
    """The signer's OWN EVM node (None: EVM withdrawals are refused)."""
    bridge: str | None = None
    """The Bridge contract address; only its events are believed."""
    evm_confirmations: int = EVM_FINALITY_DEPTH
    """EVM finality depth: blocks a burn needs (its own included) before this signer signs its payout."""
    from_height: int = 0
    """The L2's start height for the signer's replay."""
    host: str = "127.0.0.1"
    """Listen address (loopback by default)."""
    port: int = 8700
    """Listen port."""
    max_fee_rate: int = 100
    """Most sat/vB signed."""
    max_fee_sats: int = 1_000_000
    """Most absolute fee per payout."""
    min_input_confirmations: int = 0
    """Confirmations each spent federation output needs beyond the floor of K (`k_deposit_confs`): the
    depth enforced is the larger of the two (coinbases also need 100)."""
    attestation_key_file: str | None = None
    """File with this member's BLS attestation secret (64 hex digits); None: it does not attest batches."""
    params: Params = field(default_factory=Params)
    """The rollup parameters."""


@dataclass(frozen=True, slots=True)
class SignerEndpoint:
    """One signer as the coordinator reaches it."""

    url: str
    """http://host:port."""
    token: str
    """Its bearer token."""


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """Everything `btcl2 coordinator run` needs."""

    datadir: Path
    """Where the payout journal lives."""
    bitcoin_rpc: str
    """A Bitcoin node (broadcast, UTXOs, confirmations)."""
    signers: tuple[SignerEndpoint, ...]
    """The federation's signers."""
    bitcoin_cookie: str | None = None
    """The node's cookie file."""
    evm_rpc: str | None = None
    """EVM node (burns, confirmPayout)."""
    bridge: str | None = None
    """Bridge address."""
    confirmer_key: str | None = None
    """Hex secret of the Bridge's payoutConfirmer account (None: confirmPayout is skipped)."""
    evm_confirmations: int = EVM_FINALITY_DEPTH
    """EVM finality depth: blocks a burn needs (its own included) before it is proposed; at least the
    signers' depth, or they refuse the payout."""
    from_height: int = 0
    """The L2's start height for the coordinator's replay."""
    fee_rate: int = 2
    """sat/vB of a new payout."""
    max_fee_rate: int = 100
    """A fee bump never goes above this."""
    max_batch: int = 50
    """Most withdrawals per payout."""
    bump_after_blocks: int = 3
    """Blocks without confirmation before a fee bump."""
    poll_interval: float = 1.0
    """Seconds between steps when idle."""
    min_input_confirmations: int = 0
    """Confirmations a federation output needs before a payout spends it; the depth used is the larger of
    this and K (`k_deposit_confs`), and coinbases also need 100."""
    host: str = "127.0.0.1"
    """Status API listen address."""
    port: int = 8710
    """Status API port."""
    params: Params = field(default_factory=Params)
    """The rollup parameters."""


_C = TypeVar("_C")


def _coerce(name: str, value: Any, kind: Any) -> Any:
    text = str(kind)
    if kind is int or text == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer")
        return value
    if kind is float or text == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number")
        return float(value)
    if kind is str or "str" in text:
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be a string")
        return value
    if kind is Path or "Path" in text:
        return Path(value)
    return value


def _params(table: Any) -> Params:
    try:
        return params_from_table(table)
    except InvalidParams as exc:
        raise ConfigError(str(exc)) from exc


def _signers(value: Any) -> tuple[SignerEndpoint, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError("signers must be a non-empty list of {url, token} tables")
    out = []
    for s in value:
        if not isinstance(s, dict) or set(s) != {"url", "token"}:
            raise ConfigError("each signer needs exactly url and token")
        out.append(SignerEndpoint(str(s["url"]).rstrip("/"), str(s["token"])))
    return tuple(out)


def load(cls: type[_C], file: Path | None, flags: dict[str, Any]) -> _C:
    """Build `cls` (SignerConfig or CoordinatorConfig) from the TOML `file` then `flags` (None ignored)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(read_secret_file(Path(file), "config file"))
        except InsecureSecretFile:
            raise
        except (SecretFileError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {file}: {exc}") from exc
    raw.update({k: v for k, v in flags.items() if v is not None})
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"unknown key {key}")
        if key == "params":
            values[key] = _params(value)
        elif key == "signers":
            values[key] = _signers(value)
        else:
            values[key] = _coerce(key, value, fields[key].type)
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required key(s): {', '.join(missing)}")
    config = cls(**values)
    if int(getattr(config, "evm_confirmations", 1)) < 1:
        raise ConfigError("evm_confirmations must be at least 1")
    token = getattr(config, "token", None)
    if token is not None and len(token) < 16:
        raise ConfigError("token must be at least 16 characters")
    return config
