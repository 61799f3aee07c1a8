"""The sequencer's configuration: one frozen value built from defaults, a TOML file, then CLI flags.

The TOML file holds the fields below at its top level and the rollup parameters in a `[params]` table
(field names of `btcl2.core.params.Params`; federation keys as hex strings). Unknown keys are an error,
so a typo never silently falls back to a default.
"""

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btcl2.core.params import InvalidParams, Params, params_from_table
from btcl2.errors import InvalidInput
from btcl2.poster.fees import FeePolicy
from btcl2.sequencer.fees import L2FeePolicy


class ConfigError(InvalidInput):
    """Raised when the configuration has an unknown key, a value of the wrong type or out of range."""


@dataclass(frozen=True, slots=True)
class SequencerConfig:
    """Everything `btcl2 sequencer run` needs."""

    datadir: Path
    """Directory of the sequencer's and its watcher's databases."""
    bitcoin_rpc: str
    """Bitcoin Core JSON-RPC URL."""
    bitcoin_cookie: str | None = None
    """Path of the node's .cookie file (None: credentials in the URL or none)."""
    rpchost: str = "127.0.0.1"
    """Address the JSON-RPC API listens on (loopback by default)."""
    rpcport: int = 8600
    """Port of the JSON-RPC API."""
    batch_max_txs: int = 1000
    """A batch is sealed as soon as this many transactions are pending."""
    batch_interval: float = 2.0
    """Otherwise a batch is sealed this many seconds after the previous one (if there is anything to seal)."""
    mempool_max: int = 20_000
    """Most pending transactions; beyond it new ones are rejected (MempoolFull)."""
    rate_limit: float = 200.0
    """Sustained JSON-RPC calls per second per client IP (token bucket refill rate)."""
    rate_burst: int = 400
    """Calls a client IP may make at once (token bucket size)."""
    poll_interval: float = 0.5
    """Seconds between the watcher's polls of the Bitcoin node."""
    start_height: int | None = None
    """Bitcoin height the watcher starts at; None: the node's tip at the first run (then fixed)."""
    watcher_history: int = 1000
    """Blocks of header history the watcher keeps for reorgs."""
    fee_floor: int = 2
    """Lowest Bitcoin fee rate, sat/vB, the minimum L2 fee is priced at (the poster's --fee-floor)."""
    fee_ceiling: int = 100
    """Highest such rate, sat/vB (the poster's --fee-ceiling)."""
    conf_target: int = 3
    """estimatesmartfee target, blocks (the poster's --conf-target)."""
    fee_margin_pct: int = 150
    """The minimum L2 fee's margin over the poster's Bitcoin cost, percent (>= 100)."""
    fee_interval: float = 10.0
    """Seconds between estimatesmartfee calls."""
    params: Params = field(default_factory=Params)
    """The rollup parameters."""

    def fee_policy(self) -> L2FeePolicy:
        """How admission prices transactions (btcl2/sequencer/fees.py)."""
        return L2FeePolicy(FeePolicy(self.fee_floor, self.fee_ceiling, self.conf_target), self.fee_margin_pct)


_TOP_KEYS = {f.name for f in dataclasses.fields(SequencerConfig)} - {"params"}


def _check_type(name: str, value: Any, expected: Any) -> Any:
    """Coerce TOML/CLI values to the field's type, rejecting anything else."""
    if expected in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer")
        return value
    if expected in (float, "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number")
        return float(value)
    if expected in (str, "str"):
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string")
        return value
    return value


def _validate(config: SequencerConfig) -> SequencerConfig:
    if not 0 < config.rpcport < 65536:
        raise ConfigError(f"rpcport {config.rpcport} out of range")
    if config.batch_max_txs < 1 or config.batch_max_txs > config.params.max_batch_txs:
        raise ConfigError(f"batch_max_txs must be within 1..{config.params.max_batch_txs}")
    if config.batch_interval <= 0 or config.poll_interval <= 0:
        raise ConfigError("batch_interval and poll_interval must be positive")
    if config.mempool_max < 1 or config.rate_limit <= 0 or config.rate_burst < 1:
        raise ConfigError("mempool_max, rate_limit and rate_burst must be positive")
    if config.start_height is not None and config.start_height < 0:
        raise ConfigError("start_height must not be negative")
    if config.watcher_history <= config.params.k_deposit_confs:
        raise ConfigError("watcher_history must exceed k_deposit_confs")
    if config.fee_interval <= 0:
        raise ConfigError("fee_interval must be positive")
    try:
        config.fee_policy()
    except InvalidInput as exc:
        raise ConfigError(str(exc)) from exc
    return config


def load_config(file: Path | None, flags: dict[str, Any]) -> SequencerConfig:
    """Defaults, then the TOML `file` (if any), then `flags` (None values are ignored)."""
    values: dict[str, Any] = {}
    params = Params()
    if file is not None:
        try:
            data = tomllib.loads(Path(file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {file}: {exc}") from exc
        for key, value in data.items():
            if key == "params":
                params = _params(value)
            elif key in _TOP_KEYS:
                values[key] = value
            else:
                raise ConfigError(f"unknown key {key}")
    for key, value in flags.items():
        if key not in _TOP_KEYS:
            raise ConfigError(f"unknown key {key}")
        if value is not None:
            values[key] = value
    types = {f.name: f.type for f in dataclasses.fields(SequencerConfig)}
    ints = ("rpcport", "batch_max_txs", "mempool_max", "rate_burst", "watcher_history")
    for key in (*ints, "fee_floor", "fee_ceiling", "conf_target", "fee_margin_pct"):
        if key in values:
            values[key] = _check_type(key, values[key], int)
    for key in ("batch_interval", "rate_limit", "poll_interval", "fee_interval"):
        if key in values:
            values[key] = _check_type(key, values[key], float)
    for key in ("bitcoin_rpc", "rpchost"):
        if key in values:
            values[key] = _check_type(key, values[key], str)
    if values.get("start_height") is not None:
        values["start_height"] = _check_type("start_height", values["start_height"], int)
    if "datadir" in values:
        values["datadir"] = Path(values["datadir"])
    for required in ("datadir", "bitcoin_rpc"):
        if required not in values:
            raise ConfigError(f"{required} is required")
    del types
    return _validate(SequencerConfig(params=params, **values))


def _params(table: Any) -> Params:
    try:
        return params_from_table(table)
    except InvalidParams as exc:
        raise ConfigError(str(exc)) from exc
