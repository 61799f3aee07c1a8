"""A small typed client for an EVM JSON-RPC endpoint (anvil in development, any node in production).

web3.py's HTTP provider carries the requests, eth_account signs locally; everything else is explicit: the nonce,
the gas limit and the EIP-1559 fees of every transaction can be given, a transaction is simulated before it is
sent so that a revert is reported (decoded from the contract's custom errors) without spending gas, and events
are decoded only from the address of the contract asked about, so an imitating contract is never believed.
"""

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import rlp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.types import RPCEndpoint

from btcl2.bridge.abi import (
    AbiEntry,
    Event,
    RevertReason,
    decode_log,
    decode_result,
    decode_revert,
    encode_call,
    encode_constructor,
)
from btcl2.bridge.artifacts import Artifact
from btcl2.errors import InvalidInput, Temporary

DEFAULT_PRIORITY_FEE = 1_000_000_000
"""Tip offered when the caller gives no fees: 1 gwei."""
GAS_MARGIN_NUM, GAS_MARGIN_DEN = 6, 5
"""Gas limit = estimate * 6/5 when the caller gives none: estimates can be short by a refund's worth."""


class EvmRpcError(Temporary):
    """Raised when the endpoint is unreachable or answers a request with an error that is not a revert."""


class ContractRevert(InvalidInput):
    """Raised when a call or transaction reverts; `reason` is the decoded custom error."""

    def __init__(self, reason: RevertReason, context: str) -> None:
        self.reason = reason
        args = ", ".join(repr(a) for a in reason.args)
        what = f"{reason.name}({args})" if reason.name else f"unknown revert data 0x{reason.data.hex()}"
        super().__init__(f"{context} reverted: {what}")

    @property
    def name(self) -> str:
        """The custom error's name ("" if it could not be decoded)."""
        return self.reason.name


class TransactionTimeout(Temporary):
    """Raised when no receipt arrived within the wait; the transaction may still be mined later."""


def create_address(sender: str, nonce: int) -> str:
    """The address a contract created by `sender` with `nonce` gets (CREATE)."""
    return to_checksum_address(keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:])


def account(secret: str | bytes) -> LocalAccount:
    """A local signing account from a 32-byte secret (hex or bytes)."""
    acct: LocalAccount = Account.from_key(secret)
    return acct


@dataclass(frozen=True, slots=True)
class Contract:
    """A deployed contract: where it is and its ABI."""

    address: str
    """Checksummed address."""
    artifact: Artifact
    """The compiled contract (ABI, bytecode)."""

    @property
    def abi(self) -> tuple[AbiEntry, ...]:
        return self.artifact.abi


@dataclass(frozen=True, slots=True)
class Fees:
    """EIP-1559 fee caps, in wei per gas."""

    max_fee_per_gas: int
    """The most paid per gas, base fee included."""
    max_priority_fee_per_gas: int
    """The tip per gas."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """A mined transaction's receipt."""

    tx_hash: bytes
    """The transaction hash."""
    status: int
    """1 success, 0 reverted."""
    block_number: int
    """The block it was mined in."""
    gas_used: int
    """Gas it consumed."""
    contract_address: str | None
    """The created contract, for a deployment."""
    logs: tuple[dict[str, Any], ...]
    """Raw JSON-RPC log objects."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class EvmClient:
    """JSON-RPC client for one EVM endpoint."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        # No automatic retries: a caller sees a failure within `timeout` and decides what to do.
        self._provider = Web3.HTTPProvider(
            url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
        )

    def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC request; EvmRpcError on transport failure or an error answer."""
        try:
            resp = self._provider.make_request(RPCEndpoint(method), list(params))
        except Exception as e:  # requests/urllib3 connection and timeout errors
            raise EvmRpcError(f"{method} to {self.url} failed: {e}") from e
        if resp.get("error"):
            err = dict(resp["error"])
            raise EvmRpcError(f"{method}: {err.get('message')} (code {err.get('code')})")
        return resp.get("result")

    def _call_raw(
        self, tx: dict[str, Any], block: str | int, abis: Iterable[AbiEntry], context: str
    ) -> bytes:
        """eth_call; ContractRevert with the decoded error when it reverts."""
        tag = block if isinstance(block, str) else hex(block)
        try:
            resp = self._provider.make_request(RPCEndpoint("eth_call"), [tx, tag])
        except Exception as e:
            raise EvmRpcError(f"eth_call to {self.url} failed: {e}") from e
        err = resp.get("error")
        if err:
            data = err.get("data") if isinstance(err, dict) else None
            if isinstance(data, str) and data.startswith("0x"):
                raise ContractRevert(decode_revert(abis, bytes.fromhex(data[2:])), context)
            if isinstance(err, dict) and "revert" in str(err.get("message", "")):
                raise ContractRevert(RevertReason("", (), b""), context)
            raise EvmRpcError(f"eth_call: {err}")
        return bytes.fromhex(str(resp["result"])[2:])

    def chain_id(self) -> int:
        """The endpoint's chain id."""
        return int(self.rpc("eth_chainId"), 16)

    def block_number(self) -> int:
        """The latest block number."""
        return int(self.rpc("eth_blockNumber"), 16)

    def balance(self, address: str) -> int:
        """Ether balance in wei."""
        return int(self.rpc("eth_getBalance", address, "latest"), 16)

    def nonce(self, address: str) -> int:
        """The next nonce of `address`, counting its pending transactions."""
        return int(self.rpc("eth_getTransactionCount", address, "pending"), 16)

    def code(self, address: str) -> bytes:
        """The runtime code at `address`."""
        return bytes.fromhex(str(self.rpc("eth_getCode", address, "latest"))[2:])

    def suggest_fees(self, priority: int = DEFAULT_PRIORITY_FEE) -> Fees:
        """Twice the latest base fee plus the tip: stays valid through several full blocks."""
        block = self.rpc("eth_getBlockByNumber", "latest", False)
        base = int(block.get("baseFeePerGas", "0x0"), 16)
        return Fees(2 * base + priority, priority)

    def call(
        self, contract: Contract, fn: str, *args: Any, sender: str | None = None, block: str | int = "latest"
    ) -> Any:
        """Run a function without a transaction and decode its result; ContractRevert if it reverts."""
        tx: dict[str, Any] = {"to": contract.address, "data": _hex(encode_call(contract.abi, fn, args))}
        if sender is not None:
            tx["from"] = sender
        out = self._call_raw(tx, block, contract.abi, f"{fn} on {contract.address}")
        return decode_result(contract.abi, fn, out)

    def transact(
        self,
        contract: Contract,
        fn: str,
        *args: Any,
        sender: LocalAccount,
        nonce: int | None = None,
        gas: int | None = None,
        fees: Fees | None = None,
        value: int = 0,
        timeout: float = 30.0,
    ) -> Receipt:
        """Simulate, sign, send and wait for a call of `fn`; ContractRevert (nothing sent) if it would revert."""
        data = encode_call(contract.abi, fn, args)
        return self._send(
            contract.address,
            data,
            contract.abi,
            f"{fn} on {contract.address}",
            sender,
            nonce,
            gas,
            fees,
            value,
            timeout,
        )

    def deploy(
        self,
        artifact: Artifact,
        args: Sequence[Any],
        sender: LocalAccount,
        nonce: int | None = None,
        gas: int | None = None,
        fees: Fees | None = None,
        timeout: float = 30.0,
    ) -> Contract:
        """Deploy `artifact` with constructor `args`; returns the contract at the address in the receipt."""
        data = artifact.bytecode + encode_constructor(artifact.abi, args)
        receipt = self._send(
            None, data, artifact.abi, f"deploying {artifact.name}", sender, nonce, gas, fees, 0, timeout
        )
        if receipt.contract_address is None:
            raise EvmRpcError(f"deploying {artifact.name}: receipt has no contract address")
        return Contract(receipt.contract_address, artifact)

    def _send(
        self,
        to: str | None,
        data: bytes,
        abi: Iterable[AbiEntry],
        context: str,
        sender: LocalAccount,
        nonce: int | None,
        gas: int | None,
        fees: Fees | None,
        value: int,
        timeout: float,
    ) -> Receipt:
        abi = tuple(abi)
        call: dict[str, Any] = {"from": sender.address, "data": _hex(data), "value": hex(value)}
        if to is not None:
            call["to"] = to
        self._call_raw(call, "latest", abi, context)
        if gas is None:
            gas = int(self.rpc("eth_estimateGas", call), 16) * GAS_MARGIN_NUM // GAS_MARGIN_DEN
        fees = fees if fees is not None else self.suggest_fees()
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id(),
            "nonce": nonce if nonce is not None else self.nonce(sender.address),
            "to": to if to is not None else b"",
            "data": data,
            "value": value,
            "gas": gas,
            "maxFeePerGas": fees.max_fee_per_gas,
            "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
        }
        if to is None:
            del tx["to"]
        signed = sender.sign_transaction(tx)
        tx_hash = bytes.fromhex(
            str(self.rpc("eth_sendRawTransaction", _hex(bytes(signed.raw_transaction))))[2:]
        )
        receipt = self.wait_for_receipt(tx_hash, timeout)
        if receipt.status != 1:
            # Mined but reverted (the state moved between simulation and inclusion): say why if we still can.
            self._call_raw(call, receipt.block_number - 1, abi, context)
            raise ContractRevert(RevertReason("", (), b""), context)
        return receipt

    def wait_for_receipt(self, tx_hash: bytes, timeout: float = 30.0) -> Receipt:
        """Poll for the receipt of `tx_hash`; TransactionTimeout after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.rpc("eth_getTransactionReceipt", _hex(tx_hash))
            if r is not None:
                created = r.get("contractAddress")
                return Receipt(
                    tx_hash=tx_hash,
                    status=int(r["status"], 16),
                    block_number=int(r["blockNumber"], 16),
                    gas_used=int(r["gasUsed"], 16),
                    contract_address=to_checksum_address(created) if created else None,
                    logs=tuple(r.get("logs", [])),
                )
            if time.monotonic() >= deadline:
                raise TransactionTimeout(f"no receipt for 0x{tx_hash.hex()} after {timeout}s")
            time.sleep(0.05)

    def get_events(
        self, contract: Contract, name: str | None = None, from_block: int = 0, to_block: int | str = "latest"
    ) -> list[Event]:
        """Events of `contract` (optionally only `name`) in a block range, fetched by its address only."""
        tag = to_block if isinstance(to_block, str) else hex(to_block)
        logs = self.rpc(
            "eth_getLogs", {"address": contract.address, "fromBlock": hex(from_block), "toBlock": tag}
        )
        return [e for e in events_of(contract, logs) if name is None or e.name == name]


def events_of(contract: Contract, logs: Iterable[dict[str, Any]] | Receipt) -> list[Event]:
    """Decode the logs emitted by `contract` itself; logs of any other address are ignored, whatever they say."""
    raw = logs.logs if isinstance(logs, Receipt) else logs
    mine = contract.address.lower()
    out = []
    for log in raw:
        if str(log.get("address", "")).lower() != mine:
            continue
        event = decode_log(contract.abi, log)
        if event is not None:
            out.append(event)
    return out
