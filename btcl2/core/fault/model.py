"""The values of the step model: the batch context, the step state and its commitment, invalid results.

Every fixed-width integer in these encodings is big-endian (the EVM's native order): they are new encodings
read by OneStepProver.sol, unlike the L2 wire types of btcl2/core/types.py, whose integers stay little-endian.
"""

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from btcl2.core.exits import exits_root
from btcl2.core.hashing import keccak256
from btcl2.core.merkle import merkle_root
from btcl2.core.types import Batch, DepositCredit, ExitRecord, Hash32, WithdrawalRecord
from btcl2.errors import InvalidInput

ZERO32 = Hash32(bytes(32))
CONTEXT_SIZE = 32 + 4 + 32 + 4 + 32 + 32 + 32
"""Bytes of a BatchContext encoding."""
STATE_SIZE = 8 + 32 + 32 + 32
"""Bytes of a StepState encoding."""


class BadWitness(InvalidInput):
    """Raised when a step witness is malformed or does not match the context or the pre-state: the party that
    sent it is wrong, the claim is not (the contract reverts with a custom error)."""


class Reason(IntEnum):
    """Why a step is invalid; the same numbers are OneStepProver.sol's `reason` codes."""

    MALFORMED = 1
    """The operation's bytes do not decode (a transaction or deposit credit)."""
    BAD_SIGNATURE = 2
    """The signature has v outside {27, 28}, r or s out of range, high S, or recovers no key."""
    NON_STANDARD_SCRIPT = 3
    """A withdrawal pays a script other than P2PKH, P2SH, P2WPKH, P2WSH or P2TR."""
    DUST_AMOUNT = 4
    """A withdrawal or exit below min_withdrawal_sats, or a deposit below min_deposit_sats."""
    AMOUNT_OVERFLOW = 5
    """amount + fee, or a credited balance, exceeds MAX_MONEY."""
    BAD_NONCE = 6
    """The nonce is not the sender's, or the sender's nonce is exhausted."""
    INSUFFICIENT_BALANCE = 7
    """The sender's balance is below amount + fee."""
    TOO_MANY_TRANSACTIONS = 8
    """The batch holds more than max_batch_txs transactions (every step reports it)."""
    WITHDRAWALS_ROOT_MISMATCH = 9
    """The header's withdrawals_root is not the root of the withdrawals executed (seal step)."""
    POST_STATE_ROOT_MISMATCH = 10
    """The header's post_state_root is not the state root after the last operation (seal step)."""
    EXITS_ROOT_MISMATCH = 11
    """The claimed exits root is not the root of the exits executed (seal step)."""
    ZERO_RECIPIENT = 12
    """An exit names the zero address as its EVM recipient (no WBTC could ever be minted for it)."""


@dataclass(frozen=True, slots=True)
class StepInvalid:
    """The result of a step whose operation (or whose batch) breaks a rule: a claim including it is wrong."""

    step: int
    """The index of the invalid step."""
    reason: Reason
    """Which rule it breaks."""


@dataclass(frozen=True, slots=True)
class BatchContext:
    """What a batch's header (and its claim) fix for every step; the game contract derives it once."""

    transactions_root: Hash32
    """The header's transactions_root (leaves: each signed transaction's tx_hash)."""
    tx_count: int
    """Transactions in the batch body (u32); the root alone does not fix it, each branch's shape does."""
    deposits_root: Hash32
    """merkle_root of keccak256(DepositCredit encoding) over the header's deposits, in order."""
    deposit_count: int
    """Deposits the header credits (u32)."""
    post_state_root: Hash32
    """The header's post_state_root."""
    withdrawals_root: Hash32
    """The header's withdrawals_root."""
    exits_root: Hash32
    """The exits root the claim names (not a header field; btcl2/core/exits.py)."""

    def encode(self) -> bytes:
        """transactions_root, tx_count u32, deposits_root, deposit_count u32, post_state_root,
        withdrawals_root, exits_root: 168 bytes, integers big-endian."""
        return b"".join(
            (
                self.transactions_root,
                struct.pack(">I", self.tx_count),
                self.deposits_root,
                struct.pack(">I", self.deposit_count),
                self.post_state_root,
                self.withdrawals_root,
                self.exits_root,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly CONTEXT_SIZE bytes; BadWitness otherwise."""
        if len(data) != CONTEXT_SIZE:
            raise BadWitness(f"batch context must be {CONTEXT_SIZE} bytes")
        (tx_count,) = struct.unpack(">I", data[32:36])
        (deposit_count,) = struct.unpack(">I", data[68:72])
        h = [Hash32(bytes(data[i : i + 32])) for i in (0, 36, 72, 104, 136)]
        return cls(h[0], tx_count, h[1], deposit_count, h[2], h[3], h[4])

    @property
    def hash(self) -> Hash32:
        """keccak256 of the encoding: the `batchContext` argument of OneStepProver.step."""
        return Hash32(keccak256(self.encode()))

    @property
    def step_count(self) -> int:
        """Steps of the batch: one per deposit, one per transaction, then the seal step."""
        return self.deposit_count + self.tx_count + 1


def deposit_leaf(credit: DepositCredit) -> Hash32:
    """The deposits-root leaf of one credit: keccak256 of its 64-byte encoding."""
    return Hash32(keccak256(credit.encode()))


def deposits_root(credits: tuple[DepositCredit, ...]) -> Hash32:
    """The Merkle root (btcl2/core/merkle.py) of every deposit leaf, in header order."""
    return Hash32(merkle_root([deposit_leaf(c) for c in credits]))


def batch_context(batch: Batch, exits: list[ExitRecord]) -> BatchContext:
    """The context of `batch` as its header states it, with the exits root of `exits` (the claim's)."""
    h = batch.header
    return BatchContext(
        transactions_root=h.transactions_root,
        tx_count=len(batch.transactions),
        deposits_root=deposits_root(h.deposits),
        deposit_count=len(h.deposits),
        post_state_root=h.post_state_root,
        withdrawals_root=h.withdrawals_root,
        exits_root=exits_root(exits),
    )


@dataclass(frozen=True, slots=True)
class StepState:
    """Everything the batch's execution carries from one step to the next."""

    step: int
    """How many steps have run (u64): 0 before the first deposit, step_count after the seal step."""
    state_root: Hash32
    """The accounts tree root (btcl2/core/smt.py)."""
    withdrawals_acc: Hash32
    """Hash chain of the withdrawal leaves so far (acc = keccak256(acc || leaf), from 32 zero bytes); after
    the seal step, the withdrawals root."""
    exits_acc: Hash32
    """Hash chain of the exit leaves so far, the same way; after the seal step, the exits root."""

    def encode(self) -> bytes:
        """step u64 big-endian, state_root, withdrawals_acc, exits_acc: 104 bytes."""
        return struct.pack(">Q", self.step) + self.state_root + self.withdrawals_acc + self.exits_acc

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly STATE_SIZE bytes; BadWitness otherwise."""
        if len(data) != STATE_SIZE:
            raise BadWitness(f"step state must be {STATE_SIZE} bytes")
        (step,) = struct.unpack(">Q", data[:8])
        return cls(step, Hash32(bytes(data[8:40])), Hash32(bytes(data[40:72])), Hash32(bytes(data[72:104])))


def commitment(state: StepState) -> Hash32:
    """keccak256(StepState encoding): what the parties of a game commit to for each step."""
    return Hash32(keccak256(state.encode()))


def initial_state(pre_state_root: Hash32) -> StepState:
    """The state before step 0: the batch's pre-state root and empty accumulators."""
    return StepState(0, pre_state_root, ZERO32, ZERO32)


def final_state(context: BatchContext) -> StepState:
    """The state after the seal step of a valid batch with this context (what the game compares with)."""
    return StepState(
        context.step_count, context.post_state_root, context.withdrawals_root, context.exits_root
    )


def chain(acc: bytes, leaf: bytes) -> Hash32:
    """One link of an accumulator hash chain: keccak256(acc || leaf)."""
    return Hash32(keccak256(acc + leaf))


def withdrawal_leaf(record: WithdrawalRecord) -> Hash32:
    """The withdrawals-root leaf of one record (as transition.withdrawals_root hashes it)."""
    return Hash32(keccak256(record.encode()))


__all__ = [
    "CONTEXT_SIZE",
    "STATE_SIZE",
    "ZERO32",
    "BadWitness",
    "BatchContext",
    "Reason",
    "StepInvalid",
    "StepState",
    "batch_context",
    "chain",
    "commitment",
    "deposit_leaf",
    "deposits_root",
    "final_state",
    "initial_state",
    "withdrawal_leaf",
]
