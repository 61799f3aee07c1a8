"""Claiming an L2 -> EVM exit: find the exit's batch, check the Bridge holds that batch's attestation, prove the
exit's record under the attested exits root and call Bridge.mintExit (docs/PROTOCOL.md, "Exits to the EVM").

The batch comes from the sequencer (`l2_getTransaction`, `l2_getRawBatch`), but nothing it says is trusted:
the records' root must equal the exits root the Bridge holds from the federation's attestation, and the
Bridge checks the proof itself. Anyone may claim; the WBTC always goes to the exit's EVM recipient.
"""

import time
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount

from btcl2.bridge.attest import attested_batch, exit_minted, has_attestation_verifier, mint_exit
from btcl2.bridge.evm import Contract, ContractRevert, EvmClient, Receipt
from btcl2.core.exits import ExitProof, exit_records, exits_root, prove_exit
from btcl2.core.types import Batch, ExitRecord, Hash32
from btcl2.errors import InvalidInput
from btcl2.wallet.addresses import to_checksum_address
from btcl2.wallet.l2client import NOT_FOUND, L2Client, SequencerError

PENDING = "pending"
"""The exit is not claimable yet: not sealed, or its batch is not attested on the Bridge."""
ATTESTED = "attested"
"""Its batch is attested on the Bridge: `withdraw claim` mints it."""
MINTED = "minted"
"""The Bridge minted it (once, for good)."""


class ExitError(InvalidInput):
    """Raised when an exit cannot be claimed; the class says why."""


class UnknownExit(ExitError):
    """Raised when the sequencer knows no transaction with this hash."""


class NotAnExit(ExitError):
    """Raised when the transaction is not an ExitToEvm (a transfer or a withdrawal to Bitcoin)."""


class ExitNotSealed(ExitError):
    """Raised when the exit is still in the sequencer's mempool (or was rejected)."""


class BatchNotAttested(ExitError):
    """Raised when the Bridge holds no attestation of the exit's batch yet."""


class ExitAlreadyMinted(ExitError):
    """Raised when the Bridge minted the exit already (claiming twice never mints twice)."""


class ExitRootMismatch(ExitError):
    """Raised when the batch the sequencer serves has another exits root than the one attested."""


class ExitsDisabled(ExitError):
    """Raised when the Bridge has no AttestationVerifier: it cannot mint exits."""


@dataclass(frozen=True, slots=True)
class ExitView:
    """An exit as the sequencer and the Bridge show it."""

    exit_id: Hash32
    """The ExitToEvm transaction's hash."""
    status: str
    """pending, attested or minted."""
    batch: int | None
    """The batch it was sealed in (None while pending in the mempool)."""
    amount: int
    """Satoshis (= WBTC base units)."""
    recipient: str
    """The EVM address credited (0x-hex)."""
    detail: str
    """Where it stands, in words."""

    def to_json(self) -> dict[str, Any]:
        """The `withdraw status` / `withdraw claim` JSON object."""
        return {
            "id": "0x" + self.exit_id.hex(),
            "kind": "exit",
            "status": self.status,
            "batch": self.batch,
            "amount_sats": self.amount,
            "recipient": self.recipient,
            "detail": self.detail,
        }


def parse_exit_id(text: str) -> Hash32:
    """An L2 tx hash (0x + 64 hex, optionally prefixed "l2:"); InvalidInput otherwise."""
    body = text.strip().removeprefix("l2:")
    try:
        raw = bytes.fromhex(body[2:]) if body[:2] in ("0x", "0X") else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InvalidInput(f"invalid exit id {text!r}: expected the L2 tx hash, 0x<64 hex>")
    return Hash32(raw)


def exit_transaction(l2: L2Client, exit_id: bytes) -> dict[str, Any]:
    """The sequencer's view of the exit transaction; UnknownExit or NotAnExit otherwise."""
    try:
        tx = l2.get_transaction("0x" + exit_id.hex())
    except SequencerError as exc:
        if exc.code == NOT_FOUND:
            raise UnknownExit(f"the sequencer knows no L2 transaction 0x{exit_id.hex()}") from None
        raise
    if tx.get("type") != "exit":
        raise NotAnExit(f"L2 transaction 0x{exit_id.hex()} is a {tx.get('type')}, not an exit to the EVM")
    return tx


def _records(l2: L2Client, number: int, chain_id: int) -> list[ExitRecord]:
    raw = str(l2.call("l2_getRawBatch", number))
    return exit_records(Batch.decode(bytes.fromhex(raw.removeprefix("0x"))), chain_id)


def exit_view(l2: L2Client, evm: EvmClient, bridge: Contract, exit_id: bytes) -> ExitView:
    """Where an exit stands: pending (mempool, or batch not attested), attested (claimable) or minted."""
    tx = exit_transaction(l2, exit_id)
    number = tx.get("batch")
    amount = int(tx["amount"])
    recipient = to_checksum_address(bytes.fromhex(str(tx["evmAddress"]).removeprefix("0x")))

    def view(status: str, detail: str) -> ExitView:
        return ExitView(Hash32(exit_id), status, number, amount, recipient, detail)

    if exit_minted(evm, bridge, exit_id):
        return view(MINTED, f"minted on the Bridge to {recipient}")
    if number is None:
        return view(PENDING, f"not sealed in a batch yet (sequencer status {tx.get('status')})")
    if attested_batch(evm, bridge, int(number)) is None:
        return view(PENDING, f"sealed in batch {number}; the Bridge holds no attestation of it yet")
    return view(ATTESTED, f"batch {number} is attested on the Bridge: `btcl2 withdraw claim` mints it")


def prove_claim(l2: L2Client, evm: EvmClient, bridge: Contract, exit_id: bytes) -> tuple[int, ExitProof]:
    """The exit's batch and its proof under the exits root the Bridge holds; an ExitError when it cannot
    be claimed (unknown, not an exit, not sealed, not attested, already minted, root mismatch)."""
    if not has_attestation_verifier(evm, bridge):
        raise ExitsDisabled(f"the Bridge at {bridge.address} has no attestation verifier: exits are disabled")
    tx = exit_transaction(l2, exit_id)
    if exit_minted(evm, bridge, exit_id):
        to = to_checksum_address(bytes.fromhex(str(tx["evmAddress"]).removeprefix("0x")))
        raise ExitAlreadyMinted(f"exit 0x{exit_id.hex()} was already minted to {to}")
    number = tx.get("batch")
    if number is None:
        raise ExitNotSealed(f"exit 0x{exit_id.hex()} is not sealed in a batch yet ({tx.get('status')})")
    number = int(number)
    attested = attested_batch(evm, bridge, number)
    if attested is None:
        raise BatchNotAttested(
            f"batch {number} of exit 0x{exit_id.hex()} is not attested on the Bridge yet "
            "(its attestation needs K confirmations on Bitcoin, then the relayer submits it)"
        )
    records = _records(l2, number, int(l2.status()["chainId"]))
    root = exits_root(records)
    if root != attested[2]:
        raise ExitRootMismatch(
            f"batch {number} from the sequencer has exits root {root.hex()}, the Bridge holds "
            f"{attested[2].hex()}"
        )
    try:
        return number, prove_exit(records, exit_id)
    except KeyError:
        raise UnknownExit(f"exit 0x{exit_id.hex()} is not in batch {number}") from None


def claim_exit(
    l2: L2Client, evm: EvmClient, bridge: Contract, exit_id: bytes, sender: LocalAccount
) -> tuple[ExitProof, Receipt]:
    """Bridge.mintExit for the exit, paid by `sender`; the proof and the receipt, or an ExitError."""
    number, proof = prove_claim(l2, evm, bridge, exit_id)
    try:
        return proof, mint_exit(evm, bridge, number, proof, sender)
    except ContractRevert as exc:
        if exc.name == "ExitAlreadyMinted":  # someone claimed it between our check and our transaction
            raise ExitAlreadyMinted(f"exit 0x{exit_id.hex()} was already minted") from None
        raise


def wait_attested(
    l2: L2Client, evm: EvmClient, bridge: Contract, exit_id: bytes, timeout: float, poll: float = 1.0
) -> ExitView:
    """Poll until the exit is attested or minted (bounded by `timeout` seconds); its last view."""
    deadline = time.monotonic() + timeout
    while True:
        view = exit_view(l2, evm, bridge, exit_id)
        if view.status != PENDING or time.monotonic() >= deadline:
            return view
        time.sleep(poll)
