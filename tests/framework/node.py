"""The tests' node launcher is the package's: see btcl2/regtest/process.py."""

from btcl2.regtest.process import (
    CORE_CONF,
    DEFAULT_BITCOIND,
    REPO_ROOT,
    RPC_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    NodeError,
    NodeKind,
    RegtestNode,
    bitcoind_path,
    free_port,
    node_kind,
)

__all__ = [
    "CORE_CONF",
    "DEFAULT_BITCOIND",
    "REPO_ROOT",
    "RPC_TIMEOUT",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "NodeError",
    "NodeKind",
    "RegtestNode",
    "bitcoind_path",
    "free_port",
    "node_kind",
]
