"""Sending the relayer's EVM transactions through the journal: one at a time, each journaled before it is sent.

The sender keeps at most one transaction in flight (its own nonces never leave a gap) and reconciles it with
the chain on every pass, after a restart included:
  * a receipt of any signed version -> the entry is resolved (mined or reverted);
  * the account's mined nonce passed it without a receipt of ours -> another transaction took the nonce: the
    entry is dropped and the caller rebuilds its purpose;
  * nonces below it unused for longer than `stuck_after` (a gap left by someone else's dropped transaction)
    -> dropped too, so the purpose is rebuilt at the first free nonce;
  * unknown to the node (lost before or after the broadcast) -> the same signed bytes are sent again;
  * known but waiting longer than `stuck_after` -> replaced: same nonce, same call, fees raised by
    `bump_percent`, journaled as a new version before it is sent.
"""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from btcl2.bridge.abi import encode_call
from btcl2.bridge.evm import GAS_MARGIN_DEN, GAS_MARGIN_NUM, Contract, EvmClient, EvmRpcError, Fees, Receipt
from btcl2.bridge.journal import Effect, Purpose, RelayerStore, SignedVersion, TxEntry, TxStatus
from btcl2.errors import InvalidInput
from btcl2.failpoints import failpoint

log = logging.getLogger(__name__)

RECEIPT_POLL = 0.02
"""Seconds between receipt polls while waiting for a just-sent transaction (loopback: cheap)."""
_BENIGN_SEND_ERRORS = ("already known", "known transaction", "already imported")
"""Answers of eth_sendRawTransaction meaning the node already holds this exact transaction."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """A journaled transaction that is no longer pending, with its receipt when one was mined."""

    entry: TxEntry
    """The entry with its final status (not yet written: the caller records it with its effects)."""
    receipt: Receipt | None
    """The receipt of the mined version (None when dropped)."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class TxSender:
    """Builds, journals, sends, replaces and reconciles the transactions of one EVM account."""

    def __init__(
        self,
        evm: EvmClient,
        account: LocalAccount,
        store: RelayerStore,
        *,
        stuck_after: float = 30.0,
        bump_percent: int = 25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if bump_percent < 10:
            raise InvalidInput("a replacement must raise fees by at least 10% to be accepted by nodes")
        self.evm = evm
        self.account = account
        self.store = store
        self.stuck_after = stuck_after
        self.bump_percent = bump_percent
        self.clock = clock
        self._chain_id: int | None = None

    @property
    def address(self) -> str:
        """The sending account."""
        return str(self.account.address)

    def _sign(self, to: bytes, data: bytes, gas: int, nonce: int, fees: Fees) -> SignedVersion:
        if self._chain_id is None:
            self._chain_id = self.evm.chain_id()
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self._chain_id,
            "nonce": nonce,
            "to": to_checksum_address(_hex(to)),
            "data": data,
            "value": 0,
            "gas": gas,
            "maxFeePerGas": fees.max_fee_per_gas,
            "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
        }
        signed = self.account.sign_transaction(tx)
        return SignedVersion(
            raw=bytes(signed.raw_transaction),
            tx_hash=bytes(signed.hash),
            max_fee_per_gas=fees.max_fee_per_gas,
            max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
            signed_at_ms=int(self.clock() * 1000),
        )

    def prepare(
        self, purpose: Purpose, subject: bytes, contract: Contract, fn: str, args: Sequence[Any]
    ) -> TxEntry:
        """Simulate the call (ContractRevert if it would revert: nothing is journaled) and sign it."""
        self.evm.call(contract, fn, *args, sender=self.address)
        data = encode_call(contract.abi, fn, args)
        call = {"from": self.address, "to": contract.address, "data": _hex(data)}
        gas = int(self.evm.rpc("eth_estimateGas", call), 16) * GAS_MARGIN_NUM // GAS_MARGIN_DEN
        to = bytes.fromhex(contract.address[2:])
        nonce = self.evm.nonce(self.address)
        version = self._sign(to, data, gas, nonce, self.evm.suggest_fees())
        return TxEntry(0, purpose, subject, nonce, to, data, gas, (version,))

    def _fail(self, step: str, entry: TxEntry) -> None:
        failpoint(f"relayer.{step}", f"relayer.{entry.purpose.name.lower()}.{step}")

    def send(self, entry: TxEntry, effect: Effect | None = None) -> TxEntry:
        """Journal `entry` (with `effect`, a deposit record to mark minting or an attestation record to mark
        submitting) and only then broadcast it."""
        entry = self.store.begin(entry, effect)
        self._fail("after_journal", entry)
        self._broadcast(entry.latest.raw)
        self._fail("after_send", entry)
        log.info(
            "relayer: sent %s nonce %d tx 0x%s",
            entry.purpose.name.lower(),
            entry.nonce,
            entry.latest.tx_hash.hex(),
        )
        return entry

    def _broadcast(self, raw: bytes) -> None:
        try:
            self.evm.rpc("eth_sendRawTransaction", _hex(raw))
        except EvmRpcError as e:
            text = str(e).lower()
            if any(s in text for s in _BENIGN_SEND_ERRORS):
                return
            if "nonce too low" in text:
                # Mined already (ours: the receipt shows it) or taken by another: the next check decides.
                log.info("relayer: send refused (%s); reconciling", e)
                return
            raise

    def _receipt(self, entry: TxEntry) -> Resolved | None:
        for version in reversed(entry.versions):
            if self.evm.rpc("eth_getTransactionReceipt", _hex(version.tx_hash)) is None:
                continue
            receipt = self.evm.wait_for_receipt(version.tx_hash, 0.0)
            status = TxStatus.MINED if receipt.status == 1 else TxStatus.REVERTED
            done = replace(
                entry, status=status, mined_hash=version.tx_hash, block_number=receipt.block_number
            )
            return Resolved(done, receipt)
        return None

    def wait(self, entry: TxEntry, timeout: float) -> Resolved | None:
        """Poll for a receipt of any version for up to `timeout` seconds; None if there is none yet."""
        deadline = time.monotonic() + timeout
        while True:
            resolved = self._receipt(entry)
            if resolved is not None or time.monotonic() >= deadline:
                return resolved
            time.sleep(RECEIPT_POLL)

    def check(self, entry: TxEntry) -> Resolved | None:
        """Reconcile one pending entry with the chain; None while it stays pending (re-sent or replaced)."""
        resolved = self._receipt(entry)
        if resolved is not None:
            return resolved
        mined_nonce = int(self.evm.rpc("eth_getTransactionCount", self.address, "latest"), 16)
        if mined_nonce > entry.nonce:
            # A receipt may have appeared since the first look: only a second miss proves another tx took it.
            resolved = self._receipt(entry)
            if resolved is not None:
                return resolved
            return self._dropped(entry, f"nonce {entry.nonce} was used by another transaction")
        age = self.clock() - entry.latest.signed_at_ms / 1000
        if mined_nonce < entry.nonce and age > self.stuck_after:
            # Our entries resolve in nonce order, so the unused nonces below are someone else's lost ones.
            return self._dropped(entry, f"nonce gap: nonces {mined_nonce}..{entry.nonce - 1} are unused")
        known = any(
            self.evm.rpc("eth_getTransactionByHash", _hex(v.tx_hash)) is not None for v in entry.versions
        )
        if not known:
            log.info("relayer: tx 0x%s unknown to the node: sending it again", entry.latest.tx_hash.hex())
            self._broadcast(entry.latest.raw)
        elif age > self.stuck_after:
            self._replace(entry)
        return None

    def _dropped(self, entry: TxEntry, why: str) -> Resolved:
        log.warning("relayer: %s tx nonce %d dropped: %s", entry.purpose.name.lower(), entry.nonce, why)
        return Resolved(replace(entry, status=TxStatus.DROPPED, note=why), None)

    def _replace(self, entry: TxEntry) -> TxEntry:
        """Sign the same call with the same nonce and higher fees, journal it, then send it."""
        old = entry.latest
        suggested = self.evm.suggest_fees()
        bump = 100 + self.bump_percent
        fees = Fees(
            max(old.max_fee_per_gas * bump // 100, suggested.max_fee_per_gas),
            max(old.max_priority_fee_per_gas * bump // 100, suggested.max_priority_fee_per_gas),
        )
        version = self._sign(entry.to, entry.data, entry.gas, entry.nonce, fees)
        entry = self.store.add_version(entry, version)
        self._fail("after_journal", entry)
        try:
            self._broadcast(version.raw)
        except EvmRpcError as e:
            # Underpriced for this node: the next pass bumps again from the journaled version.
            log.warning("relayer: replacement of nonce %d refused: %s", entry.nonce, e)
            return entry
        self._fail("after_send", entry)
        log.info(
            "relayer: replaced nonce %d with tx 0x%s (tip %d wei)",
            entry.nonce,
            version.tx_hash.hex(),
            fees.max_priority_fee_per_gas,
        )
        return entry
