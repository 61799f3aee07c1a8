"""The audit names every batch the Bridge holds in another version than replay derived."""

from btcl2.audit.attestations import attestation_conflicts

A = (b"\x01" * 32, b"\x02" * 32, b"\x03" * 32)
B = (b"\x01" * 32, b"\x02" * 32, b"\x04" * 32)


def test_same_versions_hold() -> None:
    assert attestation_conflicts({0: A, 1: B}, {0: A, 1: B, 2: A}) == []


def test_another_version_is_a_discrepancy() -> None:
    (found,) = attestation_conflicts({0: A, 1: A}, {0: A, 1: B})
    assert found.kind == "attestation-conflict" and found.subject == "batch 1"
    assert found.detail == "exits root " + "03" * 32 + " on the Bridge, " + "04" * 32 + " in replay"


def test_batches_replay_has_not_applied_are_not_judged() -> None:
    assert attestation_conflicts({5: A}, {0: A}) == []
