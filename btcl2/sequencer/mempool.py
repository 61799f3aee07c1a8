"""The sequencer's mempool: pending signed transactions, per sender ordered by nonce, bounded in size,
ordered and evicted by fee rate.

Admission keeps an invariant that makes batching simple: a sender's pending nonces are exactly
`account.nonce, account.nonce + 1, ...` with no gap, and together they spend at most the sender's sealed
balance (credits from other pending transactions are not counted, so no pending transaction depends on
another sender's).

A transaction's fee rate is its fee per byte of its signed encoding (the bytes the poster pays Bitcoin to
carry). The rules follow Bitcoin Core's, with a sender's nonce chain in the place of a transaction's
descendants (docs/PROTOCOL.md, "Mempool"):

- Replacement (same sender + nonce): refused for an entry restored from a rolled-back batch (it was
  sealed, a withdrawal in it may be paid already: `ResealedNotReplaceable`); otherwise the new fee must reach the old fee plus `incremental` (the service
  passes the minimum L2 fee of the new transaction, so a replacement costs what a new transaction does) and
  its fee rate must be strictly higher; it keeps its place in line.
- Eviction, when full: only chain tails are evicted (the sender's highest pending nonce), so no gap is ever
  made. A tail's score is min(its own fee rate, the fee rate of its sender's whole pending chain): a
  high-fee tail cannot shield the cheap transactions it must wait behind. The lowest-scored evictable tail
  of another sender (ties: the latest arrival) is evicted when the newcomer's score, computed the same way
  over its own chain, is strictly higher; else MempoolFull (with the fee that would have sufficed).
  Entries restored from rolled-back batches are not evictable (`MempoolEntry.evictable`).
- Sealing order: restored entries first, in their batch order; then each sender's chain in nonce order,
  merged across senders by the fee rate of each chain's next transaction, highest first (ties: earlier
  arrival), which is deterministic.

Pending transactions live in memory; the sequencer mirrors them in its database (unsynced writes, which
outlive a kill -9 of the process) and admits them again at the next start.
"""

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from btcl2.core.errors import BadNonce, InsufficientBalance
from btcl2.core.state import Account
from btcl2.core.types import Address20, Hash32, SignedTx
from btcl2.errors import InvalidInput


class MempoolFull(InvalidInput):
    """Raised when the mempool is full and the new transaction's fee rate evicts nothing; `min_fee` is
    the fee that would have evicted the cheapest evictable transaction (None: nothing is evictable)."""

    def __init__(self, message: str, min_fee: int | None = None) -> None:
        super().__init__(message)
        self.min_fee = min_fee
        self.details = {} if min_fee is None else {"minFee": min_fee}


class ResealedNotReplaceable(InvalidInput):
    """Raised when a transaction reuses the sender + nonce of a transaction a roll-back returned: it was sealed
    (a withdrawal may be paid already) and is sealed again as it was, never replaced."""


class ReplacementFeeTooLow(InvalidInput):
    """Raised when a transaction reuses a pending sender + nonce without paying the replacement's fee bump
    (`min_fee` is the fee that would)."""

    def __init__(self, message: str, min_fee: int) -> None:
        super().__init__(message)
        self.min_fee = min_fee
        self.details = {"minFee": min_fee}


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
    size: int = 0
    """Bytes of its signed encoding (0: computed from `signed`)."""
    restored: bool = False
    """Returned from a batch that was rolled back: sealed again first, in order; never evicted or replaced."""

    def __post_init__(self) -> None:
        if self.size == 0:
            object.__setattr__(self, "size", len(self.signed.encode()))

    @property
    def nonce(self) -> int:
        """The transaction's nonce."""
        return self.signed.tx.nonce

    @property
    def fee(self) -> int:
        """The transaction's fee."""
        return self.signed.tx.fee

    @property
    def cost(self) -> int:
        """What the sender pays: amount plus fee."""
        return self.signed.tx.amount + self.signed.tx.fee

    @property
    def fee_rate(self) -> Fraction:
        """Fee per byte of the signed encoding."""
        return Fraction(self.fee, self.size)

    @property
    def evictable(self) -> bool:
        """Whether a higher-paying transaction may push it out of a full mempool (the hook for entries that
        must stay: restored ones)."""
        return not self.restored


class Mempool:
    """Pending transactions by sender and nonce, and by hash, with each chain's fee totals and a heap of
    the evictable chain tails by score (entries go stale when their sender's chain changes)."""

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise InvalidInput(f"mempool size must be at least 1, not {max_size}")
        self.max_size = max_size
        self._by_sender: dict[Address20, dict[int, MempoolEntry]] = {}
        self._by_hash: dict[Hash32, MempoolEntry] = {}
        self._next_seq = 0
        self._totals: dict[Address20, tuple[int, int, int]] = {}
        """Per sender: (sum of fees, sum of sizes, sum of costs) of its pending chain."""
        self._version: dict[Address20, int] = {}
        """Per sender: the number of its chain's last change (from one counter, so never reused)."""
        self._changes = 0
        self._tails: list[tuple[Fraction, int, int, Address20]] = []
        """Heap of (score, -seq, version, sender) of evictable tails; stale when the version moved on."""

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
        self,
        signed: SignedTx,
        tx_hash: Hash32,
        sender: Address20,
        account: Account,
        incremental: int = 0,
    ) -> list[MempoolEntry]:
        """Admit a transaction whose signature is already checked; `account` is the sender's sealed account,
        `incremental` the least fee increase a replacement must pay.

        Returns the entries it pushed out (the one it replaced, or the tail it evicted). Raises BadNonce,
        InsufficientBalance, ReplacementFeeTooLow or MempoolFull, changing nothing. Adding a transaction that
        is already pending does nothing.
        """
        if tx_hash in self._by_hash:
            return []
        tx = signed.tx
        pending = self._by_sender.get(sender, {})
        if tx.nonce < account.nonce:
            raise BadNonce(f"nonce {tx.nonce} too low: account 0x{sender.hex()} expects {account.nonce}")
        entry = MempoolEntry(signed, tx_hash, sender, self._next_seq)
        old = pending.get(tx.nonce)
        victim = None
        if old is None:
            expected = account.nonce + len(pending)
            if tx.nonce != expected:
                raise BadNonce(
                    f"nonce {tx.nonce} leaves a gap: the next nonce of 0x{sender.hex()} is {expected}"
                )
            if len(self._by_hash) >= self.max_size:
                victim = self._victim_for(entry)
        else:
            _check_replacement(old, entry, incremental)
        others = self._totals.get(sender, (0, 0, 0))[2] - (0 if old is None else old.cost)
        spent = others + tx.amount + tx.fee
        if spent > account.balance:
            raise InsufficientBalance(
                f"balance {account.balance} < {spent} spent by this and the pending transactions of 0x{sender.hex()}"
            )
        out = [] if victim is None else [victim]
        if victim is not None:
            self._drop(victim)
        if old is None:
            self._next_seq += 1
        else:
            entry = MempoolEntry(signed, tx_hash, sender, old.seq, entry.size)
            self._drop(old)
            out.append(old)
        self._put(entry)
        return out

    def _victim_for(self, entry: MempoolEntry) -> MempoolEntry:
        """The tail a newcomer to a full mempool evicts; MempoolFull if it evicts none."""
        fees, size, _ = self._totals.get(entry.sender, (0, 0, 0))
        score = min(entry.fee_rate, Fraction(fees + entry.fee, size + entry.size))
        low = self._lowest_tail(entry.sender)
        if low is not None and score > low[0]:
            return low[1]
        if low is None:
            raise MempoolFull(f"mempool full ({self.max_size} transactions), none of them evictable")
        need = max(low[0] * entry.size, low[0] * (size + entry.size) - fees)
        min_fee = int(need) + 1
        raise MempoolFull(
            f"mempool full ({self.max_size} transactions): a fee of at least {min_fee} sat evicts the cheapest",
            min_fee,
        )

    def _lowest_tail(self, exclude: Address20) -> tuple[Fraction, MempoolEntry] | None:
        """The lowest-scored evictable tail of a sender other than `exclude`, with its score."""
        skipped = []
        found = None
        while self._tails:
            top = self._tails[0]
            score, _, version, sender = top
            if self._version.get(sender) != version:
                heapq.heappop(self._tails)  # stale
                continue
            if sender == exclude:
                skipped.append(heapq.heappop(self._tails))
                continue
            found = (score, self._tail(sender))
            break
        for item in skipped:
            heapq.heappush(self._tails, item)
        return found

    def _tail(self, sender: Address20) -> MempoolEntry:
        pending = self._by_sender[sender]
        return pending[next(reversed(pending))]

    def _put(self, entry: MempoolEntry) -> None:
        """Add one entry, keeping each sender's dict in nonce order (so its tail is its last key)."""
        pending = self._by_sender.setdefault(entry.sender, {})
        if pending and entry.nonce < next(reversed(pending)):  # a replacement or a restored nonce
            pending[entry.nonce] = entry
            self._by_sender[entry.sender] = dict(sorted(pending.items()))
        else:
            pending[entry.nonce] = entry
        self._by_hash[entry.tx_hash] = entry
        fees, size, cost = self._totals.get(entry.sender, (0, 0, 0))
        self._totals[entry.sender] = (fees + entry.fee, size + entry.size, cost + entry.cost)
        self._touch(entry.sender)

    def _drop(self, entry: MempoolEntry) -> None:
        """Forget one entry (the caller keeps the chain without a gap)."""
        del self._by_hash[entry.tx_hash]
        pending = self._by_sender[entry.sender]
        if pending.get(entry.nonce) is entry:
            del pending[entry.nonce]
        fees, size, cost = self._totals[entry.sender]
        self._totals[entry.sender] = (fees - entry.fee, size - entry.size, cost - entry.cost)
        if not pending:
            del self._by_sender[entry.sender]
            del self._totals[entry.sender]
        self._touch(entry.sender)

    def _touch(self, sender: Address20) -> None:
        """Re-score the sender's tail after its chain changed."""
        self._changes += 1
        version = self._changes
        if sender not in self._by_sender:
            self._version.pop(sender, None)
            return
        self._version[sender] = version
        tail = self._tail(sender)
        if tail.evictable:
            fees, size, _ = self._totals[sender]
            score = min(tail.fee_rate, Fraction(fees, size))
            heapq.heappush(self._tails, (score, -tail.seq, version, sender))
        if len(self._tails) > 4 * len(self._by_sender) + 64:
            live = [t for t in self._tails if self._version.get(t[3]) == t[2]]
            heapq.heapify(live)
            self._tails = live

    def restore(self, entries: Sequence[tuple[SignedTx, Hash32, Address20]]) -> None:
        """Put transactions of batches that were rolled back in front of every pending one, in order.

        They were valid in that order on the state they are rolled back to, except where they spent a deposit
        credit that the next batch gives again, so no balance is checked here: sealing executes them (and
        rejects what fails) and `prune` then restores the invariant. The size limit does not apply, and they
        are never evicted, and no fee replacement may take their place (`ResealedNotReplaceable`)."""
        if not entries:
            return
        first = min((e.seq for e in self._by_hash.values()), default=0) - len(entries)
        for offset, (signed, tx_hash, sender) in enumerate(entries):
            old = self._by_sender.get(sender, {}).get(signed.tx.nonce)
            if old is not None:  # a later replacement of the same nonce cannot exist; keep the sealed one
                self._drop(old)
            self._put(MempoolEntry(signed, tx_hash, sender, first + offset, restored=True))

    def candidates(self, limit: int) -> list[MempoolEntry]:
        """Up to `limit` entries in sealing order: restored ones in their order, then each sender's nonces in
        order, across senders the highest fee rate of a chain's next transaction first (ties: arrival)."""
        out = sorted((e for e in self._by_hash.values() if e.restored), key=lambda e: e.seq)[:limit]
        chains: dict[Address20, list[MempoolEntry]] = {}
        for sender, pending in self._by_sender.items():
            rest = [pending[n] for n in sorted(pending) if not pending[n].restored]
            if rest:
                chains[sender] = rest
        heap = [(-c[0].fee_rate, c[0].seq, sender, 0) for sender, c in chains.items()]
        heapq.heapify(heap)
        while heap and len(out) < limit:
            _, _, sender, i = heapq.heappop(heap)
            chain = chains[sender]
            out.append(chain[i])
            if i + 1 < len(chain):
                nxt = chain[i + 1]
                heapq.heappush(heap, (-nxt.fee_rate, nxt.seq, sender, i + 1))
        return out

    def remove(self, tx_hashes: Iterable[bytes]) -> None:
        """Forget these transactions (sealed or rejected); unknown hashes are ignored."""
        for tx_hash in tx_hashes:
            entry = self._by_hash.get(Hash32(tx_hash))
            if entry is not None:
                self._drop(entry)

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
            keep: set[int] = set()
            nonce = acct.nonce
            while nonce in pending and pending[nonce].cost <= budget:
                budget -= pending[nonce].cost
                keep.add(nonce)
                nonce += 1
            gone = [e for n, e in sorted(pending.items(), reverse=True) if n not in keep]
            for entry in gone:
                self._drop(entry)
            dropped += gone
        return dropped


def _check_replacement(old: MempoolEntry, new: MempoolEntry, incremental: int) -> None:
    """Core's rules 3 and 4 for one replaced transaction: a strictly higher fee rate and at least the old
    fee plus the incremental fee. A transaction restored from a rolled-back batch is never replaced."""
    if old.restored:
        raise ResealedNotReplaceable(
            f"nonce {new.nonce} of 0x{new.sender.hex()} belongs to a transaction sealed before a Bitcoin reorg "
            "rolled its batch back; it is sealed again unchanged"
        )
    need = max(old.fee + incremental, int(old.fee_rate * new.size) + 1)
    if new.fee < need or new.fee_rate <= old.fee_rate:
        raise ReplacementFeeTooLow(
            f"replacing nonce {new.nonce} needs a fee of at least {need} (the old fee {old.fee} plus "
            f"{incremental}, at a higher fee rate), got {new.fee}",
            need,
        )
