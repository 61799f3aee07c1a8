"""The devnet's attestation wiring: its signers' BLS secrets are the parameters' registered keys, and
devnet.toml keeps the AttestationVerifier's address (and still reads a devnet made before it)."""

import dataclasses
from pathlib import Path

import pytest

from btcl2.core.params import Params
from btcl2.devnet.config import Contracts, DevnetFile, Ports, parse, render
from btcl2.devnet.stack import attestation_secrets
from btcl2.errors import Critical


def test_attestation_secrets_match_the_registered_keys() -> None:
    params = Params()
    assert len(attestation_secrets(params)) == len(params.attestation_pubkeys) == 3
    other = dataclasses.replace(params, attestation_pubkeys=tuple(reversed(params.attestation_pubkeys)))
    with pytest.raises(Critical):
        attestation_secrets(other)  # bitmap order matters: signer i must hold key i


def test_devnet_file_keeps_the_verifier(tmp_path: Path) -> None:
    doc = DevnetFile(tmp_path, Ports(1, 2, 3, 4, (5, 6, 7)), contracts=Contracts("0xb", "0xw", "0xl", "0xv"))
    assert parse(render(doc)).contracts == doc.contracts
    old = DevnetFile(tmp_path, Ports(1, 2, 3, 4, (5, 6, 7)), contracts=Contracts("0xb", "0xw", "0xl"))
    assert parse(render(old)).contracts == old.contracts  # a devnet made before attestations
