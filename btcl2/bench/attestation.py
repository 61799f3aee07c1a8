"""Figures of batch attestations and exits, each against a bound measured in the same run.

- EVM gas of one on-chain aggregate verification (Bridge.submitAttestation: SPV proofs of its anchor and its
  record, message, G1 additions, hash-to-curve on the EIP-2537 precompiles, pairing check, storage) and of one exit mint (Bridge.mintExit),
  each against the gas of one mintWithProof (an SPV deposit mint) in the same anvil;
- seconds py-ecc takes for one FastAggregateVerify of a 2-of-3 attestation (what replay pays per batch),
  against one plain signature verification;
- bytes one attestation adds on Bitcoin (its OP_RETURN output), against a 1-in 1-out P2WPKH payment's vsize.
"""

import hashlib
import statistics
import time

from btcl2.bench.anchor import p2wpkh_payment_vsize
from btcl2.bench.evm import _block, _chain
from btcl2.bench.regtest import Figure
from btcl2.bitcoin.block import Block, BlockHeader
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn
from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.attest import (
    COMMITMENT_PREFIX,
    RECORD_PREFIX,
    AttestationProofs,
    batch_output_proof,
    mint_exit,
    submit_attestation,
)
from btcl2.bridge.deploy import REGTEST_GENESIS, BridgeConfig, deploy_bridge_stack
from btcl2.bridge.evm import EvmClient, account
from btcl2.bridge.spv import headers_bytes, mint_proof
from btcl2.core.anchor import AnchorChunk, Codec, Commitment
from btcl2.core.attestation import (
    Attestation,
    aggregate,
    bitmap_of,
    secret_from_seed,
    sign_message,
    verify_attestation,
    verify_one,
)
from btcl2.core.exits import exits_root, prove_exit
from btcl2.core.params import Params
from btcl2.core.types import Address20, ExitRecord, Hash32, Sats

RUNS = 5


def _attestation(params: Params, exits: bytes, signers: list[int]) -> Attestation:
    secrets = [
        secret_from_seed(hashlib.sha256(b"btcl2 devnet attestation %d" % i).digest()) for i in (1, 2, 3)
    ]
    unsigned = Attestation(
        0, Hash32(b"\x01" * 32), Hash32(b"\x02" * 32), Hash32(exits), bitmap_of(signers), b""
    )
    message = unsigned.message(params.l2_chain_id)
    return Attestation(
        0,
        unsigned.batch_hash,
        unsigned.post_state_root,
        unsigned.exits_root,
        unsigned.signers,
        aggregate([sign_message(secrets[i], message) for i in signers]),
    )


def _attested_chain(att: Attestation, deposit: Tx, length: int) -> tuple[list[Block], AttestationProofs]:
    """Blocks on the regtest genesis, the first holding `deposit`, an anchor of the attested batch and the
    attestation transaction (inputs are not checked); the proofs of the last two."""
    commitment = Commitment(Codec.NONE, 0, att.batch_hash, att.post_state_root, Hash32(bytes(32)), 1)
    txs = [
        Tx(2, (TxIn(OutPoint(bytes([i]) * 32, 0), script_sig=b"\x00"),), tuple(outs), 0)
        for i, outs in ((3, AnchorChunk(commitment, 0, b"batch").outputs()), (4, [att.output()]))
    ]
    prev = BlockHeader.decode(REGTEST_GENESIS.header)
    blocks: list[Block] = []
    for height in range(1, length + 1):
        blocks.append(_block(prev, height, (deposit, *txs) if height == 1 else ()))
        prev = blocks[-1].header
    return blocks, AttestationProofs(
        batch_output_proof(blocks[0], txs[0].txid, COMMITMENT_PREFIX, 9, 0),
        batch_output_proof(blocks[0], txs[1].txid, RECORD_PREFIX, 8, 0),
    )


def _median_seconds(fn: object, runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure() -> list[Figure]:
    """Deploy on a fresh anvil, attest one batch, mint one exit and one SPV deposit; time py-ecc."""
    params = Params()
    owner, user = account(ANVIL_DEV_KEYS[0]), account(ANVIL_DEV_KEYS[1])
    recipient = Address20(bytes.fromhex(user.address[2:]))
    records = [
        ExitRecord(Hash32(hashlib.sha256(b"exit %d" % i).digest()), recipient, Sats(50_000), recipient)
        for i in range(8)
    ]
    att = _attestation(params, exits_root(records), [0, 1])
    _, deposit = _chain(recipient, params, 1)
    blocks, proofs = _attested_chain(att, deposit, 1 + params.k_deposit_confs)
    with Anvil() as anvil:
        evm = EvmClient(anvil.url)
        config = BridgeConfig.for_params(params, REGTEST_GENESIS, owner.address, owner.address)
        dep = deploy_bridge_stack(evm, owner, config)
        evm.transact(dep.light_client, "submitHeaders", headers_bytes(blocks), sender=user)
        spv = evm.transact(
            dep.bridge, "mintWithProof", *mint_proof(blocks[0], deposit.txid, 0).args(), sender=user
        )
        verify_gas = submit_attestation(evm, dep.bridge, att, proofs, user).gas_used
        exit_gas = mint_exit(evm, dep.bridge, 0, prove_exit(records, records[5].exit_id), user).gas_used
    message = att.message(params.l2_chain_id)
    one = _attestation(params, att.exits_root, [0])
    agg_s = _median_seconds(
        lambda: verify_attestation(att, params.attestation_pubkeys, 2, params.l2_chain_id)
    )
    one_s = _median_seconds(lambda: verify_one(params.attestation_pubkeys[0], message, one.signature))
    bound = "mintWithProof gas"
    return [
        Figure("EVM gas per attestation verification", float(verify_gas), "gas", bound, float(spv.gas_used)),
        Figure("EVM gas per exit mint (mintExit)", float(exit_gas), "gas", bound, float(spv.gas_used)),
        Figure("replay s per attestation (2-of-3)", agg_s, "s", "one BLS Verify", one_s),
        Figure(
            "Bitcoin bytes per attestation",
            float(len(att.output().encode())),
            "bytes",
            "P2WPKH payment vsize",
            float(p2wpkh_payment_vsize()),
        ),
    ]


if __name__ == "__main__":
    for f in measure():
        print(f"{f.name:<42} {f.value:>12.4f} {f.bound:>12.4f} {f.ratio:6.2f}  {f.bound_name} ({f.unit})")
