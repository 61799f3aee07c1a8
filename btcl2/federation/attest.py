"""A signer's batch attestations: sign a batch's attestation message only when this member's OWN replay of
Bitcoin applied that batch with the same batch hash, post-state root and exits root.

`POST /attest {"batch", "batchHash", "postStateRoot", "exitsRoot"}` (hashes 0x-hex) answers
`{"index", "pubkey", "signature"}`, or 409 `{"error", "message"}` with NotReplayed (its replay has not applied
the batch, or stopped before it), NotDeepEnough (its anchor has fewer than K confirmations) or ReplayMismatch
(its replay derived other roots: it never signs those);
each refusal is logged with the reason. The signature is deterministic, so answering twice is harmless and
nothing is recorded.
"""

import logging
from pathlib import Path
from typing import Protocol

from btcl2.core.attestation import attestation_message, public_key, sign_message
from btcl2.core.params import Params
from btcl2.errors import InvalidInput
from btcl2.federation.views import L2Snapshot
from btcl2.secretfile import read_secret_file

log = logging.getLogger("btcl2.signer")


class AttestationRefused(InvalidInput):
    """Raised when a signer will not attest a batch; the class says why."""


class NotReplayed(AttestationRefused):
    """Raised when the signer's own replay has not applied the batch (not anchored yet, or replay diverged)."""


class NotDeepEnough(AttestationRefused):
    """Raised when the batch's anchor has fewer than K confirmations: a reorg could still replace that version,
    and an attestation of it could be put on the Bridge for good."""


class ReplayMismatch(AttestationRefused):
    """Raised when the signer's own replay derived another batch hash, post-state root or exits root."""


class NotAnAttestationKey(InvalidInput):
    """Raised when the signer's BLS key is not one of the parameters' attestation keys."""


class SnapshotSource(Protocol):
    """Where the signer's replay comes from (btcl2.federation.views.L2View)."""

    def snapshot(self) -> L2Snapshot:
        """The replay of the current best chain."""
        ...


def load_attestation_secret(path: Path) -> int:
    """A BLS secret key file: the secret as 64 hex digits (big-endian), optionally 0x-prefixed."""
    text = read_secret_file(Path(path), "attestation key").strip().removeprefix("0x")
    try:
        secret = int(text, 16)
    except ValueError as exc:
        raise InvalidInput(f"cannot read attestation key {path}: {exc}") from exc
    if not 0 < secret < 2**255 or len(text) != 64:
        raise InvalidInput(f"attestation key {path} must hold a 32-byte secret as 64 hex digits")
    return secret


class BatchAttester:
    """Signs attestation messages of batches this member's replay applied identically."""

    def __init__(self, secret: int, params: Params, l2: SnapshotSource) -> None:
        self._secret = secret
        self._params = params
        self._l2 = l2
        self.pubkey = public_key(secret)
        if self.pubkey not in params.attestation_pubkeys:
            raise NotAnAttestationKey(f"BLS key {self.pubkey.hex()} is not a registered attestation key")
        self.index = params.attestation_pubkeys.index(self.pubkey)

    def attest(self, number: int, batch_hash: bytes, post_state_root: bytes, exits_root: bytes) -> bytes:
        """The signature of the batch's message; NotReplayed or ReplayMismatch (logged) otherwise."""
        snap = self._l2.snapshot()
        mine = snap.roots.get(number)
        if mine is None:
            why = f"; replay diverged at {snap.divergence}" if snap.divergence else ""
            raise NotReplayed(
                f"batch {number} is not applied by this signer's replay (tip {snap.tip_height}){why}"
            )
        anchored = snap.anchor_heights.get(number)
        confirmations = 0 if anchored is None else snap.tip_height - anchored + 1
        if confirmations < self._params.k_deposit_confs:
            raise NotDeepEnough(
                f"batch {number}: its anchor has {confirmations} confirmations, "
                f"fewer than K = {self._params.k_deposit_confs}"
            )
        asked = (batch_hash, post_state_root, exits_root)
        for name, got, want in zip(("batch hash", "post-state root", "exits root"), asked, mine, strict=True):
            if got != want:
                raise ReplayMismatch(
                    f"batch {number}: asked to attest {name} {got.hex()}, own replay has {want.hex()}"
                )
        message = attestation_message(self._params.l2_chain_id, number, *mine)
        return sign_message(self._secret, message)
