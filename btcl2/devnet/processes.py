"""Supervised children of the devnet: one small interface over the three ways btcl2 starts a process.

The Bitcoin node and anvil reuse their own launchers (`btcl2.regtest.process.RegtestNode`,
`btcl2.bridge.anvil.Anvil`, which wait until the service answers); every btcl2 role is a plain
`python -m btcl2 ...` command with a readiness probe. Role processes get their own session so that a
Ctrl-C typed at a foreground `devnet up` reaches only the supervisor, which then stops them in order.
"""

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from btcl2.bridge.anvil import Anvil
from btcl2.regtest.process import RegtestNode

STOP_TIMEOUT = 10.0
"""Seconds a child gets to exit after SIGTERM before SIGKILL."""


class Child(Protocol):
    """What the supervisor needs of a process."""

    name: str
    log_path: Path

    def start(self) -> None:
        """Launch it (the node and anvil return once they answer)."""

    def pid(self) -> int:
        """Its process id, 0 when not running."""

    def alive(self) -> bool:
        """Whether the process is running."""

    def ready(self) -> bool:
        """Whether it answers on its endpoint (alive is enough for processes without one)."""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop it: SIGTERM (or the node's `stop` RPC), a bounded wait, then SIGKILL."""


def http_answers(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bool:
    """True when `url` answers HTTP at all (an error status is still an answer)."""
    req = urllib.request.Request(url, body, headers or {})
    try:
        with urllib.request.urlopen(req, timeout=2.0):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def jsonrpc_answers(url: str, method: str) -> bool:
    """True when a JSON-RPC endpoint answers `method` with a result."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=2.0) as resp:
            return "result" in json.loads(resp.read())
    except (OSError, ValueError):
        return False


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL and reap."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


class CommandChild:
    """A btcl2 role run as `argv`, its stdout and stderr appended to `log_path`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        probe: Callable[[], bool] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._probe = probe
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
                start_new_session=True,
            )

    def pid(self) -> int:
        return self._proc.pid if self.alive() and self._proc is not None else 0

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ready(self) -> bool:
        return self.alive() and (self._probe is None or self._probe())

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self._proc is not None:
            terminate(self._proc, timeout)


class NodeChild:
    """The Bitcoin node (embedded, or a real bitcoind with BTCL2_NODE=core) on a fixed port."""

    def __init__(self, datadir: Path, port: int, log_path: Path) -> None:
        self.name = "bitcoin"
        self.node = RegtestNode(datadir, name="devnet-bitcoin")
        self.node.rpc_port = port  # the devnet keeps its ports across restarts (devnet.toml)
        self.log_path = log_path

    def start(self) -> None:
        self.node.start()

    def pid(self) -> int:
        proc = self.node.process
        return proc.pid if proc is not None and self.node.running else 0

    def alive(self) -> bool:
        return self.node.running

    def ready(self) -> bool:
        return self.alive()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self.node.stop(timeout)


class AnvilChild:
    """anvil on a fixed port, its chain kept in `state_file` (dumped every few seconds and on exit)."""

    def __init__(self, port: int, state_file: Path, log_path: Path) -> None:
        self.name = "evm"
        self.log_path = log_path
        state_file.parent.mkdir(parents=True, exist_ok=True)
        args = ("--state", str(state_file), "--state-interval", "2")
        # Anvil's launcher starts a fresh log at each start: after a restart the log shows the last run.
        self.anvil = Anvil(port=port, log_path=log_path, extra_args=args)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.anvil.start()

    def pid(self) -> int:
        return self.anvil.pid

    def alive(self) -> bool:
        return self.pid() != 0

    def ready(self) -> bool:
        return self.alive() and jsonrpc_answers(self.anvil.url, "eth_chainId")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self.anvil.stop(timeout)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (zombies count as gone)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmdline(pid: int) -> str:
    """The process's command line, arguments joined by spaces ('' if unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def belongs_to(pid: int, datadir: Path) -> bool:
    """Whether `pid` is a live process of the devnet in `datadir` (every one names a path inside it), so a
    recycled pid is never signalled."""
    return pid_alive(pid) and str(datadir) in cmdline(pid)


def is_supervisor(pid: int) -> bool:
    """Whether `pid` is a live devnet supervisor (`btcl2 devnet up` or `btcl2 devnet supervise`)."""
    line = cmdline(pid)
    return pid_alive(pid) and "btcl2" in line and "devnet" in line


def kill_pid(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM a process that is not our child, wait up to `timeout`, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
