"""A small blocking client for the sequencer's JSON-RPC 2.0 API, for the user commands.

The transport, retries and response decoding are those of btcl2.bitcoin.rpc (one protocol core for
every JSON-RPC peer); only the envelope ("jsonrpc": "2.0") and the error's `data` member differ.
"""

import json
from collections.abc import Sequence
from typing import Any

from btcl2.bitcoin.rpc import Params, RPCError, RPCProtocolError, RPCUnavailable, SyncBitcoinRPC, _RPCCore
from btcl2.core.types import SignedTx
from btcl2.errors import Temporary

DEFAULT_SEQUENCER = "http://127.0.0.1:8600"
"""Where `btcl2 sequencer run` listens by default."""

TX_REJECTED = -32001
NOT_FOUND = -32004
RATE_LIMITED = -32005


class SequencerError(RPCError):
    """Raised when the sequencer answers with a JSON-RPC error; `data` is its optional detail object."""

    def __init__(self, code: int, message: str, method: str | None, data: Any) -> None:
        super().__init__(code, message, method)
        self.data = data

    def __str__(self) -> str:
        detail = self.data.get("message") if isinstance(self.data, dict) else None
        if isinstance(detail, str) and detail and detail not in self.message:
            return f"{self.message}: {detail}"
        return self.message


class SequencerUnavailable(Temporary):
    """Raised when the sequencer cannot be reached."""


class _SequencerCore(_RPCCore):
    """The Bitcoin client's protocol core with a JSON-RPC 2.0 envelope."""

    def request_body(self, method: str, params: Params) -> tuple[int, bytes]:
        req_id = next(self._ids)
        payload = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}
        return req_id, json.dumps(payload).encode()

    def batch_body(self, calls: Sequence[tuple[str, Params]]) -> tuple[list[int], bytes]:
        ids = [next(self._ids) for _ in calls]
        items = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": p}
            for i, (m, p) in zip(ids, calls, strict=True)
        ]
        return ids, json.dumps(items).encode()

    @staticmethod
    def _result(item: Any, method: str | None) -> Any:
        if not isinstance(item, dict):
            raise RPCProtocolError(f"unexpected JSON-RPC response {item!r}")
        error = item.get("error")
        if error is None:
            return item.get("result")
        if not isinstance(error, dict):
            return SequencerError(-1, str(error), method, None)
        return SequencerError(
            int(error.get("code", -1)), str(error.get("message", "")), method, error.get("data")
        )


class L2Client(SyncBitcoinRPC):
    """The sequencer API (docs: l2_* methods); results are the JSON values the API defines."""

    def __init__(self, url: str = DEFAULT_SEQUENCER, *, timeout: float = 30.0, retries: int = 1) -> None:
        super().__init__(url, timeout=timeout, retries=retries, backoff=0.2)
        self._core = _SequencerCore(url, None, None, None, retries, 0.2)

    def call(self, method: str, *params: Any, **named: Any) -> Any:
        """Call one method; SequencerUnavailable when nothing answers at the URL."""
        try:
            return super().call(method, *params, **named)
        except RPCUnavailable as e:
            raise SequencerUnavailable(f"sequencer at {self.url} is unreachable ({_reason(e)})") from None

    def send_transaction(self, signed: SignedTx) -> dict[str, Any]:
        """l2_sendTransaction: {"txHash", "status": "pending"}; SequencerError -32001 when rejected."""
        result: dict[str, Any] = self.call("l2_sendTransaction", "0x" + signed.encode().hex())
        return result

    def get_nonce(self, address: str) -> int:
        """l2_getNonce: the next nonce to use, counting pending transactions."""
        return int(self.call("l2_getNonce", address))

    def get_balance(self, address: str, batch: int | None = None) -> dict[str, Any]:
        """l2_getBalance: {"address", "balance", "nonce", "batch"} at the last sealed batch or `batch`."""
        params: list[Any] = [address] if batch is None else [address, batch]
        result: dict[str, Any] = self.call("l2_getBalance", *params)
        return result

    def get_transaction(self, tx_hash: str) -> dict[str, Any]:
        """l2_getTransaction: status, batch position and fields; SequencerError -32004 if unknown."""
        result: dict[str, Any] = self.call("l2_getTransaction", tx_hash)
        return result

    def get_deposit(self, txid: str, vout: int) -> dict[str, Any]:
        """l2_getDeposit: what the sequencer knows of a deposit outpoint."""
        result: dict[str, Any] = self.call("l2_getDeposit", txid, vout)
        return result

    def estimate_fee(self, kind: str = "transfer", script: bytes | None = None) -> dict[str, Any]:
        """l2_estimateFee: {"type", "minFee", "size", "daVbytes", "feeRate", "marginPct"}, the least fee the
        sequencer accepts now for a transaction of this kind (a withdrawal to `script`)."""
        params: list[Any] = [kind] if script is None else [kind, "0x" + script.hex()]
        result: dict[str, Any] = self.call("l2_estimateFee", *params)
        return result

    def min_fee(self, kind: str = "transfer", script: bytes | None = None) -> int:
        """The least fee the sequencer accepts now (l2_estimateFee's minFee)."""
        return int(self.estimate_fee(kind, script)["minFee"])

    def status(self) -> dict[str, Any]:
        """l2_status: chain id, head batch, tips, mempool size, federation address."""
        result: dict[str, Any] = self.call("l2_status")
        return result


def _reason(e: RPCUnavailable) -> str:
    # The shared core words the failure for a Bitcoin node; keep only the transport's reason.
    text = str(e)
    return text.split("unavailable: ", 1)[-1]
