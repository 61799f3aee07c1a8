"""The Solidity deposit reader (contracts/BitcoinTx.sol) agrees with btcl2.core.deposits.parse_deposit.

The library runs in a real EVM (anvil) through a test harness contract; each case is an eth_call, so the EVM
state never changes. The Python reference decides, the contract must agree byte for byte.
"""

from collections.abc import Iterator
from typing import Any

import pytest

from btcl2.bitcoin.script import ScriptType, op_return, p2pkh, p2sh, p2wpkh, p2wsh, solve
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.artifacts import load_artifact
from btcl2.bridge.evm import Contract, ContractRevert, EvmClient, account
from btcl2.core.deposits import (
    DEPOSIT_MAGIC,
    Deposit,
    DepositKind,
    RejectedDeposit,
    deposit_tag,
    deposit_tag_script,
    parse_deposit,
)
from btcl2.core.params import Params

PARAMS = Params()
FED = PARAMS.federation_script_pubkey
ADDR = bytes(range(1, 21))
NOT_A_TAG, MALFORMED, VALID = 0, 1, 2


@pytest.fixture(scope="module")
def harness() -> Iterator[tuple[EvmClient, Contract]]:
    with Anvil() as anvil:
        client = EvmClient(anvil.url)
        contract = client.deploy(load_artifact("BitcoinTxHarness"), [], account(ANVIL_DEV_KEYS[0]))
        yield client, contract


def _python_tag(spk: bytes) -> tuple[int, int, bytes]:
    """parse_deposit's view of one output script, through a transaction holding only it and a deposit."""
    tx = Tx(2, (TxIn(OutPoint(b"\x07" * 32, 1)),), (TxOut(50_000, FED), TxOut(0, spk)), 0)
    result = parse_deposit(tx, FED, PARAMS)
    if isinstance(result, Deposit):
        return VALID, int(result.kind), bytes(result.recipient)
    assert isinstance(result, RejectedDeposit)
    if result.reason.startswith("malformed deposit tag"):
        return MALFORMED, 0, b"\x00" * 20
    assert result.reason == "no deposit tag", result.reason
    return NOT_A_TAG, 0, b"\x00" * 20


TAG_CASES = {
    "valid evm": deposit_tag_script(DepositKind.EVM, ADDR),
    "valid l2": deposit_tag_script(DepositKind.L2, ADDR),
    "short payload": op_return(deposit_tag(DepositKind.EVM, ADDR)[:25]),
    "long payload": op_return(deposit_tag(DepositKind.EVM, ADDR) + b"\x00"),
    "wrong magic": op_return(b"BL2E" + deposit_tag(DepositKind.EVM, ADDR)[4:]),
    "magic only": op_return(DEPOSIT_MAGIC),
    "three magic bytes": op_return(DEPOSIT_MAGIC[:3]),
    "wrong version 0": op_return(DEPOSIT_MAGIC + bytes([0, 2]) + ADDR),
    "wrong version 2": op_return(DEPOSIT_MAGIC + bytes([2, 2]) + ADDR),
    "kind 0": op_return(DEPOSIT_MAGIC + bytes([1, 0]) + ADDR),
    "kind 3": op_return(DEPOSIT_MAGIC + bytes([1, 3]) + ADDR),
    "pushdata1": b"\x6a\x4c\x1a" + deposit_tag(DepositKind.EVM, ADDR),
    "pushdata2": b"\x6a\x4d\x1a\x00" + deposit_tag(DepositKind.EVM, ADDR),
    "pushdata4": b"\x6a\x4e\x1a\x00\x00\x00" + deposit_tag(DepositKind.EVM, ADDR),
    "second push": deposit_tag_script(DepositKind.EVM, ADDR) + b"\x01\x00",
    "two pushes": op_return(b"BL2D", b"\x01\x02" + ADDR),
    "tag second": op_return(b"x", deposit_tag(DepositKind.EVM, ADDR)),
    "truncated push": b"\x6a\x1a" + deposit_tag(DepositKind.EVM, ADDR)[:20],
    "truncated pushdata4": b"\x6a\x4e\xff\xff",
    "bare op_return": b"\x6a",
    "op_return op_0": b"\x6a\x00",
    "op_return op_1": b"\x6a\x51",
    "not op_return": b"\x51\x1a" + deposit_tag(DepositKind.EVM, ADDR),
    "other data": op_return(b"hello world"),
}


@pytest.mark.parametrize("name", sorted(TAG_CASES))
def test_tag_classification_agrees(harness: tuple[EvmClient, Contract], name: str) -> None:
    client, contract = harness
    spk = TAG_CASES[name]
    status, kind, recipient = client.call(contract, "classifyTag", spk)
    expected = _python_tag(spk)
    assert (status, kind, bytes.fromhex(recipient[2:])) == expected


def _solidity_verdict(d: tuple[Any, ...], params: Params) -> tuple[Any, ...]:
    """The Bridge's decision order (Bridge._checkDeposit) applied to the harness's parse result."""
    _txid, coinbase, _count, fed_out, amount, _selected_pays, tags, tag_status, kind, recipient = d
    if fed_out == 2**256 - 1:
        return ("none",)
    if coinbase:
        return ("rejected", "coinbase transaction")
    if tags == 0:
        return ("rejected", "no deposit tag")
    if tags > 1:
        return ("rejected", "more than one deposit tag")
    if tag_status != VALID:
        return ("rejected", "malformed deposit tag")
    if amount < params.min_deposit_sats:
        return ("rejected", "amount below min_deposit_sats")
    return ("deposit", fed_out, kind, bytes.fromhex(recipient[2:]), amount)


def _python_verdict(tx: Tx) -> tuple[Any, ...]:
    result = parse_deposit(tx, FED, PARAMS)
    if result is None:
        return ("none",)
    if isinstance(result, RejectedDeposit):
        return ("rejected", result.reason.split(":")[0])
    return ("deposit", result.outpoint.vout, int(result.kind), bytes(result.recipient), result.amount)


def _tx(*outs: TxOut, coinbase: bool = False) -> Tx:
    prev = OutPoint(b"\x00" * 32, 0xFFFFFFFF) if coinbase else OutPoint(b"\x09" * 32, 3)
    return Tx(2, (TxIn(prev, b"\x01\x01" if coinbase else b"\x00"),), tuple(outs), 0)


EVM_TAG = TxOut(0, deposit_tag_script(DepositKind.EVM, ADDR))
L2_TAG = TxOut(0, deposit_tag_script(DepositKind.L2, ADDR))
CHANGE = TxOut(70_000, p2wpkh(b"\x05" * 20))
TX_CASES = {
    "evm deposit": _tx(CHANGE, TxOut(25_000, FED), EVM_TAG),
    "l2 deposit": _tx(L2_TAG, TxOut(25_000, FED)),
    "no federation output": _tx(CHANGE, EVM_TAG),
    "no tag": _tx(TxOut(25_000, FED), CHANGE),
    "two tags": _tx(TxOut(25_000, FED), EVM_TAG, L2_TAG),
    "malformed tag": _tx(TxOut(25_000, FED), TxOut(0, TAG_CASES["wrong version 2"])),
    "tag and other op_return": _tx(TxOut(0, op_return(b"memo")), TxOut(25_000, FED), EVM_TAG),
    "two federation outputs": _tx(TxOut(30_000, FED), TxOut(90_000, FED), EVM_TAG),
    "below minimum": _tx(TxOut(9_999, FED), EVM_TAG),
    "exactly minimum": _tx(TxOut(10_000, FED), EVM_TAG),
    "coinbase": _tx(TxOut(25_000, FED), EVM_TAG, coinbase=True),
}


@pytest.mark.parametrize("name", sorted(TX_CASES))
def test_transaction_parse_agrees(harness: tuple[EvmClient, Contract], name: str) -> None:
    client, contract = harness
    tx = TX_CASES[name]
    d = client.call(contract, "parseDeposit", tx.encode(include_witness=False), FED, 0)
    assert d[0] == tx.txid
    assert d[2] == len(tx.vout)
    assert _solidity_verdict(d, PARAMS) == _python_verdict(tx)


def test_witness_serialization_rejected(harness: tuple[EvmClient, Contract]) -> None:
    client, contract = harness
    tx = _tx(TxOut(25_000, FED), EVM_TAG)
    segwit = Tx(tx.version, (TxIn(tx.vin[0].prevout, b"", witness=(b"\x01",)),), tx.vout, 0)
    with pytest.raises(ContractRevert) as e:
        client.call(contract, "parseDeposit", segwit.encode(include_witness=True), FED, 0)
    assert e.value.name == "WitnessSerialization"
    raw = tx.encode(include_witness=False)
    for bad in (raw + b"\x00", raw[:-1], raw[:30]):
        with pytest.raises(ContractRevert) as e:
            client.call(contract, "parseDeposit", bad, FED, 0)
        assert e.value.name == "MalformedTransaction"


STANDARD = {
    ScriptType.PUBKEYHASH,
    ScriptType.SCRIPTHASH,
    ScriptType.WITNESS_V0_KEYHASH,
    ScriptType.WITNESS_V0_SCRIPTHASH,
    ScriptType.WITNESS_V1_TAPROOT,
}


@pytest.mark.parametrize(
    "script",
    [
        p2pkh(b"\x01" * 20),
        p2sh(b"\x02" * 20),
        p2wpkh(b"\x03" * 20),
        p2wsh(b"\x04" * 32),
        b"\x51\x20" + b"\x05" * 32,
        b"\x52\x20" + b"\x05" * 32,
        b"\x00\x15" + b"\x03" * 21,
        op_return(b"x"),
        b"",
        b"\x51",
        p2pkh(b"\x01" * 20)[:-1] + b"\x87",
        FED,
    ],
)
def test_standard_scripts_agree(harness: tuple[EvmClient, Contract], script: bytes) -> None:
    client, contract = harness
    assert client.call(contract, "isStandardScript", script) == (solve(script)[0] in STANDARD)
