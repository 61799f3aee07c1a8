"""libbitcoinkernel behind a small interface: feed blocks, read the active chain, learn why a block failed.

The kernel keeps its own block files and chainstate under DIR/regtest/{blocks,chainstate}. It has no
invalidateblock, so the node rebuilds it from its own block store when the best chain must go backwards;
`wipe()` removes the kernel's directories for that.
"""

import gc
import logging
import re
import shutil
from pathlib import Path

import pbk

from btcl2.errors import Critical

log = logging.getLogger(__name__)

_CHECKED = re.compile(r"BlockChecked: block hash=([0-9a-f]{64}) state=(.*)$")
_ACCEPT_FAILED = re.compile(r"AcceptBlock FAILED \((.*)\)")

# One log bridge per process: the kernel's logging is global, not per chainstate.
_viewer: pbk.KernelLogViewer | None = None


class _ReasonCatcher(logging.Handler):
    """Keeps the last rejection reason the kernel logged, per block hash and overall."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.by_hash: dict[str, str] = {}
        self.last_accept_failure: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if m := _CHECKED.search(msg):
            self.by_hash[m.group(1)] = m.group(2)
        elif m := _ACCEPT_FAILED.search(msg):
            self.last_accept_failure = m.group(1)


_catcher = _ReasonCatcher()


def _install_log_bridge() -> None:
    global _viewer
    if _viewer is None:
        _viewer = pbk.KernelLogViewer(categories=[pbk.LogCategory.VALIDATION])
        kernel_logger = logging.getLogger("bitcoinkernel")
        kernel_logger.setLevel(logging.DEBUG)
        kernel_logger.addHandler(_catcher)
        kernel_logger.propagate = False


class BlockRejected(Exception):
    """Raised when the kernel finds a block invalid; `reason` is Core's reject reason (e.g. bad-cb-amount)."""

    def __init__(self, reason: str, debug: str = "") -> None:
        super().__init__(f"{reason}{', ' + debug if debug else ''}")
        self.reason = reason
        self.debug = debug


def _split_reason(state: str) -> tuple[str, str]:
    reason, _, debug = state.partition(", ")
    return reason.strip(), debug.strip()


class Kernel:
    """One ChainstateManager on a data directory."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        _install_log_bridge()
        self._checked: dict[bytes, bool] = {}
        callbacks = pbk.ValidationInterfaceCallbacks(block_checked=self._on_checked)
        try:
            self._cm = pbk.load_chainman(datadir, pbk.ChainType.REGTEST, validation_callbacks=callbacks)
        except RuntimeError as e:
            raise Critical(f"libbitcoinkernel could not load its chainstate in {datadir}: {e}") from e
        self._callbacks = callbacks

    def _on_checked(self, _user: object, block: pbk.Block, state: pbk.BlockValidationState) -> None:
        self._checked[bytes(block.block_hash)] = state.validation_mode == pbk.ValidationMode.VALID

    def process_block(self, raw: bytes, block_hash: bytes) -> tuple[bool, bool]:
        """Validate a block and connect it if it makes the best chain.

        Returns (is_new, checked): whether the kernel had not stored it before, and whether it was fully
        validated (connected) rather than only stored on a side branch. Raises BlockRejected with Core's
        reject reason when the block is invalid.
        """
        self._checked.pop(block_hash, None)
        _catcher.last_accept_failure = None
        try:
            kblock = pbk.Block(raw)
        except Exception as e:  # the kernel refuses to deserialize
            raise BlockRejected("Block decode failed") from e
        try:
            is_new = self._cm.process_block(kblock)
        except pbk.ProcessBlockException as e:
            state = _catcher.by_hash.get(block_hash[::-1].hex()) or _catcher.last_accept_failure or "invalid"
            raise BlockRejected(*_split_reason(state)) from e
        if self._checked.get(block_hash) is False:
            state = _catcher.by_hash.get(block_hash[::-1].hex(), "invalid")
            raise BlockRejected(*_split_reason(state))
        return is_new, block_hash in self._checked

    def knows(self, block_hash: bytes) -> bool:
        return pbk.BlockHash(block_hash) in self._cm.block_tree_entries

    @property
    def height(self) -> int:
        return int(self._cm.get_active_chain().height)

    def hash_at(self, height: int) -> bytes:
        """Hash (internal byte order) of the active-chain block at height."""
        chain = self._cm.get_active_chain()
        return bytes(chain.block_tree_entries[height].block_hash)

    def read_block(self, height: int) -> bytes:
        chain = self._cm.get_active_chain()
        return bytes(self._cm.blocks[chain.block_tree_entries[height]])

    def close(self) -> None:
        """Flush and release the chainstate (the kernel flushes when its manager is destroyed)."""
        self._cm = None
        gc.collect()

    def wipe(self) -> None:
        """Close and delete the kernel's block files and chainstate so it can be rebuilt from scratch."""
        self.close()
        self.remove_files(self.datadir)

    @staticmethod
    def remove_files(datadir: Path) -> None:
        for sub in ("blocks", "chainstate"):
            shutil.rmtree(datadir / sub, ignore_errors=True)
