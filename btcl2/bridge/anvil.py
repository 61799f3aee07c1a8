"""Start and stop a local anvil EVM node (the npm `@foundry-rs/anvil-linux-amd64` binary), loopback only."""

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from btcl2.errors import Critical, Temporary

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_BINARY = REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"

ANVIL_DEV_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
)
"""Secret keys of anvil's first default accounts (its public test mnemonic): development only."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Anvil:
    """One anvil process on 127.0.0.1; use as a context manager, or call start() and stop()."""

    def __init__(
        self,
        port: int | None = None,
        hardfork: str = "prague",
        log_path: Path | None = None,
        binary: Path = ANVIL_BINARY,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.port = port if port is not None else free_port()
        self.hardfork = hardfork
        self.log_path = log_path
        self.binary = binary
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The JSON-RPC endpoint."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """Launch anvil and wait until it answers eth_chainId; Critical if the binary is missing."""
        if not self.binary.exists():
            raise Critical(f"anvil not found at {self.binary}: run `make setup` (npm ci)")
        args = [
            str(self.binary),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--hardfork",
            self.hardfork,
        ]
        self._log = open(self.log_path, "wb") if self.log_path is not None else None  # noqa: SIM115
        out = self._log if self._log is not None else subprocess.DEVNULL
        self._proc = subprocess.Popen([*args, *self.extra_args], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise Critical(f"anvil exited with code {self._proc.returncode} on start")
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise Temporary(f"anvil did not answer on {self.url} within {timeout}s")

    @property
    def pid(self) -> int:
        """The anvil process id, 0 when it is not running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else 0

    def _answers(self) -> bool:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=1.0) as resp:
                return "result" in json.loads(resp.read())
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate anvil (kill it if it does not exit within timeout)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
