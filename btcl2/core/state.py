"""L2 state: accounts (committed to by the sparse Merkle tree root), credited deposits, withdrawals.

`State` is an immutable value. Changes go through a `Journal`, a write overlay over one State that
reads its own writes and is turned into the next State by `commit()`: the tree is updated once for every
account touched, so a sequencer that executes a whole batch in one journal pays the Merkle hashing
once per account per batch, not per transaction. Nothing is written until every check has passed, and
the base State is never modified, so a failed transaction or batch leaves it exactly as it was.
"""

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, Self, TypeVar

from btcl2.bitcoin.tx import OutPoint
from btcl2.core.hashing import keccak256
from btcl2.core.smt import SparseMerkleTree
from btcl2.core.types import (
    Address20,
    BatchHeader,
    DepositCredit,
    Hash32,
    Sats,
    WithdrawalRecord,
    decode_exact,
)

_K = TypeVar("_K")
_V = TypeVar("_V")

_MAX_TOP = 1024
"""Entries a LayeredMap keeps above its base before it folds them in (bounds both lookups and copies)."""


class LayeredMap(Mapping[_K, _V], Generic[_K, _V]):
    """An immutable mapping as a shared base dict plus a small top layer of changes.

    Deriving a map with a few changes copies only the top layer; every `_MAX_TOP` changes the layers
    are folded into a new base. Neither dict is ever mutated after construction.
    """

    __slots__ = ("_base", "_len", "_top")

    def __init__(self, base: dict[_K, _V] | None = None, top: dict[_K, _V | None] | None = None) -> None:
        self._base: dict[_K, _V] = base if base is not None else {}
        self._top: dict[_K, _V | None] = top if top is not None else {}
        added = sum(1 for k, v in self._top.items() if v is not None and k not in self._base)
        removed = sum(1 for k, v in self._top.items() if v is None and k in self._base)
        self._len = len(self._base) + added - removed

    def __getitem__(self, key: _K) -> _V:
        if key in self._top:
            value = self._top[key]
            if value is None:
                raise KeyError(key)
            return value
        return self._base[key]

    def __iter__(self) -> Iterator[_K]:
        for key in self._base:
            if key not in self._top:
                yield key
        for key, value in self._top.items():
            if value is not None:
                yield key

    def __len__(self) -> int:
        return self._len

    def with_changes(self, changes: Mapping[_K, _V | None]) -> "LayeredMap[_K, _V]":
        """A new map with `changes` applied (None removes a key); this map is unchanged."""
        if not changes:
            return self
        top = {**self._top, **changes}
        if len(top) <= _MAX_TOP:
            return LayeredMap(self._base, top)
        base = dict(self._base)
        for key, value in top.items():
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value
        return LayeredMap(base)


@dataclass(frozen=True, slots=True)
class Account:
    """One L2 account; an account with zero balance and nonce is absent from the tree."""

    balance: Sats
    """Satoshis owned."""
    nonce: int
    """Transactions sent so far; the next transaction must carry exactly this nonce."""

    def encode(self) -> bytes:
        """balance u64 || nonce u64, little-endian (16 bytes)."""
        return struct.pack("<QQ", self.balance, self.nonce)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode the 16-byte encoding."""
        return decode_exact(data, lambda r: cls(Sats(r.u64()), r.u64()))

    @property
    def leaf(self) -> bytes:
        """The tree value: keccak256 of the encoding."""
        return keccak256(self.encode())

    @property
    def is_empty(self) -> bool:
        """Whether the account is indistinguishable from one never used."""
        return self.balance == 0 and self.nonce == 0


EMPTY_ACCOUNT = Account(Sats(0), 0)


@dataclass(frozen=True, slots=True)
class State:
    """The whole L2 state after some batch (or some transaction, inside the sequencer)."""

    accounts: LayeredMap[Address20, Account] = field(default_factory=LayeredMap)
    """Every non-empty account."""
    tree: SparseMerkleTree = field(default_factory=SparseMerkleTree)
    """The sparse Merkle tree of keccak256(Account encoding) by address; always agrees with `accounts`."""
    credited_deposits: LayeredMap[OutPoint, DepositCredit] = field(default_factory=LayeredMap)
    """Every deposit credited so far, by outpoint (what forced inclusion checks against)."""
    withdrawals: LayeredMap[Hash32, WithdrawalRecord] = field(default_factory=LayeredMap)
    """Every withdrawal requested on L2, by id; payouts on Bitcoin are tracked outside the L2 state."""
    deposited: int = 0
    """Sum of all credited deposits."""
    withdrawn: int = 0
    """Sum of all withdrawal amounts burnt."""
    exited: int = 0
    """Sum of all exit (L2 -> EVM) amounts burnt; the Bridge mints them once their batch is attested."""
    head: BatchHeader | None = None
    """The header of the last batch applied, None before the first."""

    @property
    def root(self) -> Hash32:
        """The state root: the accounts tree root (deposits and withdrawals are committed per batch)."""
        return Hash32(self.tree.root)

    def account(self, address: Address20) -> Account:
        """The account at `address` (EMPTY_ACCOUNT if never used)."""
        return self.accounts.get(address, EMPTY_ACCOUNT)

    def total_balances(self) -> int:
        """Sum of every balance (fees included: they sit in the fee account); O(accounts)."""
        return sum(a.balance for a in self.accounts.values())


class Journal:
    """A write overlay over a State: reads see earlier writes; `commit()` yields the next State."""

    __slots__ = ("_accounts", "_base", "_credits", "_deposited", "_exited", "_withdrawals", "_withdrawn")

    def __init__(self, base: State) -> None:
        self._base = base
        self._accounts: dict[Address20, Account] = {}
        self._credits: dict[OutPoint, DepositCredit] = {}
        self._withdrawals: dict[Hash32, WithdrawalRecord] = {}
        self._deposited = 0
        self._withdrawn = 0
        self._exited = 0

    @property
    def base(self) -> State:
        """The State this journal started from."""
        return self._base

    def account(self, address: Address20) -> Account:
        """The account as written so far in this journal."""
        found = self._accounts.get(address)
        return found if found is not None else self._base.account(address)

    def is_credited(self, outpoint: OutPoint) -> bool:
        """Whether the deposit was credited before or in this journal."""
        return outpoint in self._credits or outpoint in self._base.credited_deposits

    def set_accounts(self, accounts: Mapping[Address20, Account]) -> None:
        """Write accounts (all checks must already have passed)."""
        self._accounts.update(accounts)

    def add_credit(self, credit: DepositCredit) -> None:
        """Record a credited deposit (the balance is written separately with set_accounts)."""
        self._credits[credit.outpoint] = credit
        self._deposited += credit.amount

    def add_withdrawal(self, record: WithdrawalRecord) -> None:
        """Record a withdrawal (the balance is written separately with set_accounts)."""
        self._withdrawals[record.withdrawal_id] = record
        self._withdrawn += record.amount

    def add_exit(self, amount: int) -> None:
        """Count an exit's burnt amount (the balance is written separately with set_accounts)."""
        self._exited += amount

    def commit(self, head: BatchHeader | None = None) -> State:
        """The State with every write applied (and `head` as the last batch, if given)."""
        base = self._base
        changes = {a: (None if acct.is_empty else acct) for a, acct in self._accounts.items()}
        leaves: dict[bytes, bytes | None] = {a: (None if c is None else c.leaf) for a, c in changes.items()}
        return State(
            accounts=base.accounts.with_changes(changes),
            tree=base.tree.update(leaves),
            credited_deposits=base.credited_deposits.with_changes(self._credits),
            withdrawals=base.withdrawals.with_changes(self._withdrawals),
            deposited=base.deposited + self._deposited,
            withdrawn=base.withdrawn + self._withdrawn,
            exited=base.exited + self._exited,
            head=head if head is not None else base.head,
        )
