"""The sender's reconciliation of a journaled transaction, against a scripted EVM endpoint."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from btcl2.bridge.anvil import ANVIL_DEV_KEYS
from btcl2.bridge.evm import Fees, Receipt, account
from btcl2.bridge.journal import Purpose, RelayerStore, TxEntry, TxStatus
from btcl2.bridge.sender import TxSender
from btcl2.storage.db import Database

ACCOUNT = account(ANVIL_DEV_KEYS[1])


@dataclass
class FakeEvm:
    """Answers the few JSON-RPC methods the sender uses from plain fields."""

    mined_nonce: int = 0
    receipts: dict[str, int] = field(default_factory=dict)  # tx hash -> status
    known: set[str] = field(default_factory=set)
    sent: list[str] = field(default_factory=list)

    def rpc(self, method: str, *params: Any) -> Any:
        if method == "eth_getTransactionReceipt":
            return {"status": "0x1"} if params[0] in self.receipts else None
        if method == "eth_getTransactionCount":
            return hex(self.mined_nonce)
        if method == "eth_getTransactionByHash":
            return {} if params[0] in self.known or params[0] in self.receipts else None
        if method == "eth_sendRawTransaction":
            self.sent.append(params[0])
            return "0x"
        raise AssertionError(method)

    def wait_for_receipt(self, tx_hash: bytes, timeout: float = 0.0) -> Receipt:
        return Receipt(tx_hash, self.receipts["0x" + tx_hash.hex()], 12, 21_000, None, ())

    def chain_id(self) -> int:
        return 31337

    def suggest_fees(self) -> Fees:
        return Fees(2 * 10**9, 10**9)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[FakeEvm, TxSender, list[float]]:
    evm = FakeEvm()
    now = [1_000.0]
    store = RelayerStore(Database(tmp_path / "db"))
    sender = TxSender(evm, ACCOUNT, store, stuck_after=30, clock=lambda: now[0])
    return evm, sender, now


def journaled(sender: TxSender, nonce: int = 5) -> TxEntry:
    version = sender._sign(b"\x22" * 20, b"\x01\x02", 100_000, nonce, Fees(2 * 10**9, 10**9))
    entry = TxEntry(0, Purpose.HEADERS, b"h", nonce, b"\x22" * 20, b"\x01\x02", 100_000, (version,))
    return sender.store.begin(entry)


def test_receipt_resolves(setup: tuple[FakeEvm, TxSender, list[float]]) -> None:
    evm, sender, _ = setup
    entry = journaled(sender)
    evm.receipts["0x" + entry.latest.tx_hash.hex()] = 0
    resolved = sender.check(entry)
    assert resolved is not None and resolved.entry.status == TxStatus.REVERTED
    assert resolved.entry.mined_hash == entry.latest.tx_hash and resolved.entry.block_number == 12


def test_missing_transaction_is_sent_again_unchanged(setup: tuple[FakeEvm, TxSender, list[float]]) -> None:
    evm, sender, _ = setup
    evm.mined_nonce = 5
    entry = journaled(sender)
    assert sender.check(entry) is None
    assert evm.sent == ["0x" + entry.latest.raw.hex()]


def test_nonce_taken_by_another_transaction_drops(setup: tuple[FakeEvm, TxSender, list[float]]) -> None:
    evm, sender, _ = setup
    evm.mined_nonce = 6
    resolved = sender.check(journaled(sender))
    assert resolved is not None and resolved.entry.status == TxStatus.DROPPED
    assert "used by another" in resolved.entry.note


def test_nonce_gap_drops_only_after_waiting(setup: tuple[FakeEvm, TxSender, list[float]]) -> None:
    evm, sender, now = setup
    evm.mined_nonce = 3
    entry = journaled(sender)
    evm.known.add("0x" + entry.latest.tx_hash.hex())
    assert sender.check(entry) is None
    now[0] += 31
    resolved = sender.check(entry)
    assert resolved is not None and resolved.entry.status == TxStatus.DROPPED and "gap" in resolved.entry.note


def test_stuck_transaction_is_replaced_with_higher_fees_journaled_first(
    setup: tuple[FakeEvm, TxSender, list[float]],
) -> None:
    evm, sender, now = setup
    evm.mined_nonce = 5
    entry = journaled(sender)
    evm.known.add("0x" + entry.latest.tx_hash.hex())
    assert sender.check(entry) is None and evm.sent == []
    now[0] += 31
    assert sender.check(entry) is None
    (stored,) = sender.store.open_entries()
    old, new = stored.versions
    assert new.max_priority_fee_per_gas == old.max_priority_fee_per_gas * 125 // 100
    assert new.max_fee_per_gas >= old.max_fee_per_gas * 125 // 100
    assert evm.sent == ["0x" + new.raw.hex()]
    # The replacement is mined: the entry resolves with it.
    evm.receipts["0x" + new.tx_hash.hex()] = 1
    resolved = sender.check(stored)
    assert resolved is not None and resolved.entry.mined_hash == new.tx_hash
