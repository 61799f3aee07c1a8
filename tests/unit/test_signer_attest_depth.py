"""A signer attests a batch only once its anchor has K confirmations (docs/PROTOCOL.md "Attestations"): an
aggregate of a shallower anchor could be put on the Bridge before a reorg replaces that batch version."""

import hashlib

import pytest

from btcl2.core.attestation import attestation_message, secret_from_seed, sign_message
from btcl2.core.params import Params
from btcl2.federation.attest import BatchAttester, NotDeepEnough, NotReplayed
from btcl2.federation.views import L2Snapshot

PARAMS = Params()
K = PARAMS.k_deposit_confs
SECRET = secret_from_seed(hashlib.sha256(b"btcl2 devnet attestation 1").digest())
ROOTS = (b"\x01" * 32, b"\x02" * 32, b"\x03" * 32)


class _Snapshots:
    def __init__(self, snap: L2Snapshot) -> None:
        self.snap = snap

    def snapshot(self) -> L2Snapshot:
        return self.snap


def _attester(tip: int, anchor_height: int | None) -> BatchAttester:
    heights = {} if anchor_height is None else {3: anchor_height}
    return BatchAttester(
        SECRET, PARAMS, _Snapshots(L2Snapshot("00", tip, roots={3: ROOTS}, anchor_heights=heights))
    )


def test_anchor_shallower_than_k_is_not_attested() -> None:
    assert K >= 2
    for confirmations in range(1, K):
        with pytest.raises(NotDeepEnough, match=f"{confirmations} confirmations"):
            _attester(100 + confirmations - 1, 100).attest(3, *ROOTS)
    with pytest.raises(NotDeepEnough):
        _attester(100, None).attest(3, *ROOTS)  # applied but no anchor height known: never signed


def test_anchor_k_deep_is_attested() -> None:
    signature = _attester(100 + K - 1, 100).attest(3, *ROOTS)
    assert signature == sign_message(SECRET, attestation_message(PARAMS.l2_chain_id, 3, *ROOTS))


def test_unreplayed_batch_is_still_not_replayed() -> None:
    with pytest.raises(NotReplayed):
        _attester(200, 100).attest(4, *ROOTS)
