"""The sequencer's mempool: pending signed transactions, per sender ordered by nonce, bounded in size.

Admission keeps an invariant that makes batching simple: a sender's pending nonces are exactly
`account.nonce, account.nonce + 1, ...` with no gap, and together they spend at most the sender's sealed
balance (credits from other pending transactions are not counted, so no pending transaction depends on
another sender's). A transaction with a pending sender + nonce and a strictly higher fee replaces it
and keeps its place in line, unless a roll-back returned it (`restore`: it was sealed, so it is sealed again
as it was). Batches take transactions in arrival order, which respects each sender's nonce order because
nonces arrive in sequence; returned transactions come first, in their sealed order.

Pending transactions live in memory; the sequencer mirrors them in its database (unsynced writes, which
outlive a kill -9 of the process) and admits them again at the next start.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from btcl2.core.errors import BadNonce, InsufficientBalance
from btcl2.core.state import Account
from btcl2.core.types import Address20, Hash32, SignedTx
from btcl2.errors import InvalidInput


class MempoolFull(InvalidInput):
    """Raised when the mempool holds its maximum number of transactions and the new one replaces none."""


class ResealedNotReplaceable(InvalidInput):
    """Raised when a transaction reuses the sender + nonce of a transaction a roll-back returned: it was sealed
    (a withdrawal may be paid already) and is sealed again as it was, never replaced."""


class ReplacementFeeTooLow(InvalidInput):
    """Raised when a transaction reuses a pending sender + nonce without a strictly higher fee."""


@dataclass(frozen=True, slots=True)
class MempoolEntry:
    """One pending transaction."""

    signed: SignedTx
    """The transaction."""
    tx_hash: Hash32
    """Its hash."""
    sender: Address20
    """Its recovered signer."""
    seq: int
    """Arrival number (a replacement inherits the number of the transaction it replaces)."""
    resealed: bool = False
    """Sealed before a roll-back (`restore`): sealed again first, in order; not replaceable."""

    @property
    def nonce(self) -> int:
        """The transaction's nonce."""
        return self.signed.tx.nonce

    @property
    def cost(self) -> int:
        """What the sender pays: amount plus fee."""
        return self.signed.tx.amount + self.signed.tx.fee


class Mempool:
    """Pending transactions by sender and nonce, and by hash."""

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise InvalidInput(f"mempool size must be at least 1, not {max_size}")
        self.max_size = max_size
        self._by_sender: dict[Address20, dict[int, MempoolEntry]] = {}
        self._by_hash: dict[Hash32, MempoolEntry] = {}
        self._next_seq = 0

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._by_hash

    def get(self, tx_hash: bytes) -> MempoolEntry | None:
        """The pending entry with this hash."""
        return self._by_hash.get(Hash32(tx_hash))

    def next_nonce(self, sender: Address20, account_nonce: int) -> int:
        """The nonce the sender's next transaction must carry, counting its pending ones."""
        return account_nonce + len(self._by_sender.get(sender, ()))

    def add(
        self, signed: SignedTx, tx_hash: Hash32, sender: Address20, account: Account
    ) -> MempoolEntry | None:
        """Admit a transaction whose signature is already checked; `account` is the sender's sealed account.

        Returns the entry it replaced, if any. Raises BadNonce, InsufficientBalance, ReplacementFeeTooLow or
        MempoolFull, changing nothing. Adding a transaction that is already pending does nothing.
        """
        if tx_hash in self._by_hash:
            return None
        tx = signed.tx
        pending = self._by_sender.get(sender, {})
        if tx.nonce < account.nonce:
            raise BadNonce(f"nonce {tx.nonce} too low: account 0x{sender.hex()} expects {account.nonce}")
        old = pending.get(tx.nonce)
        if old is None:
            expected = account.nonce + len(pending)
            if tx.nonce != expected:
                raise BadNonce(
                    f"nonce {tx.nonce} leaves a gap: the next nonce of 0x{sender.hex()} is {expected}"
                )
            if len(self._by_hash) >= self.max_size:
                raise MempoolFull(f"mempool full ({self.max_size} transactions)")
        elif old.resealed:
            raise ResealedNotReplaceable(
                f"nonce {tx.nonce} of 0x{sender.hex()} belongs to a transaction sealed before a Bitcoin reorg "
                "rolled its batch back; it is sealed again unchanged"
            )
        elif tx.fee <= old.signed.tx.fee:
            raise ReplacementFeeTooLow(
                f"replacing nonce {tx.nonce} needs a fee above {old.signed.tx.fee}, got {tx.fee}"
            )
        spent = sum(e.cost for n, e in pending.items() if n != tx.nonce) + tx.amount + tx.fee
        if spent > account.balance:
            raise InsufficientBalance(
                f"balance {account.balance} < {spent} spent by this and the pending transactions of 0x{sender.hex()}"
            )
        if old is None:
            seq = self._next_seq
            self._next_seq += 1
        else:
            seq = old.seq
            del self._by_hash[old.tx_hash]
        entry = MempoolEntry(signed, tx_hash, sender, seq)
        self._by_sender.setdefault(sender, {})[tx.nonce] = entry
        self._by_hash[tx_hash] = entry
        return old

    def restore(self, entries: Sequence[tuple[SignedTx, Hash32, Address20]]) -> None:
        """Put transactions of batches that were rolled back in front of every pending one, in order.

        They were valid in that order on the state they are rolled back to, except where they spent a deposit
        credit that the next batch gives again, so no balance is checked here: sealing executes them (and
        rejects what fails) and `prune` then restores the invariant. The size limit does not apply, and they
        are marked `resealed`: no fee replacement may take their place."""
        if not entries:
            return
        first = min((e.seq for e in self._by_hash.values()), default=0) - len(entries)
        for offset, (signed, tx_hash, sender) in enumerate(entries):
            pending = self._by_sender.setdefault(sender, {})
            old = pending.get(signed.tx.nonce)
            if old is not None:  # a later replacement of the same nonce cannot exist; keep the sealed one
                del self._by_hash[old.tx_hash]
            entry = MempoolEntry(signed, tx_hash, sender, first + offset, resealed=True)
            pending[signed.tx.nonce] = entry
            self._by_hash[tx_hash] = entry

    def candidates(self, limit: int) -> list[MempoolEntry]:
        """Up to `limit` entries in arrival order (each sender's nonces in order)."""
        ordered = sorted(self._by_hash.values(), key=lambda e: e.seq)
        return ordered[:limit]

    def remove(self, tx_hashes: Iterable[bytes]) -> None:
        """Forget these transactions (sealed or rejected); unknown hashes are ignored."""
        for tx_hash in tx_hashes:
            entry = self._by_hash.pop(Hash32(tx_hash), None)
            if entry is None:
                continue
            pending = self._by_sender[entry.sender]
            if pending.get(entry.nonce) is entry:
                del pending[entry.nonce]
            if not pending:
                del self._by_sender[entry.sender]

    def prune(
        self, senders: Iterable[Address20], account: Callable[[Address20], Account]
    ) -> list[MempoolEntry]:
        """Restore the invariant for these senders after a batch; returns the entries dropped.

        Keeps each sender's run of nonces starting at its new account nonce and within its new balance;
        drops the rest (already used nonces, nonces after a gap left by a rejected transaction, and
        transactions the balance no longer covers).
        """
        dropped: list[MempoolEntry] = []
        for sender in set(senders):
            pending = self._by_sender.get(sender)
            if not pending:
                continue
            acct = account(sender)
            budget: int = acct.balance
            keep: dict[int, MempoolEntry] = {}
            nonce = acct.nonce
            while nonce in pending and pending[nonce].cost <= budget:
                budget -= pending[nonce].cost
                keep[nonce] = pending[nonce]
                nonce += 1
            dropped += [e for n, e in pending.items() if n not in keep]
            for entry in dropped:
                self._by_hash.pop(entry.tx_hash, None)
            if keep:
                self._by_sender[sender] = keep
            else:
                del self._by_sender[sender]
        return dropped
