"""A loopback TCP proxy that injects RPC outages: it passes, delays, drops or resets connections.

The soak harness puts one in front of the Bitcoin node and routes the sequencer's and the relayer's
JSON-RPC through it, so a service sees exactly what a flaky network gives it: slow answers, connections
closed with no answer, and connections reset (RST) in the middle of a request.
"""

import contextlib
import socket
import struct
import threading
import time
from enum import Enum

BUFFER = 65536


class Mode(Enum):
    """What the proxy does with the next connections."""

    PASS = "pass"
    """Forward both ways."""
    DELAY = "delay"
    """Forward after `delay` seconds."""
    DROP = "drop"
    """Read the request, then close without an answer."""
    RESET = "reset"
    """Close at once with a TCP reset (SO_LINGER 0)."""


class FaultyProxy:
    """Listens on 127.0.0.1:<port> and forwards to `target`; `mode` may change at any time."""

    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.mode = Mode.PASS
        self.delay = 0.0
        self.connections = 0
        """Connections accepted (all modes)."""
        self.faulted = 0
        """Connections delayed, dropped or reset."""
        self._server = socket.create_server(("127.0.0.1", port))
        self._server.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="soak-proxy", daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.getsockname()[1])

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>/ (for a JSON-RPC client)."""
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        """Start accepting in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting; connections in flight finish on their own."""
        self._stopping.set()
        self._thread.join(5)
        self._server.close()

    def set(self, mode: Mode, delay: float = 0.0) -> None:
        """Switch what happens to new connections."""
        self.mode, self.delay = mode, delay

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.mode, self.delay), daemon=True).start()

    def _serve(self, conn: socket.socket, mode: Mode, delay: float) -> None:
        if mode != Mode.PASS:
            self.faulted += 1
        if mode == Mode.RESET:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return
        if mode == Mode.DROP:
            conn.settimeout(2.0)
            with contextlib.suppress(OSError):
                conn.recv(BUFFER)
            conn.close()
            return
        if mode == Mode.DELAY:
            time.sleep(delay)
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            conn.close()
            return
        back = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
        back.start()
        _pipe(conn, upstream)
        back.join(60)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy src to dst until either side closes; then close both."""
    try:
        while data := src.recv(BUFFER):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
