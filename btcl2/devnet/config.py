"""`<datadir>/devnet.toml`: every endpoint, key file, contract address and process of a devnet.

The supervisor writes it (atomically: a temporary file renamed over the old one) at every change of a
process; user commands, `devnet status` and `devnet down` only read it. The layout is flat TOML tables so
that an operator can read it with any tool; unknown keys are an error, as in every btcl2 configuration.
"""

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btcl2.errors import InvalidInput

DEVNET_FILE = "devnet.toml"
"""The file's name inside the devnet's datadir."""
HOST = "127.0.0.1"
"""The devnet listens on loopback only."""


class DevnetFileError(InvalidInput):
    """Raised when devnet.toml is missing, unreadable, or has unknown or mistyped keys."""


@dataclass(frozen=True, slots=True)
class Ports:
    """The TCP ports the devnet's services listen on (chosen free at the first `up`, then kept)."""

    bitcoin: int
    """Bitcoin JSON-RPC."""
    evm: int
    """anvil's JSON-RPC."""
    sequencer: int
    """The sequencer's l2_* JSON-RPC."""
    coordinator: int
    """The coordinator's status API."""
    signers: tuple[int, ...]
    """One per signer, in signer order."""


@dataclass(frozen=True, slots=True)
class Contracts:
    """The EVM contracts, deployed once per devnet."""

    bridge: str
    """Bridge."""
    wbtc: str
    """WrappedBTC."""
    light_client: str
    """BitcoinLightClient."""
    attestation_verifier: str | None = None
    """AttestationVerifier, set on the Bridge (None: a devnet made before attestations; `up` deploys it)."""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One supervised process as last seen by the supervisor."""

    name: str
    """bitcoin, evm, sequencer, relayer, signer1.., coordinator."""
    pid: int
    """Its process id (0 while it is not running)."""
    restarts: int
    """How many times the supervisor started it again after it died."""
    status: str
    """up, starting, down or stopped."""
    log: str
    """Its log file."""


@dataclass(frozen=True, slots=True)
class DevnetFile:
    """The whole of devnet.toml."""

    datadir: Path
    """The devnet's directory (absolute)."""
    ports: Ports
    """Where each service listens."""
    signers: int = 3
    """Federation size N."""
    threshold: int = 2
    """Federation threshold M."""
    state: str = "starting"
    """starting, running or stopped."""
    supervisor_pid: int = 0
    """The supervisor's process id (0 when stopped)."""
    from_height: int | None = None
    """The L2's start height on Bitcoin (the sequencer's first watched block); None before the first start."""
    funded: bool = False
    """Whether the poster key has been funded (done once)."""
    contracts: Contracts | None = None
    """None until deployed."""
    processes: tuple[ProcessInfo, ...] = field(default_factory=tuple)
    """Every supervised process."""

    # --- derived paths and endpoints ------------------------------------------------------------------

    @property
    def bitcoin_rpc(self) -> str:
        """Bitcoin JSON-RPC URL."""
        return f"http://{HOST}:{self.ports.bitcoin}/"

    @property
    def bitcoin_cookie(self) -> Path:
        """The node's cookie file (rewritten at each node start)."""
        return self.datadir / "bitcoin" / "regtest" / ".cookie"

    @property
    def evm_rpc(self) -> str:
        """anvil's JSON-RPC URL."""
        return f"http://{HOST}:{self.ports.evm}"

    @property
    def sequencer_rpc(self) -> str:
        """The sequencer's JSON-RPC URL."""
        return f"http://{HOST}:{self.ports.sequencer}"

    @property
    def coordinator_url(self) -> str:
        """The coordinator's status API."""
        return f"http://{HOST}:{self.ports.coordinator}"

    def signer_url(self, i: int) -> str:
        """Signer i's (1-based) signing API."""
        return f"http://{HOST}:{self.ports.signers[i - 1]}"

    @property
    def keys_dir(self) -> Path:
        """Key files of the roles."""
        return self.datadir / "keys"

    @property
    def logs_dir(self) -> Path:
        """One log per process."""
        return self.datadir / "logs"

    def process(self, name: str) -> ProcessInfo | None:
        """The process called `name`, if listed."""
        return next((p for p in self.processes if p.name == name), None)


def devnet_path(datadir: Path) -> Path:
    """devnet.toml inside `datadir`."""
    return Path(datadir) / DEVNET_FILE


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _table(name: str, values: dict[str, Any], array: bool = False) -> list[str]:
    head = f"[[{name}]]" if array else f"[{name}]"
    return [head, *(f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None), ""]


def render(doc: DevnetFile) -> str:
    """The TOML text of `doc`, with a comment per table saying what reads it."""
    lines = [
        "# Written by `btcl2 devnet up` (the supervisor rewrites it whenever a process changes).",
        "# Every btcl2 user command reads its endpoints from here (see `btcl2 --devnet`).",
        "",
    ]
    lines += _table(
        "devnet",
        {
            "datadir": doc.datadir,
            "state": doc.state,
            "supervisor_pid": doc.supervisor_pid,
            "signers": doc.signers,
            "threshold": doc.threshold,
            "from_height": doc.from_height,
            "funded": doc.funded,
        },
    )
    p = doc.ports
    lines += _table(
        "ports",
        {
            "bitcoin": p.bitcoin,
            "evm": p.evm,
            "sequencer": p.sequencer,
            "coordinator": p.coordinator,
            "signers": list(p.signers),
        },
    )
    lines += _table(
        "endpoints",
        {
            "bitcoin_rpc": doc.bitcoin_rpc,
            "bitcoin_cookie": doc.bitcoin_cookie,
            "evm_rpc": doc.evm_rpc,
            "sequencer": doc.sequencer_rpc,
            "coordinator": doc.coordinator_url,
        },
    )
    if doc.contracts is not None:
        c = doc.contracts
        lines += _table(
            "contracts",
            {
                "bridge": c.bridge,
                "wbtc": c.wbtc,
                "light_client": c.light_client,
                "attestation_verifier": c.attestation_verifier,
            },
        )
    for proc in doc.processes:
        lines += _table(
            "process",
            {
                "name": proc.name,
                "pid": proc.pid,
                "restarts": proc.restarts,
                "status": proc.status,
                "log": proc.log,
            },
            array=True,
        )
    return "\n".join(lines)


def write_devnet(doc: DevnetFile) -> Path:
    """Write devnet.toml atomically (readers never see half a file); returns its path."""
    path = devnet_path(doc.datadir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(render(doc))
    os.replace(tmp, path)
    return path


def _take(table: dict[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise DevnetFileError(f"{where}: missing {key}")
        return default
    value = table[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DevnetFileError(f"{where}: {key} must be an integer")
    if kind is not int and not isinstance(value, kind):
        raise DevnetFileError(f"{where}: {key} must be a {kind.__name__}")
    return value


def _check_keys(table: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise DevnetFileError(f"{where} must be a table")
    unknown = set(table) - allowed
    if unknown:
        raise DevnetFileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    return table


def parse(text: str, where: str = DEVNET_FILE) -> DevnetFile:
    """The inverse of `render`; DevnetFileError on anything it did not write."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DevnetFileError(f"{where}: {exc}") from exc
    _check_keys(raw, {"devnet", "ports", "endpoints", "contracts", "process"}, where)
    dv = _check_keys(
        raw.get("devnet"),
        {"datadir", "state", "supervisor_pid", "signers", "threshold", "from_height", "funded"},
        f"{where} [devnet]",
    )
    pt = _check_keys(raw.get("ports"), {"bitcoin", "evm", "sequencer", "coordinator", "signers"}, "[ports]")
    signer_ports = _take(pt, "signers", list, "[ports]")
    if not all(isinstance(x, int) for x in signer_ports):
        raise DevnetFileError("[ports]: signers must be a list of integers")
    ports = Ports(
        bitcoin=_take(pt, "bitcoin", int, "[ports]"),
        evm=_take(pt, "evm", int, "[ports]"),
        sequencer=_take(pt, "sequencer", int, "[ports]"),
        coordinator=_take(pt, "coordinator", int, "[ports]"),
        signers=tuple(signer_ports),
    )
    contracts = None
    if "contracts" in raw:
        ct = _check_keys(
            raw["contracts"], {"bridge", "wbtc", "light_client", "attestation_verifier"}, "[contracts]"
        )
        contracts = Contracts(
            bridge=_take(ct, "bridge", str, "[contracts]"),
            wbtc=_take(ct, "wbtc", str, "[contracts]"),
            light_client=_take(ct, "light_client", str, "[contracts]"),
            attestation_verifier=_take(ct, "attestation_verifier", str, "[contracts]", None),
        )
    processes = []
    for entry in raw.get("process", []):
        pr = _check_keys(entry, {"name", "pid", "restarts", "status", "log"}, "[[process]]")
        processes.append(
            ProcessInfo(
                _take(pr, "name", str, "[[process]]"),
                _take(pr, "pid", int, "[[process]]"),
                _take(pr, "restarts", int, "[[process]]"),
                _take(pr, "status", str, "[[process]]"),
                _take(pr, "log", str, "[[process]]"),
            )
        )
    return DevnetFile(
        datadir=Path(_take(dv, "datadir", str, "[devnet]")),
        ports=ports,
        signers=_take(dv, "signers", int, "[devnet]", 3),
        threshold=_take(dv, "threshold", int, "[devnet]", 2),
        state=_take(dv, "state", str, "[devnet]", "stopped"),
        supervisor_pid=_take(dv, "supervisor_pid", int, "[devnet]", 0),
        from_height=_take(dv, "from_height", int, "[devnet]", None),
        funded=_take(dv, "funded", bool, "[devnet]", False),
        contracts=contracts,
        processes=tuple(processes),
    )


def read_devnet(datadir: Path) -> DevnetFile:
    """Read `<datadir>/devnet.toml`; DevnetFileError when there is none or it is malformed."""
    path = devnet_path(datadir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DevnetFileError(f"no devnet at {datadir} (no {DEVNET_FILE}): run `btcl2 devnet up`") from None
    except OSError as exc:
        raise DevnetFileError(f"cannot read {path}: {exc.strerror}") from exc
    return parse(text, str(path))
