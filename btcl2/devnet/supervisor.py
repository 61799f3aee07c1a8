"""The devnet supervisor: brings the stack up in order, restarts any child that dies (with backoff), keeps
devnet.toml current, and stops everything in reverse order on SIGINT/SIGTERM.

A plain loop with a sleep rather than asyncio: it only polls a handful of child processes, and the
blocking launchers it reuses (RegtestNode, Anvil) wait on their own.
"""

import dataclasses
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from btcl2.core.params import Params
from btcl2.devnet.config import DevnetFile, ProcessInfo, devnet_path, read_devnet, write_devnet
from btcl2.devnet.processes import AnvilChild, Child, NodeChild, belongs_to, is_supervisor
from btcl2.devnet.stack import (
    DevnetError,
    check_contracts,
    check_federation,
    deploy_contracts,
    ensure_attestation_verifier,
    fund_poster,
    new_devnet,
    role_children,
    write_role_files,
)

log = logging.getLogger(__name__)

POLL = 0.5
"""Seconds between looks at the children."""
READY_TIMEOUT = 120.0
"""Seconds every child gets to answer after the first start."""
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 15.0
STABLE_AFTER = 30.0
"""A child that ran this long before dying is restarted without delay (its backoff starts over)."""


@dataclass
class _Slot:
    """The supervisor's record of one child."""

    child: Child
    restarts: int = 0
    failures: int = 0
    started_at: float = 0.0
    next_start: float | None = None


def load_or_create(datadir: Path, signers: int, threshold: int, params: Params) -> DevnetFile:
    """The devnet in `datadir`: resumed from its devnet.toml, or new; refuses one that is still running."""
    check_federation(signers, threshold, params)
    datadir.mkdir(parents=True, exist_ok=True)
    if not devnet_path(datadir).exists():
        return new_devnet(datadir, signers, threshold)
    doc = read_devnet(datadir)
    if is_supervisor(doc.supervisor_pid) and doc.supervisor_pid != os.getpid():
        raise DevnetError(f"the devnet in {datadir} is already running (supervisor pid {doc.supervisor_pid})")
    for proc in doc.processes:
        if proc.pid and belongs_to(proc.pid, datadir):
            raise DevnetError(
                f"{proc.name} (pid {proc.pid}) of a previous run is still alive: `btcl2 devnet down`"
            )
    return dataclasses.replace(doc, datadir=datadir, signers=signers, threshold=threshold, processes=())


class Supervisor:
    """Runs one devnet until stop() (or a signal)."""

    def __init__(self, doc: DevnetFile, params: Params) -> None:
        self.doc = dataclasses.replace(doc, supervisor_pid=os.getpid(), state="starting")
        self.params = params
        self.slots: list[_Slot] = []
        self._stopping = False
        self._shut = False

    # --- state file --------------------------------------------------------------------------------

    def _save(self) -> None:
        procs = tuple(
            ProcessInfo(
                s.child.name,
                s.child.pid(),
                s.restarts,
                "stopped" if self._stopping else ("up" if s.child.alive() else "down"),
                str(s.child.log_path),
            )
            for s in self.slots
        )
        self.doc = dataclasses.replace(self.doc, processes=procs)
        write_devnet(self.doc)

    # --- bring-up ----------------------------------------------------------------------------------

    def _launch(self, child: Child) -> None:
        slot = _Slot(child, started_at=time.monotonic())
        self.slots.append(slot)
        log.info("starting %s", child.name)
        child.start()
        self._save()

    def bring_up(self) -> None:
        """Start every child in order, deploying and funding what a fresh devnet lacks."""
        doc = self.doc
        doc.logs_dir.mkdir(parents=True, exist_ok=True)
        write_devnet(doc)
        node = NodeChild(doc.datadir / "bitcoin", doc.ports.bitcoin, doc.logs_dir / "bitcoin.log")
        link = doc.logs_dir / "bitcoin.log"
        if not link.is_symlink():
            link.symlink_to(node.node.log_file)
        self._launch(node)
        self._launch(AnvilChild(doc.ports.evm, doc.datadir / "evm" / "state.json", doc.logs_dir / "evm.log"))
        if doc.contracts is None:
            log.info("deploying the contracts")
            self.doc = dataclasses.replace(self.doc, contracts=deploy_contracts(doc.evm_rpc, self.params))
        else:
            check_contracts(doc.evm_rpc, doc.contracts)
            if doc.contracts.attestation_verifier is None:  # a devnet made before attestations
                log.info("deploying the attestation verifier")
                verifier = ensure_attestation_verifier(doc.evm_rpc, doc.contracts, self.params)
                self.doc = dataclasses.replace(self.doc, contracts=verifier)
        if not self.doc.funded:
            log.info("funding the poster")
            fund_poster(self.doc)
            tip = int(node.node.call("getblockcount"))
            self.doc = dataclasses.replace(self.doc, funded=True, from_height=tip)
        self._save()
        write_role_files(self.doc, self.params)
        for child in role_children(self.doc, self.params):
            self._launch(child)
        self._wait_ready()
        self.doc = dataclasses.replace(self.doc, state="running")
        self._save()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        for slot in self.slots:
            while not slot.child.ready():
                if not slot.child.alive():
                    raise DevnetError(f"{slot.child.name} exited during startup: see {slot.child.log_path}")
                if self._stopping or time.monotonic() > deadline:
                    raise DevnetError(f"{slot.child.name} did not answer within {READY_TIMEOUT:g}s")
                time.sleep(0.2)

    # --- supervision -------------------------------------------------------------------------------

    def _check(self, slot: _Slot) -> bool:
        """Restart `slot` if its child died and its backoff elapsed; True when something changed."""
        now = time.monotonic()
        if slot.child.alive():
            return False
        if slot.next_start is None:
            slot.failures = 0 if now - slot.started_at >= STABLE_AFTER else slot.failures + 1
            delay = 0.0 if slot.failures == 0 else min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (slot.failures - 1))
            slot.next_start = now + delay
            log.warning("%s died; restarting in %.1fs", slot.child.name, delay)
            return True
        if now < slot.next_start:
            return False
        slot.next_start, slot.started_at = None, now
        slot.restarts += 1
        try:
            slot.child.start()
        except Exception as exc:  # a failed start is one more death: the next pass backs off further
            log.error("restarting %s failed: %s", slot.child.name, exc)
        return True

    def run(self) -> None:
        """Supervise until stop(); then stop every child in reverse start order."""
        try:
            while not self._stopping:
                changed = False
                for slot in self.slots:
                    if self._stopping:
                        break
                    changed |= self._check(slot)
                if changed:
                    self._save()
                time.sleep(POLL)
        finally:
            self.shutdown()

    def stop(self) -> None:
        """Ask run() to stop everything and return (safe from a signal handler)."""
        self._stopping = True

    def shutdown(self) -> None:
        """Stop every child, last started first; each wait is bounded. Idempotent."""
        self._stopping = True
        if self._shut:
            return
        self._shut = True
        for slot in reversed(self.slots):
            try:
                slot.child.stop()
            except Exception as exc:  # keep stopping the others
                log.error("stopping %s: %s", slot.child.name, exc)
        self.doc = dataclasses.replace(self.doc, state="stopped", supervisor_pid=0)
        self._save()

    def install_signal_handlers(self) -> None:
        """SIGINT and SIGTERM stop the devnet cleanly."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
