"""Explain why a batch failed to apply: which rule, which transaction, expected vs got.

`apply_batch` rejects a batch as a whole; this re-runs its steps one at a time on a throw-away journal
to name the first failing deposit or transaction and the values that differ. Pure.
"""

from dataclasses import dataclass

from btcl2.core.errors import BatchLinkMismatch, InvalidBatch, RootMismatch
from btcl2.core.params import Params
from btcl2.core.state import Journal, State
from btcl2.core.transition import (
    ZERO_HASH,
    execute_deposit,
    execute_transaction,
    transactions_root,
    withdrawals_root,
)
from btcl2.core.types import Batch
from btcl2.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Finding:
    """The first thing wrong with a batch."""

    error: str
    """The error class name."""
    message: str
    """What is wrong."""
    transaction: str | None = None
    """The failing L2 transaction's hash (hex), when one transaction is at fault."""
    expected: str | None = None
    """The value replay computed."""
    got: str | None = None
    """The value the batch carries."""


def _link_finding(state: State, batch: Batch, exc: InvalidInput) -> Finding:
    prev = state.head
    number, parent = (0, ZERO_HASH) if prev is None else (prev.number + 1, prev.hash)
    header = batch.header
    return Finding(
        type(exc).__name__,
        str(exc),
        expected=f"number {number}, parent {parent.hex()}",
        got=f"number {header.number}, parent {header.parent_hash.hex()}",
    )


def _replay_steps(state: State, batch: Batch, params: Params) -> Finding | None:
    """Execute deposits then transactions one by one; the first failure, or a root that differs."""
    header = batch.header
    journal = Journal(state)
    for credit in header.deposits:
        try:
            execute_deposit(journal, credit, params)
        except InvalidInput as exc:
            where = f"{credit.outpoint.txid_hex}:{credit.outpoint.vout}"
            return Finding(type(exc).__name__, f"deposit {where}: {exc}")
    records = []
    for index, signed in enumerate(batch.transactions):
        try:
            receipt = execute_transaction(journal, signed, params)
        except InvalidInput as exc:
            tx_hash = signed.tx_hash.hex()
            return Finding(type(exc).__name__, f"transaction {index} ({tx_hash}): {exc}", transaction=tx_hash)
        if receipt.withdrawal is not None:
            records.append(receipt.withdrawal)
    root = withdrawals_root(records)
    if root != header.withdrawals_root:
        return Finding(
            RootMismatch.__name__, "withdrawals root", None, root.hex(), header.withdrawals_root.hex()
        )
    post = journal.commit().root
    if post != header.post_state_root:
        return Finding(
            RootMismatch.__name__, "post-state root", None, post.hex(), header.post_state_root.hex()
        )
    return None


def diagnose(state: State, batch: Batch, params: Params, exc: InvalidInput) -> Finding:
    """The most precise account of `exc`, raised by apply_batch(state, batch, ...)."""
    header = batch.header
    if isinstance(exc, BatchLinkMismatch):
        return _link_finding(state, batch, exc)
    if isinstance(exc, RootMismatch):
        if header.pre_state_root != state.root:
            return Finding(
                type(exc).__name__, "pre-state root", None, state.root.hex(), header.pre_state_root.hex()
            )
        root = transactions_root(batch.transactions)
        if root != header.transactions_root:
            return Finding(
                type(exc).__name__, "transactions root", None, root.hex(), header.transactions_root.hex()
            )
    if isinstance(exc, InvalidBatch) and not isinstance(exc, RootMismatch):
        return Finding(type(exc).__name__, str(exc))
    found = _replay_steps(state, batch, params)
    return found if found is not None else Finding(type(exc).__name__, str(exc))
