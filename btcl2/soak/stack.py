"""The devnet under test: brought up by an in-process supervisor that the harness drives itself, so it
decides when a service dies, how (kill -9, or a named failpoint), and when it starts again.

The sequencer and the relayer reach Bitcoin through a FaultyProxy (RPC outages); the signers and the
coordinator talk to the node directly, so an outage hits one side of the bridge at a time.
"""

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from btcl2.bitcoin.rpc import SyncBitcoinRPC
from btcl2.core.params import Params
from btcl2.devnet.config import DevnetFile
from btcl2.devnet.processes import Child, CommandChild
from btcl2.devnet.stack import child_env
from btcl2.devnet.supervisor import Supervisor, load_or_create
from btcl2.errors import Critical
from btcl2.failpoints import FAILPOINT_ENV, FAILPOINT_EXIT_CODE
from btcl2.soak.proxy import FaultyProxy

READY_TIMEOUT = 90.0
"""Seconds a restarted service gets to answer again."""
PROXIED = ("sequencer", "relayer")
"""Services whose Bitcoin RPC goes through the proxy."""


class SoakError(Critical):
    """Raised when the stack under test cannot be driven as the scenario needs (a service never returns)."""


def _via(argv: list[str], url: str) -> list[str]:
    """argv with the value after --bitcoin-rpc replaced by `url`."""
    out = list(argv)
    i = out.index("--bitcoin-rpc")
    out[i + 1] = url
    return out


def _wait(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SoakError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


class SoakStack:
    """One devnet with a proxy in front of its Bitcoin node; every process restarted by the harness only."""

    def __init__(self, datadir: Path, params: Params) -> None:
        self.datadir = datadir
        self.params = params
        self.sup: Supervisor | None = None
        self.proxy: FaultyProxy | None = None
        self.unexpected: list[str] = []
        """Services found dead that the harness did not kill (each with the end of its log)."""

    @property
    def doc(self) -> DevnetFile:
        """The devnet's description (endpoints, contracts)."""
        assert self.sup is not None
        return self.sup.doc

    def up(self) -> None:
        """Bring the devnet up, then route the proxied services through a fresh proxy."""
        doc = load_or_create(self.datadir, 3, 2, self.params)
        self.sup = Supervisor(doc, self.params)
        self.sup.bring_up()
        self.proxy = FaultyProxy("127.0.0.1", self.doc.ports.bitcoin)
        self.proxy.start()
        for name in PROXIED:
            child = self.child(name)
            assert isinstance(child, CommandChild)
            child.argv = _via(child.argv, self.proxy.url)
            child.stop()
            self.start(name)

    def down(self) -> None:
        """Stop every process (in reverse start order) and the proxy."""
        if self.sup is not None:
            self.sup.shutdown()
        if self.proxy is not None:
            self.proxy.stop()

    def names(self) -> list[str]:
        """Every supervised process, in start order."""
        assert self.sup is not None
        return [s.child.name for s in self.sup.slots]

    def child(self, name: str) -> Child:
        """The process called `name`."""
        assert self.sup is not None
        return next(s.child for s in self.sup.slots if s.child.name == name)

    def rpc(self, timeout: float = 60.0) -> SyncBitcoinRPC:
        """A direct (unproxied) client of the Bitcoin node."""
        doc = self.doc
        return SyncBitcoinRPC(
            doc.bitcoin_rpc, cookie_file=str(doc.bitcoin_cookie), retries=5, timeout=timeout
        )

    def start(self, name: str) -> None:
        """Start `name` and wait until it answers."""
        child = self.child(name)
        child.start()
        _wait(f"{name} to answer", child.ready, READY_TIMEOUT)

    def kill9(self, name: str) -> bool:
        """SIGKILL `name`, check it is gone, start it again; True when a live process really died."""
        child = self.child(name)
        pid = child.pid()
        if not pid:
            return False
        os.kill(pid, signal.SIGKILL)
        _wait(f"{name} (pid {pid}) to die", lambda: not child.alive(), 30)
        self.start(name)
        return child.pid() not in (0, pid)

    def crash_at(self, name: str, point: str, drive: Callable[[], None], timeout: float) -> bool:
        """Restart `name` with BTCL2_FAILPOINT=`point`, `drive` the stack until it dies there (at most
        `timeout` seconds), then start it normally. True when it died with the failpoint's exit code and
        named the point in its log; False when the scenario never reached the point."""
        child = self.child(name)
        assert isinstance(child, CommandChild)
        child.stop()
        env = {**child_env(), FAILPOINT_ENV: point}
        with child.log_path.open("ab") as log:
            log.write(f"\n=== soak: {name} with {FAILPOINT_ENV}={point}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                child.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            drive()
            time.sleep(0.3)
        died = proc.poll() is not None
        if not died:
            proc.kill()
        proc.wait(30)
        tail = child.log_path.read_bytes()[-4000:].decode(errors="replace")
        self.start(name)
        return died and proc.returncode == FAILPOINT_EXIT_CODE and f"FAILPOINT {point}" in tail

    def revive(self) -> list[str]:
        """Start every process that died without the harness killing it; their names."""
        dead = [n for n in self.names() if not self.child(n).alive()]
        for name in dead:
            log = self.child(name).log_path
            tail = log.read_bytes()[-1500:].decode(errors="replace") if log.exists() else ""
            self.unexpected.append(f"{name}: {tail.strip().splitlines()[-1:] or ['(no log)']}")
            if name == "bitcoin":
                self.child(name).start()
            else:
                self.start(name)
        return dead
