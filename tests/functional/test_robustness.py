"""Bad input at the process level: a corrupted sequencer database refuses to start with one clear message
and a recovery path (nothing served), random command lines get a one-line error, never a traceback."""

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import plyvel

from btcl2.storage.db import Database

CLI_RUNS = 40
"""Random command lines tried (bounded)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _corrupt_sequencer_db(datadir: Path) -> None:
    path = datadir / "sequencer"
    db = Database(path)
    with db.batch() as wb:
        for i in range(5_000):
            wb.put(b"x%08d" % i, os.urandom(64))
    db.close()
    raw = plyvel.DB(str(path))
    raw.compact_range()
    raw.close()
    table = next(p for p in path.iterdir() if p.suffix == ".ldb")
    data = bytearray(table.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    table.write_bytes(bytes(data))


def test_corrupted_sequencer_database_refuses_to_start(tmp_path: Path) -> None:
    datadir = tmp_path / "seq"
    _corrupt_sequencer_db(datadir)
    port = _free_port()
    argv = [sys.executable, "-m", "btcl2", "sequencer", "run", "--datadir", str(datadir),
            "--bitcoin-rpc", "http://127.0.0.1:1/", "--rpcport", str(port)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if "corrupt" in line.lower()]
    assert lines, out
    assert "Move it aside" in out  # the recovery path: replay from Bitcoin
    with socket.socket() as s:  # nothing is served
        assert s.connect_ex(("127.0.0.1", port)) != 0


WORDS = [
    "balance", "transfer", "withdraw", "deposit", "status", "replay", "audit", "keys", "wallet", "tx",
    "devnet", "evm", "--amount", "--to", "--sats", "--json", "-1", "0", "1e99", "0x", "0x" + "ff" * 20,
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "l2:0x12", "evm:-1", "--key", "/nonexistent", "\x00",
    "--bitcoin-rpc", "http://127.0.0.1:1/", "--from", "l2", "evm", "--wallet", "é", "--fee", "NaN",
]  # fmt: skip


def test_random_command_lines_fail_in_one_line(tmp_path: Path) -> None:
    rng = random.Random(8)
    env = {**os.environ, "HOME": str(tmp_path), "BTCL2_SEQUENCER": "http://127.0.0.1:1"}
    env.pop("BTCL2_DEVNET", None)
    for _ in range(CLI_RUNS):
        argv = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
        argv = [a.replace("\x00", "") or "x" for a in argv]
        done = subprocess.run([sys.executable, "-m", "btcl2", *argv], capture_output=True, text=True,
                              timeout=60, env=env, check=False)  # fmt: skip
        assert "Traceback" not in done.stderr, (argv, done.stderr)
        if done.returncode != 0 and "Usage:" not in done.stderr:
            errors = [line for line in done.stderr.splitlines() if line.strip()]
            assert len(errors) == 1, (argv, done.stderr)
