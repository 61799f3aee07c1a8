"""The EVM side of attestations and exits against a real anvil (--hardfork prague, EIP-2537 precompiles):
Solidity hash-to-curve equals py-ecc's, the Bridge accepts a valid aggregate and refuses a bad one, one with
too few signers, a non-member's and a tampered message; an exit is minted once from its proof."""

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from py_ecc.bls.hash_to_curve import hash_to_G2
from py_ecc.optimized_bls12_381.optimized_curve import normalize

from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.attest import (
    attestation_args,
    g2_from_eip2537,
    is_attested,
    mint_exit,
    submit_attestation,
)
from btcl2.bridge.deploy import REGTEST_GENESIS, BridgeConfig, Deployment, deploy_bridge_stack
from btcl2.bridge.evm import Contract, ContractRevert, EvmClient, account
from btcl2.core.attestation import (
    DST,
    Attestation,
    aggregate,
    bitmap_of,
    secret_from_seed,
    sign_message,
)
from btcl2.core.exits import exits_root, prove_exit
from btcl2.core.params import Params
from btcl2.core.types import Address20, ExitRecord, Hash32, Sats

pytestmark = pytest.mark.functional

PARAMS = Params()
SECRETS = [secret_from_seed(hashlib.sha256(b"btcl2 devnet attestation %d" % i).digest()) for i in (1, 2, 3)]
OWNER, USER, OTHER = (account(k) for k in ANVIL_DEV_KEYS[:3])


@dataclass
class Chain:
    evm: EvmClient
    dep: Deployment
    verifier: Contract


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        evm = EvmClient(anvil.url)
        config = BridgeConfig.for_params(PARAMS, REGTEST_GENESIS, OWNER.address, OWNER.address)
        dep = deploy_bridge_stack(evm, OWNER, config)
        assert dep.attestation_verifier is not None
        yield Chain(evm, dep, dep.attestation_verifier)


def _attest(number: int, exits: bytes, signers: list[int], secrets: list[int] | None = None) -> Attestation:
    unsigned = Attestation(
        number,
        Hash32(hashlib.sha256(b"batch %d" % number).digest()),
        Hash32(hashlib.sha256(b"root %d" % number).digest()),
        Hash32(exits),
        0,
        b"",
    )
    message = unsigned.message(PARAMS.l2_chain_id)
    keys = secrets if secrets is not None else [SECRETS[i] for i in signers]
    sig = aggregate([sign_message(s, message) for s in keys])
    return replace(unsigned, signers=bitmap_of(signers), signature=sig)


def test_hash_to_curve_matches_py_ecc(chain: Chain) -> None:
    rng = random.Random(7)
    messages = [b"", b"abc", b"BL2M" + bytes(113)] + [rng.randbytes(rng.randrange(0, 300)) for _ in range(57)]
    for message in messages:
        got = bytes(chain.evm.call(chain.verifier, "hashToG2", message))
        x, y = normalize(hash_to_G2(message, DST, hashlib.sha256))
        want = ((int(x.coeffs[0]), int(x.coeffs[1])), (int(y.coeffs[0]), int(y.coeffs[1])))
        assert g2_from_eip2537(got) == want, message.hex()


def test_verifier_message_equals_python(chain: Chain) -> None:
    att = _attest(5, b"\x07" * 32, [0, 1])
    got = bytes(
        chain.evm.call(chain.verifier, "message", 5, att.batch_hash, att.post_state_root, att.exits_root)
    )
    assert got == att.message(PARAMS.l2_chain_id)


def test_bad_attestations_are_refused(chain: Chain) -> None:
    bridge = chain.dep.bridge
    good = _attest(1, b"\x00" * 32, [0, 2])
    cases = {
        "TooFewSigners": _attest(1, b"\x00" * 32, [1]),
        "UnknownSigner": replace(good, signers=good.signers | 1 << 5),
        "BadAggregate": replace(good, post_state_root=Hash32(b"\x01" * 32)),
        "BadAggregate ": replace(good, signers=bitmap_of([0, 1])),
    }
    outsider = secret_from_seed(hashlib.sha256(b"not a member").digest())
    cases["BadAggregate  "] = _attest(1, b"\x00" * 32, [0, 2], [SECRETS[0], outsider])
    for name, att in cases.items():
        with pytest.raises(ContractRevert) as info:
            submit_attestation(chain.evm, bridge, att, USER)
        assert info.value.name == name.strip(), (name, str(info.value))
    assert not is_attested(chain.evm, bridge, 1)


def test_exit_minted_once_against_attested_root(chain: Chain) -> None:
    bridge, wbtc = chain.dep.bridge, chain.dep.wbtc
    recipient = Address20(bytes.fromhex(OTHER.address[2:]))
    records = [
        ExitRecord(
            Hash32(hashlib.sha256(b"exit %d" % i).digest()),
            Address20(b"\x11" * 20),
            Sats(20_000 + i),
            recipient,
        )
        for i in range(5)
    ]
    root = exits_root(records)
    proof = prove_exit(records, records[3].exit_id)
    assert proof.verify(root)
    with pytest.raises(ContractRevert) as info:
        mint_exit(chain.evm, bridge, 2, proof, USER)
    assert info.value.name == "BatchNotAttested"
    att = _attest(2, root, [0, 1, 2])
    receipt = submit_attestation(chain.evm, bridge, att, USER)
    assert receipt.status == 1 and is_attested(chain.evm, bridge, 2)
    with pytest.raises(ContractRevert) as info:
        submit_attestation(chain.evm, bridge, att, USER)
    assert info.value.name == "BatchAlreadyAttested"
    before = chain.evm.call(wbtc, "balanceOf", OTHER.address)
    forged = replace(proof, record=replace(proof.record, amount=Sats(10**8)))
    with pytest.raises(ContractRevert) as info:
        mint_exit(chain.evm, bridge, 2, forged, USER)
    assert info.value.name == "BadExitProof"
    assert mint_exit(chain.evm, bridge, 2, proof, USER).status == 1
    assert chain.evm.call(wbtc, "balanceOf", OTHER.address) == before + records[3].amount
    with pytest.raises(ContractRevert) as info:
        mint_exit(chain.evm, bridge, 2, proof, USER)
    assert info.value.name == "ExitAlreadyMinted"
    args = attestation_args(att)
    assert len(args[-1]) == 256
