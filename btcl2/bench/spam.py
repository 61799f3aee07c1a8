"""What spam pays against what it costs the poster: minimum-fee 1-sat self-transfers (the finding), admitted
by a sequencer at the fee-rate floor and sealed, then anchored as the poster does.

The figure is the L2 fees the sealed spam paid, against the bound the poster's Bitcoin fee for the anchor
transactions carrying that batch at the same fee rate (their vsize times the rate), both from the same run;
a ratio of at least 1.0 means the spammer pays for what it costs. Batches of 1 and 10 show the part of an
anchor a lone transaction does not pay for: the batch header, the commitment, the input and the change
(about 440 vB).
"""

import hashlib
import tempfile
from pathlib import Path

from btcl2.bench.anchor import anchor_vbytes
from btcl2.bench.regtest import Figure
from btcl2.bitcoin.tx import OutPoint
from btcl2.core import eip712
from btcl2.core.params import Params
from btcl2.core.types import Address20, Hash32, Sats, Transfer
from btcl2.sequencer.service import Sequencer
from btcl2.sequencer.store import DepositRecord, DepositStatus, SequencerStore
from btcl2.storage.db import Database

SIZES = (1, 10, 500, 1000)
"""Spam transactions per batch; 500 is the finding's count."""
_ORIGIN = (1, Hash32(bytes(32)))


def _spam_batch(workdir: Path, n: int) -> tuple[int, int, int]:
    """(L2 fees paid, anchor vbytes, fee rate sat/vB) of one batch of n minimum-fee self-transfers."""
    key = hashlib.sha256(b"bench spammer").digest()
    me = eip712.address_from_private_key(key)
    db = Database(workdir / f"spam-{n}")
    try:
        seq = Sequencer(SequencerStore(db), Params(), None, batch_max_txs=n, mempool_max=n)
        deposit = DepositRecord(
            OutPoint(bytes(32), 0),
            DepositStatus.CONFIRMED,
            1,
            me,
            Sats(10**8),
            1,
            Hash32(bytes(32)),
            0,
            None,
            None,
        )
        seq.store.apply_deposit_changes(1, [deposit], [], [])
        seq.seal_once(0, _ORIGIN)
        chain_id = seq.params.l2_chain_id
        probe = eip712.sign(_self_transfer(me, 0, 0), key, chain_id)
        fee = seq.min_fee(len(probe.encode()))
        for nonce in range(n):
            seq.submit(eip712.sign(_self_transfer(me, fee, nonce), key, chain_id).encode())
        batch = seq.seal_once(1, _ORIGIN)
        assert batch is not None and len(batch.transactions) == n
        paid = sum(t.tx.fee for t in batch.transactions)
        return paid, anchor_vbytes(batch), seq.fee_rate
    finally:
        db.close()


def _self_transfer(me: Address20, fee: int, nonce: int) -> Transfer:
    """A 1-sat transfer to oneself."""
    return Transfer(me, Sats(1), Sats(fee), nonce)


def measure(workdir: Path) -> list[Figure]:
    """One figure per batch size: the spam's L2 fees against the poster's Bitcoin fee for its anchor."""
    figures = []
    for n in SIZES:
        paid, vbytes, rate = _spam_batch(workdir, n)
        figures.append(
            Figure(
                f"min-fee spam L2 fees / anchor fee (batch {n})",
                float(paid),
                "sat",
                "poster's BTC fee for the anchor",
                float(vbytes * rate),
            )
        )
    return figures


def run() -> list[Figure]:
    """measure() in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="btcl2-bench-spam-") as d:
        return measure(Path(d))
