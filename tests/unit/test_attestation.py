"""Batch attestations (btcl2/core/attestation.py) and exits (btcl2/core/exits.py): encodings, bitmap,
verification, domain separation, tampering; the exit transaction in the state transition."""

import hashlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.core.attestation import (
    RECORD_SIZE,
    Attestation,
    AttestationMismatch,
    BadAggregate,
    BadProofOfPossession,
    MalformedAttestation,
    TooFewSigners,
    UnknownSigner,
    aggregate,
    attestation_message,
    bitmap_of,
    check_matches,
    check_registration,
    decode_attestation_tx,
    proof_of_possession,
    public_key,
    secret_from_seed,
    sign_message,
    signers_of,
    verify_attestation,
)
from btcl2.core.eip712 import address_from_private_key, parse_typed_data, sign, typed_data
from btcl2.core.exits import exit_records, exits_root, prove_exit
from btcl2.core.params import Params
from btcl2.core.state import Account, State
from btcl2.core.transition import apply_transaction, build_batch
from btcl2.core.types import Address20, ExitRecord, ExitToEvm, Hash32, Sats, SignedTx
from btcl2.errors import InvalidInput

PARAMS = Params()
CHAIN = PARAMS.l2_chain_id
SECRETS = [secret_from_seed(hashlib.sha256(b"btcl2 devnet attestation %d" % i).digest()) for i in (1, 2, 3)]
KEYS = PARAMS.attestation_pubkeys
M = PARAMS.attestation_m


def _attest(signers: list[int], number: int = 4, chain_id: int = CHAIN) -> Attestation:
    unsigned = Attestation(number, Hash32(b"\x0a" * 32), Hash32(b"\x0b" * 32), Hash32(b"\x0c" * 32), 0, b"")
    message = unsigned.message(chain_id)
    sig = aggregate([sign_message(SECRETS[i], message) for i in signers])
    return replace(unsigned, signers=bitmap_of(signers), signature=sig)


GOOD = _attest([0, 2])


def test_devnet_keys_come_from_published_seeds() -> None:
    assert tuple(public_key(s) for s in SECRETS) == KEYS
    assert tuple(proof_of_possession(s) for s in SECRETS) == PARAMS.attestation_pops
    check_registration(KEYS, PARAMS.attestation_pops, M)


def test_registration_rejects_bad_pops_and_duplicates() -> None:
    pops = PARAMS.attestation_pops
    with pytest.raises(BadProofOfPossession):
        check_registration(KEYS, (pops[1], pops[0], pops[2]), M)
    with pytest.raises(BadProofOfPossession):
        check_registration((KEYS[0], KEYS[0], KEYS[2]), (pops[0], pops[0], pops[2]), M)
    with pytest.raises(BadProofOfPossession):
        check_registration(KEYS, pops, 4)


def test_record_round_trip_and_size() -> None:
    data = GOOD.encode()
    assert len(data) == RECORD_SIZE
    assert Attestation.decode(data) == GOOD
    assert data[:4] == b"BL2T" and data[4] == 1
    assert len(GOOD.output().script_pubkey) == 212


@pytest.mark.parametrize(
    "data",
    [
        b"",
        GOOD.encode()[:-1],
        GOOD.encode() + b"\x00",
        b"BL2X" + GOOD.encode()[4:],
        GOOD.encode()[:4] + b"\x02" + GOOD.encode()[5:],
    ],
)
def test_decode_rejects_malformed(data: bytes) -> None:
    with pytest.raises(MalformedAttestation):
        Attestation.decode(data)


def test_bitmap() -> None:
    assert bitmap_of([0, 2]) == 0b101
    assert signers_of(0b1011) == [0, 1, 3]
    assert signers_of(bitmap_of([31, 5])) == [5, 31]
    for bad in ([1, 1], [32], [-1]):
        with pytest.raises(InvalidInput):
            bitmap_of(bad)


def test_verify_good_and_all_signers() -> None:
    verify_attestation(GOOD, KEYS, M, CHAIN)
    verify_attestation(_attest([0, 1, 2]), KEYS, M, CHAIN)


def test_verify_rejects_too_few_unknown_and_wrong_bitmap() -> None:
    with pytest.raises(TooFewSigners):
        verify_attestation(_attest([1]), KEYS, M, CHAIN)
    with pytest.raises(UnknownSigner):
        verify_attestation(replace(GOOD, signers=GOOD.signers | 1 << 3), KEYS, M, CHAIN)
    with pytest.raises(BadAggregate):
        verify_attestation(replace(GOOD, signers=bitmap_of([0, 1])), KEYS, M, CHAIN)


def test_verify_rejects_a_non_member() -> None:
    outsider = secret_from_seed(hashlib.sha256(b"outsider").digest())
    message = GOOD.message(CHAIN)
    forged = replace(
        GOOD, signature=aggregate([sign_message(SECRETS[0], message), sign_message(outsider, message)])
    )
    with pytest.raises(BadAggregate):
        verify_attestation(forged, KEYS, M, CHAIN)


def test_message_domain_separation() -> None:
    base = (CHAIN, 4, b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32)
    message = attestation_message(*base)
    assert len(message) == 117 and message[:5] == b"BL2M\x01"
    variants = [
        (CHAIN + 1, *base[1:]),
        (CHAIN, 5, *base[2:]),
        (CHAIN, 4, b"\x0d" * 32, *base[3:]),
        (CHAIN, 4, b"\x0a" * 32, b"\x0d" * 32, b"\x0c" * 32),
        (CHAIN, 4, b"\x0a" * 32, b"\x0b" * 32, b"\x0d" * 32),
    ]
    assert len({attestation_message(*v) for v in variants} | {message}) == 6
    with pytest.raises(BadAggregate):
        verify_attestation(_attest([0, 1], chain_id=CHAIN + 1), KEYS, M, CHAIN)


def test_check_matches() -> None:
    check_matches(GOOD, GOOD.batch_hash, GOOD.post_state_root, GOOD.exits_root)
    with pytest.raises(AttestationMismatch):
        check_matches(GOOD, GOOD.batch_hash, b"\x00" * 32, GOOD.exits_root)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, RECORD_SIZE - 1), st.integers(1, 255))
def test_any_tampered_byte_fails(position: int, flip: int) -> None:
    data = bytearray(GOOD.encode())
    data[position] ^= flip
    with pytest.raises((MalformedAttestation, BadAggregate, TooFewSigners, UnknownSigner)):
        verify_attestation(Attestation.decode(bytes(data)), KEYS, M, CHAIN)


def test_decode_attestation_tx() -> None:
    other = _attest([0, 1], number=5)
    tx = Tx(2, (TxIn(OutPoint(b"\x01" * 32, 0)),), (GOOD.output(), TxOut(1000, b"\x51"), other.output()), 0)
    assert decode_attestation_tx(tx) == [GOOD, other]
    bad = TxOut(0, GOOD.output().script_pubkey + b"\x51")
    with pytest.raises(MalformedAttestation):
        decode_attestation_tx(replace(tx, vout=(bad,)))
    assert decode_attestation_tx(replace(tx, vout=(TxOut(0, b"\x6a\x04BL2A"),))) == []


ALICE_KEY = hashlib.sha256(b"exit alice").digest()
ALICE = address_from_private_key(ALICE_KEY)
EVM = Address20(b"\xee" * 20)


def test_exit_tx_encoding_and_typed_data() -> None:
    tx = ExitToEvm(Sats(50_000), Sats(100), 0, EVM)
    assert len(tx.encode()) == 45 and tx.encode()[0] == 3
    signed = sign(tx, ALICE_KEY, CHAIN)
    assert SignedTx.decode(signed.encode()) == signed
    assert parse_typed_data(typed_data(tx, CHAIN), CHAIN) == tx
    record = ExitRecord(signed.tx_hash, ALICE, tx.amount, EVM)
    assert len(record.encode()) == 80 and ExitRecord.decode(record.encode()) == record


def test_exit_burns_on_l2_and_is_in_the_exits_root() -> None:
    state = State()
    from btcl2.core.state import Journal

    journal = Journal(state)
    journal.set_accounts({ALICE: Account(Sats(1_000_000), 0)})
    state = journal.commit()
    exits = [sign(ExitToEvm(Sats(20_000 + i), Sats(10), i, EVM), ALICE_KEY, CHAIN) for i in range(3)]
    after, receipt = apply_transaction(state, exits[0], PARAMS)
    assert receipt.exit is not None and receipt.exit.amount == 20_000
    assert after.account(ALICE).balance == 1_000_000 - 20_010 and after.exited == 20_000
    built = build_batch(state, PARAMS, [], exits, (0, Hash32(b"\x00" * 32)), 1)
    records = exit_records(built.batch, CHAIN)
    assert [r.exit_id for r in records] == [t.tx_hash for t in exits]
    root = exits_root(records)
    for r in records:
        assert prove_exit(records, r.exit_id).verify(root)
    assert not prove_exit(records, records[0].exit_id).verify(exits_root(records[:2]))
    assert exits_root([]) == b"\x00" * 32
    small = sign(ExitToEvm(Sats(1), Sats(0), 0, EVM), ALICE_KEY, CHAIN)
    with pytest.raises(InvalidInput):
        apply_transaction(state, small, PARAMS)
