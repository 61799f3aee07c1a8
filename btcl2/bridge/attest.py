"""The EVM side of attestations and exits: deploy the AttestationVerifier and wire it to the Bridge, submit a
batch attestation, mint an exit from its proof.

Points go to the EVM in EIP-2537's uncompressed encoding (a base field element is 64 bytes big-endian: 16
zero bytes then 48), because decompressing a G2 point on-chain costs a square root in Fp2. The contract
cannot and need not tie the uncompressed signature to the 96 bytes on Bitcoin: whatever point is submitted
must pass the pairing check.
"""

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from eth_account.signers.local import LocalAccount
from eth_typing import BLSPubkey, BLSSignature
from py_ecc.bls.g2_primitives import pubkey_to_G1, signature_to_G2
from py_ecc.optimized_bls12_381.optimized_curve import normalize

from btcl2.bitcoin.block import Block
from btcl2.bitcoin.rpc import SyncBitcoinRPC
from btcl2.bridge.artifacts import Artifact, load_artifact
from btcl2.bridge.evm import Contract, EvmClient, Fees, Receipt
from btcl2.bridge.spv import MintProof, NotInBlock, mint_proof
from btcl2.core.attestation import RECORD_MAGIC, Attestation, check_registration
from btcl2.core.exits import ExitProof
from btcl2.core.params import Params
from btcl2.derive.frames import AnchorRef
from btcl2.derive.l1 import RpcBlockSource
from btcl2.derive.pipeline import Derivation
from btcl2.errors import ReorgDetected, Temporary

if TYPE_CHECKING:
    from btcl2.bridge.deploy import AttestationKeys


def _fp(value: Any) -> bytes:
    return int(value).to_bytes(64, "big")


def g1_eip2537(pubkey: bytes) -> bytes:
    """A compressed G1 public key (48 bytes) as EIP-2537's 128-byte x || y."""
    x, y = normalize(pubkey_to_G1(BLSPubkey(pubkey)))
    return _fp(x) + _fp(y)


def g2_eip2537(signature: bytes) -> bytes:
    """A compressed G2 signature (96 bytes) as EIP-2537's 256-byte x.c0 || x.c1 || y.c0 || y.c1."""
    x, y = normalize(signature_to_G2(BLSSignature(signature)))
    return b"".join(_fp(c) for c in (*x.coeffs, *y.coeffs))


def g2_from_eip2537(data: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    """The affine coordinates ((x.c0, x.c1), (y.c0, y.c1)) of a 256-byte EIP-2537 G2 point."""
    words = [int.from_bytes(data[i : i + 64], "big") for i in range(0, 256, 64)]
    return (words[0], words[1]), (words[2], words[3])


def bridge_with_verifier_errors(bridge: Contract, build_dir: Any = None) -> Contract:
    """The Bridge with the verifier's custom errors added to its ABI, so that a revert bubbling up from
    AttestationVerifier (TooFewSigners, BadAggregate, ...) is decoded by name."""
    verifier = load_artifact("AttestationVerifier", build_dir)
    errors = tuple(e for e in verifier.abi if e.get("type") == "error")
    names = {e.get("name") for e in bridge.abi if e.get("type") == "error"}
    extra = tuple(e for e in errors if e.get("name") not in names)
    artifact: Artifact = dataclasses.replace(bridge.artifact, abi=bridge.artifact.abi + extra)
    return Contract(bridge.address, artifact)


def deploy_attestation_verifier(
    client: EvmClient,
    owner: LocalAccount,
    keys: "AttestationKeys",
    build_dir: Any = None,
    nonce: int | None = None,
    fees: Fees | None = None,
) -> Contract:
    """Check the keys' proofs of possession and deploy AttestationVerifier with the keys, M and chain id. The
    Bridge takes it at construction (deploy_bridge_stack); replacing it later goes through its timelock."""
    check_registration(keys.pubkeys, keys.pops, keys.m)
    return client.deploy(
        load_artifact("AttestationVerifier", build_dir),
        [keys.l2_chain_id, [g1_eip2537(pk) for pk in keys.pubkeys], keys.m],
        owner,
        nonce=nonce,
        fees=fees,
    )


def tx_proof_arg(proof: MintProof) -> tuple[Any, ...]:
    """A proof as the Bridge's TxProof tuple (rawTx, merkleProof, blockHash, txIndex, outputIndex, coinbaseTx,
    coinbaseProof): the same fields, in the same order, as mintWithProof's arguments."""
    return proof.args()


@dataclass(frozen=True, slots=True)
class AttestationProofs:
    """What Bridge.submitAttestation needs besides the record: its anchor and its record, K deep."""

    anchor: MintProof
    """An anchor transaction of the batch (the relayer proves the chunk mined last)."""
    record: MintProof
    """The attestation transaction carrying the record."""


COMMITMENT_PREFIX = bytes.fromhex("6a4c72") + b"BL2A\x01"
"""An anchor commitment output's scriptPubKey starts so (OP_RETURN PUSHDATA1 114, magic, version)."""
RECORD_PREFIX = bytes.fromhex("6a4cd1") + RECORD_MAGIC + b"\x01"
"""An attestation record output's scriptPubKey starts so (OP_RETURN PUSHDATA1 209, magic, version)."""


def batch_output_proof(block: Block, txid: bytes, prefix: bytes, number_at: int, number: int) -> MintProof:
    """The proof that transaction `txid` (internal order) is in `block`, naming its first output whose
    scriptPubKey starts with `prefix` and holds batch `number` (u64 LE) at offset `number_at`; NotInBlock when
    none does."""
    tx = next((t for t in block.txs if t.txid == txid), None)
    if tx is None:
        raise NotInBlock(f"transaction {txid[::-1].hex()} is not in block {block.hash_hex}")
    for vout, out in enumerate(tx.vout):
        spk = out.script_pubkey
        if spk.startswith(prefix) and int.from_bytes(spk[number_at : number_at + 8], "little") == number:
            return mint_proof(block, txid, vout)
    raise NotInBlock(f"transaction {tx.txid_hex} has no output naming batch {number}")


def _block_at(node: SyncBitcoinRPC, height: int) -> Block:
    return Block.decode(bytes.fromhex(node.call("getblock", node.call("getblockhash", height), 0)))


def attestation_proofs(
    node: SyncBitcoinRPC, number: int, anchor: AnchorRef, record: AnchorRef
) -> AttestationProofs:
    """The proofs of batch `number`'s anchor transaction and attestation transaction, from the node's blocks
    at their heights (NotInBlock when a reorg moved them since)."""
    return AttestationProofs(
        batch_output_proof(
            _block_at(node, anchor.height), bytes.fromhex(anchor.txid)[::-1], COMMITMENT_PREFIX, 9, number
        ),
        batch_output_proof(
            _block_at(node, record.height), bytes.fromhex(record.txid)[::-1], RECORD_PREFIX, 8, number
        ),
    )


def attestation_args(att: Attestation, proofs: AttestationProofs) -> list[Any]:
    """The arguments of Bridge.submitAttestation for a record and its proofs."""
    return [*verify_args(att), tx_proof_arg(proofs.anchor), tx_proof_arg(proofs.record)]


def verify_args(att: Attestation) -> list[Any]:
    """The arguments of AttestationVerifier.verify for a record."""
    return [
        att.batch_number,
        att.batch_hash,
        att.post_state_root,
        att.exits_root,
        att.signers,
        g2_eip2537(att.signature),
    ]


def submit_attestation(
    client: EvmClient, bridge: Contract, att: Attestation, proofs: AttestationProofs, sender: LocalAccount
) -> Receipt:
    """Bridge.submitAttestation; ContractRevert (named, nothing sent) if the Bridge refuses it."""
    return client.transact(
        bridge_with_verifier_errors(bridge),
        "submitAttestation",
        *attestation_args(att, proofs),
        sender=sender,
    )


def is_attested(client: EvmClient, bridge: Contract, batch_number: int) -> bool:
    """Whether the Bridge holds an attestation of the batch."""
    found: Any = client.call(bridge, "attestedBatch", batch_number)
    return bytes(found[0]) != b"\x00" * 32


def mint_exit(
    client: EvmClient, bridge: Contract, batch_number: int, proof: ExitProof, sender: LocalAccount
) -> Receipt:
    """Bridge.mintExit with the exit's record and branch; ContractRevert if refused (e.g. ExitAlreadyMinted)."""
    return client.transact(
        bridge,
        "mintExit",
        batch_number,
        proof.record.encode(),
        list(proof.siblings),
        proof.sides,
        sender=sender,
    )


def attested_batch(
    client: EvmClient, bridge: Contract, batch_number: int
) -> tuple[bytes, bytes, bytes] | None:
    """(batch hash, post-state root, exits root) the Bridge holds for the batch; None when not attested."""
    found: Any = client.call(bridge, "attestedBatch", batch_number)
    roots = (bytes(found[0]), bytes(found[1]), bytes(found[2]))
    return None if roots[0] == b"\x00" * 32 else roots


def exit_minted(client: EvmClient, bridge: Contract, exit_id: bytes) -> bool:
    """Whether the Bridge has minted the exit (its L2 tx hash)."""
    return bool(client.call(bridge, "exitMinted", exit_id))


def has_attestation_verifier(client: EvmClient, bridge: Contract) -> bool:
    """Whether the Bridge has an AttestationVerifier (without one, attestations and exits are disabled)."""
    return int(str(client.call(bridge, "attestationVerifier")), 16) != 0


@dataclass(frozen=True, slots=True)
class ConfirmedAttestation:
    """A valid attestation record on Bitcoin and where its batch's anchor and its record are."""

    attestation: Attestation
    """The record (it names exactly replay's batch hash, post-state root and exits root)."""
    record: AnchorRef
    """The attestation transaction (txid display order, height)."""
    anchor: AnchorRef
    """The batch's anchor transaction mined last (all its chunks are at least as deep)."""

    @property
    def txid(self) -> bytes:
        """The attestation transaction's txid, internal order."""
        return bytes.fromhex(self.record.txid)[::-1]


class AttestationSource(Protocol):
    """Where the relayer learns of batch attestations on Bitcoin."""

    def confirmed(self, min_confirmations: int) -> list[ConfirmedAttestation]:
        """Valid attestation records whose transaction and whose batch's anchors have at least
        `min_confirmations`, one per batch in batch order."""
        ...


class ReplayAttestations:
    """Attestations as a replay of Bitcoin judges them (btcl2/derive): only records that name exactly the
    batch hash, post-state root and exits root replay derived, with a verifying aggregate of at least M
    registered signers. Follows the chain when the best block changed: only new blocks are read, and a
    reorg below the last one scanned starts the replay over."""

    def __init__(self, node: SyncBitcoinRPC, params: Params, from_height: int) -> None:
        self._node = node
        self._params = params
        self._from = from_height
        self._tip_hash = ""
        self._found: list[ConfirmedAttestation] = []
        self._tip = -1
        self._replay: Derivation | None = None

    def _refresh(self) -> None:
        tip_hash = str(self._node.call("getbestblockhash"))
        if tip_hash == self._tip_hash:
            return
        try:
            if self._replay is None:
                self._replay = Derivation(RpcBlockSource(self._node), self._params, self._from)
                outcome = self._replay.run()
            else:
                outcome = self._replay.follow()
        except ReorgDetected as exc:  # the chain kept moving under the scan: the next pass looks again
            self._replay = None
            raise Temporary(f"replay for attestations: {exc}") from exc
        report = outcome.attestations
        found = [] if report is None else sorted(report.attested.items())
        anchors = {b.number: max(b.anchors, key=lambda a: a.height) for b in outcome.applied if b.anchors}
        self._found = [
            ConfirmedAttestation(s.attestation, AnchorRef(s.txid, s.height), anchors[n])
            for n, s in found
            if n in anchors
        ]
        self._tip, self._tip_hash = outcome.progress.tip, tip_hash

    def confirmed(self, min_confirmations: int) -> list[ConfirmedAttestation]:
        self._refresh()
        deep = self._tip + 1 - min_confirmations
        return [c for c in self._found if c.record.height <= deep and c.anchor.height <= deep]
