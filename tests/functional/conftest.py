"""Fixtures for the functional suites: regtest nodes started as processes and always stopped.

The node kind comes from BTCL2_NODE (`embedded` by default, `core` for a real bitcoind at BTCL2_BITCOIND);
the very same tests run against both.
"""

import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# The framework lives in tests/framework and tests/ is not a package: make it importable from here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framework.node import NodeKind, RegtestNode, node_kind
from framework.util import CoinPool

# Every node alive right now, so a failing test can show their logs.
_LIVE: list[RegtestNode] = []

NodeFactory = Callable[..., RegtestNode]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of every live node's log to a failing test's report."""
    report = yield
    if report.failed:
        for node in _LIVE:
            report.sections.append((f"{node.name} log ({node.kind.value})", node.log_tail(60)))
    return report


def _launch(datadir: Path, name: str, extra_args: tuple[str, ...], start: bool) -> RegtestNode:
    node = RegtestNode(datadir, extra_args=extra_args, name=name)
    _LIVE.append(node)
    if start:
        node.start()
    return node


def _shutdown(nodes: list[RegtestNode]) -> None:
    for node in nodes:
        try:
            node.stop()
        finally:
            node.kill9()
            if node in _LIVE:
                _LIVE.remove(node)


@pytest.fixture(scope="session")
def kind() -> NodeKind:
    """The kind of node under test."""
    return node_kind()


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[NodeFactory]:
    """Start extra nodes for one test: `node_factory(name="b")`; all are stopped when the test ends."""
    nodes: list[RegtestNode] = []

    def make(name: str = "n0", extra_args: tuple[str, ...] = (), start: bool = True) -> RegtestNode:
        node = _launch(tmp_path / name, name, extra_args, start)
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        _shutdown(nodes)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[RegtestNode]:
    """One node shared by a test module (starting a node per test would dominate the runtime)."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    started = _launch(tmp_path_factory.mktemp(module), module, (), True)
    try:
        yield started
    finally:
        _shutdown([started])


@pytest.fixture(scope="module")
def pool(node: RegtestNode) -> CoinPool:
    """Mature coinbase outputs on the module's node, one per test that needs money."""
    return CoinPool.fund(node, n_mature=20)
