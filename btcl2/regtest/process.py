"""Regtest nodes as processes (the embedded node or a real bitcoind), in the style of Core's test framework.

One class drives either kind of node, chosen by the environment variable BTCL2_NODE:
  embedded (default)  `python -m btcl2 regtest up` (the node btcl2 ships)
  core                a real `bitcoind -regtest` (path in BTCL2_BITCOIND), configured by regtest/bitcoin.conf
Both are reached only over JSON-RPC on 127.0.0.1, with the cookie file `<datadir>/regtest/.cookie`.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from btcl2.bitcoin.rpc import RPCError, RPCUnavailable, SyncBitcoinRPC

REPO_ROOT = Path(__file__).resolve().parents[2]
CORE_CONF = REPO_ROOT / "regtest" / "bitcoin.conf"
DEFAULT_BITCOIND = Path.home() / ".cache" / "btcl2" / "bitcoin-core-0.1.0a5" / "bin" / "bitcoind"

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
RPC_TIMEOUT = 60.0


class NodeKind(StrEnum):
    """Which implementation answers the RPC."""

    EMBEDDED = "embedded"
    CORE = "core"


class NodeError(Exception):
    """Raised when a node process does not start, answer or stop as expected."""


def node_kind() -> NodeKind:
    """The node kind selected by BTCL2_NODE (default: embedded)."""
    value = os.environ.get("BTCL2_NODE", NodeKind.EMBEDDED.value).strip().lower()
    try:
        return NodeKind(value)
    except ValueError:
        raise NodeError(f"BTCL2_NODE must be 'embedded' or 'core', not {value!r}") from None


def bitcoind_path() -> Path:
    """The bitcoind binary: BTCL2_BITCOIND, else the cache `make bitcoind` installs into."""
    env = os.environ.get("BTCL2_BITCOIND")
    if env:
        return Path(env)
    cache = os.environ.get("BTCL2_CACHE")
    if cache:
        return Path(cache) / "bitcoin-core-0.1.0a5" / "bin" / "bitcoind"
    return DEFAULT_BITCOIND


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RegtestNode:
    """One regtest node process on its own datadir and ports."""

    def __init__(
        self,
        datadir: Path,
        kind: NodeKind | None = None,
        extra_args: tuple[str, ...] = (),
        name: str = "node0",
    ) -> None:
        self.datadir = Path(datadir)
        self.kind = kind if kind is not None else node_kind()
        self.extra_args = extra_args
        self.name = name
        self.rpc_port = free_port()
        self.p2p_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._rpc: SyncBitcoinRPC | None = None

    @property
    def url(self) -> str:
        """The JSON-RPC endpoint."""
        return f"http://127.0.0.1:{self.rpc_port}/"

    @property
    def cookie_file(self) -> Path:
        """Where the node writes its RPC cookie (user:password) at startup."""
        return self.datadir / "regtest" / ".cookie"

    @property
    def log_file(self) -> Path:
        """stdout and stderr of the node process."""
        return self.datadir / "node.log"

    @property
    def rpc(self) -> SyncBitcoinRPC:
        """An RPC client for this node (recreated on every start, since the cookie changes)."""
        if self._rpc is None:
            self._rpc = self._client(retries=2)
        return self._rpc

    def _client(self, retries: int, timeout: float = RPC_TIMEOUT) -> SyncBitcoinRPC:
        return SyncBitcoinRPC(
            self.url, cookie_file=str(self.cookie_file), timeout=timeout, retries=retries, backoff=0.1
        )

    def command(self) -> list[str]:
        """The argv that starts this node."""
        if self.kind is NodeKind.EMBEDDED:
            base = [sys.executable, "-m", "btcl2", "regtest", "up"]
            return [*base, "--datadir", str(self.datadir), "--rpcport", str(self.rpc_port), *self.extra_args]
        bitcoind = bitcoind_path()
        if not bitcoind.is_file():
            raise NodeError(f"bitcoind not found at {bitcoind}; run `make bitcoind` or set BTCL2_BITCOIND")
        return [
            str(bitcoind),
            f"-conf={CORE_CONF}",
            "-regtest",
            f"-datadir={self.datadir}",
            f"-rpcport={self.rpc_port}",
            f"-port={self.p2p_port}",
            # Logs go to stdout, which is node.log, so both kinds keep their log in the same place.
            "-printtoconsole=1",
            "-debuglogfile=0",
            *self.extra_args,
        ]

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process and wait until it answers RPC."""
        if self.running:
            raise NodeError(f"{self.name} is already running")
        self.datadir.mkdir(parents=True, exist_ok=True)
        # A cookie left by a killed process would authenticate nothing; wait for the new one.
        self.cookie_file.unlink(missing_ok=True)
        self._log = self.log_file.open("ab")
        self._log.write(f"\n=== {self.name} start: {' '.join(self.command())}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.datadir,
        )
        self._rpc = None
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill9()
            raise

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll getblockchaininfo until it answers (Core answers -28 while warming up); bounded by timeout."""
        deadline = time.monotonic() + timeout
        probe = self._client(retries=0, timeout=5.0)
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise NodeError(
                    f"{self.name} exited with code {self.process.returncode} during startup\n{self.log_tail()}"
                )
            if self.cookie_file.exists():
                try:
                    probe.call("getblockchaininfo")
                    return
                except RPCUnavailable as e:
                    last = str(e)
                except RPCError as e:
                    if e.code != -28:
                        raise
                    last = e.message
                probe = self._client(retries=0, timeout=5.0)
            time.sleep(0.1)
        raise NodeError(f"{self.name} not ready after {timeout}s ({last})\n{self.log_tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask the node to stop over RPC, then SIGTERM, then SIGKILL; every wait is bounded."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self._client(retries=0, timeout=10.0).call("stop")
            except Exception:  # a node that cannot answer `stop` gets a signal instead
                self.process.send_signal(signal.SIGTERM)
            if not self._wait_exit(timeout):
                self.process.send_signal(signal.SIGTERM)
                if not self._wait_exit(10.0):
                    self.process.kill()
                    self._wait_exit(10.0)
        self._finish()

    def kill9(self) -> None:
        """Kill the process with SIGKILL, as a crash or power loss would, and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self._wait_exit(10.0)
        self._finish()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop if running, then start again on the same datadir and ports."""
        if self.running:
            self.stop()
        self.start(timeout)

    def _wait_exit(self, timeout: float) -> bool:
        assert self.process is not None
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _finish(self) -> None:
        self._rpc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of node.log, for failure reports."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return f"({self.log_file} unreadable)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_file} ---\n{tail}"

    def call(self, method: str, *params: Any, **named: Any) -> Any:
        """Shorthand for `self.rpc.call`."""
        return self.rpc.call(method, *params, **named)

    def __repr__(self) -> str:
        return f"RegtestNode({self.name}, {self.kind.value}, {self.url}, {self.datadir})"
