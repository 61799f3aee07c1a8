"""The explorer page in a real browser: Debian's headless Chromium driven by playwright-core (npm) from
tests/functional/explorer_browser.mjs, against the embedded regtest node and `btcl2 sequencer run --post`.

The page loads (batches and the conservation check), the search finds a known transfer as sealed, and after
a block is mined the same page shows it anchored. Screenshots go to tests/artifacts/.
"""

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from framework.node import RegtestNode
from framework.util import CoinPool, wait_until
from test_status import Stack, start_stack

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("explorer_browser.mjs")
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return "chromium is not installed (make setup installs it as root: scripts/install-chromium.sh)"
    if not (ROOT / "node_modules" / "playwright-core").is_dir() or shutil.which("node") is None:
        return "playwright-core is not installed (npm ci)"
    return None


@pytest.fixture(scope="module")
def stack(node: RegtestNode, pool: CoinPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(node, pool, tmp_path_factory.mktemp("explorer"))
    try:
        yield s
    finally:
        s.stop()


def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        assert proc.stderr is not None
        raise AssertionError(f"browser script ended ({proc.returncode}): {proc.stderr.read()[-3000:]}")
    doc: dict[str, Any] = json.loads(line)
    return doc


def test_explorer_in_headless_chromium(stack: Stack, pool: CoinPool, tmp_path: Path) -> None:
    missing = _browser_missing()
    assert not missing, f"{missing} (make setup installs it: scripts/install-chromium.sh)"
    txid = stack.deposit(pool)
    stack.mine(2)
    wait_until(lambda: stack.status(txid)["status"] in ("credited", "anchored", "final"), 30, "deposit credited")
    stack.mine(2)  # the deposit's batch anchored and final: the next anchor is the transfer's alone
    tx_hash = stack.send()
    sealed = stack.wait_status(tx_hash, "sealed", 20)
    batch = sealed["batch"]
    wait_until(lambda: stack.call("l2_getBatch", batch)["anchor"]["status"] == "broadcast", 20, "anchor sent")
    assert stack.get("/explorer").startswith(b"<!doctype html>")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cmd = ["node", str(SCRIPT), stack.url + "explorer/", tx_hash, str(ARTIFACTS)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "CHROMIUM": CHROMIUM, "HOME": str(tmp_path)},
    )
    try:
        first = _read(proc)
        assert first["step"] == "sealed" and first["title"] == "btcl2 explorer"
        assert "holds" in first["conservation"], first["conservation"]
        assert dict(first["stages"])["sealed"] == "true" and dict(first["stages"])["anchored"] == "false"
        assert tx_hash in first["resultText"]
        stack.mine(1)
        assert proc.stdin is not None
        proc.stdin.write("mined\n")
        proc.stdin.close()
        done = _read(proc)
        assert done["step"] == "done" and done["status"] in ("anchored", "final")
        assert done["errors"] == []
        row = next(r for r in done["batchRows"] if r.split()[0] == str(batch))
        anchor = stack.call("l2_getBatch", batch)["anchor"]
        assert anchor["txids"][0] in row and anchor["status"] in row
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    for name in ("explorer-loaded.png", "explorer-sealed.png", "explorer-anchored.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
