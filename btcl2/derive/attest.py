"""Replay's attestation stage: collect the attestation records of authenticated transactions and judge each
against the batch replay applied (docs/PROTOCOL.md, "Attestations").

A record counts only in a transaction whose first input is the poster's signed spend of its P2WPKH output
(the anchors' rule, checked against the output it spends: `L1Block.poster_signed`), so nobody else can make replay fail by writing garbage. Every counted record must name an applied
batch with exactly replay's batch hash, post-state root and exits root, name at least M registered signers,
and carry an aggregate signature that verifies (FastAggregateVerify); the first that does not is the run's
divergence. Verification results are cached per record, so a signer replaying at every new tip pays the
pairings of each attestation once.
"""

import time
from dataclasses import dataclass, field

from btcl2.bitcoin.tx import Tx
from btcl2.core.attestation import (
    Attestation,
    AttestationError,
    check_matches,
    check_registration,
    decode_attestation_tx,
    verify_attestation,
)
from btcl2.core.params import Params
from btcl2.derive.l1 import L1Block

_VERIFIED: dict[tuple[bytes, int, tuple[bytes, ...], int], bool] = {}
"""(record, chain id, keys, M) -> verified; one process verifies each record once."""


@dataclass(frozen=True, slots=True)
class SeenAttestation:
    """An attestation record found on Bitcoin."""

    attestation: Attestation
    """The record."""
    txid: str
    """Its transaction, display order."""
    height: int
    """Its block height."""


@dataclass(frozen=True, slots=True)
class AttestationFailure:
    """A record (or a transaction's records) replay refuses."""

    batch_number: int | None
    """The batch it names (None when unreadable)."""
    txid: str
    """The attestation transaction."""
    height: int
    """Its block height."""
    error: str
    """The error class (btcl2.core.attestation)."""
    message: str
    """What is wrong."""


@dataclass
class AttestationReport:
    """What the attestation stage found."""

    attested: dict[int, SeenAttestation] = field(default_factory=dict)
    """Applied batch -> its first valid attestation."""
    unattested: list[int] = field(default_factory=list)
    """Applied batches without a valid attestation."""
    failures: list[AttestationFailure] = field(default_factory=list)
    """Invalid records, in chain order."""
    repeats: int = 0
    """Further valid attestations of an already attested batch."""
    stale: int = 0
    """Attestations of a batch version whose anchors replay found stale (sealed again after a reorg)."""
    verify_seconds: float = 0.0
    """Time spent in signature verification."""


class AttestationStage:
    """Collects records while the traversal runs; `judge` checks them against the applied batches."""

    def __init__(self, params: Params) -> None:
        self._params = params
        self.seen: list[SeenAttestation] = []
        self.unreadable: list[AttestationFailure] = []

    def reset(self) -> None:
        """Forget everything (after a reorg)."""
        self.seen = []
        self.unreadable = []

    def add(self, tx: Tx, l1: L1Block) -> None:
        """Take the records of one transaction of block `l1` (ignored unless the poster wrote it)."""
        poster = self._params.poster_pubkey
        try:
            records = decode_attestation_tx(tx)
        except AttestationError as exc:
            if l1.poster_signed(tx, poster):
                failure = AttestationFailure(None, tx.txid_hex, l1.height, type(exc).__name__, str(exc))
                self.unreadable.append(failure)
            return
        if records and l1.poster_signed(tx, poster):
            self.seen.extend(SeenAttestation(a, tx.txid_hex, l1.height) for a in records)

    def judge(
        self, applied: dict[int, tuple[bytes, bytes, bytes]], stale: frozenset[bytes] = frozenset()
    ) -> AttestationReport:
        """Check every record against `applied` (batch number -> batch hash, post-state root, exits root).

        A record naming a batch hash in `stale` (versions whose L1 origin a reorg took; the members attested
        them while they were valid) is counted apart, not judged: the number is sealed again."""
        p = self._params
        report = AttestationReport(failures=list(self.unreadable))
        if self.seen:
            check_registration(p.attestation_pubkeys, p.attestation_pops, p.attestation_m)
        for seen in self.seen:
            att = seen.attestation
            if att.batch_hash in stale:
                report.stale += 1
                continue
            try:
                found = applied.get(att.batch_number)
                if found is None:
                    raise _unknown(att)
                check_matches(att, *found)
                started = time.perf_counter()
                _verify_cached(att, p)
                report.verify_seconds += time.perf_counter() - started
            except AttestationError as exc:
                report.failures.append(
                    AttestationFailure(att.batch_number, seen.txid, seen.height, type(exc).__name__, str(exc))
                )
                continue
            if att.batch_number in report.attested:
                report.repeats += 1
            else:
                report.attested[att.batch_number] = seen
        report.unattested = sorted(n for n in applied if n not in report.attested)
        return report


class UnknownBatch(AttestationError):
    """Raised when an attestation names a batch number replay did not apply."""


def _unknown(att: Attestation) -> UnknownBatch:
    return UnknownBatch(f"attestation names batch {att.batch_number}, which replay did not apply")


def _verify_cached(att: Attestation, params: Params) -> None:
    key = (att.encode(), params.l2_chain_id, params.attestation_pubkeys, params.attestation_m)
    if _VERIFIED.get(key):
        return
    verify_attestation(att, params.attestation_pubkeys, params.attestation_m, params.l2_chain_id)
    if len(_VERIFIED) > 10_000:
        _VERIFIED.clear()
    _VERIFIED[key] = True
