"""Where the poster reads sealed batches and its coins from.

In the sequencer's process (`btcl2 sequencer run --post`) it reads the sequencer's store directly; as
its own process (`btcl2 poster run`) it asks the sequencer's JSON-RPC API (`l2_status`,
`l2_getRawBatch`). Coins come from the Bitcoin node (`scantxoutset`, `gettxout`), so the poster needs
no node-side wallet.
"""

import json
from collections.abc import Iterable
from typing import Any, Protocol

import aiohttp

from btcl2.bitcoin.rpc import BitcoinRPC, RPCError, to_sats
from btcl2.bitcoin.tx import OutPoint, TxOut
from btcl2.core.types import Batch
from btcl2.errors import Critical, Temporary
from btcl2.sequencer.store import SequencerStore

COINBASE_MATURITY = 100
"""A coinbase output may be spent in a block at least this many blocks above its own."""


class BatchSource(Protocol):
    """Sealed batches, by number."""

    async def head(self) -> int | None:
        """The number of the last sealed batch, None before the first."""
        ...

    async def batch(self, number: int) -> Batch | None:
        """A sealed batch, None if there is none of that number."""
        ...


class StoreBatchSource:
    """Batches read from the sequencer's own store (same process)."""

    def __init__(self, store: SequencerStore) -> None:
        self.store = store

    async def head(self) -> int | None:
        """The store's head batch number."""
        return self.store.head_number

    async def batch(self, number: int) -> Batch | None:
        """The sealed batch `number`."""
        return self.store.batch(number)


class RpcBatchSource:
    """Batches fetched from a running sequencer's JSON-RPC API."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def call(self, method: str, *params: Any) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        try:
            async with self._session.post(self.url, data=json.dumps(body)) as res:
                reply = json.loads(await res.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Temporary(f"sequencer {self.url} unreachable: {exc}") from exc
        if "error" in reply:
            return reply["error"]
        return {"result": reply.get("result")}

    async def head(self) -> int | None:
        """`l2_status`'s headBatch."""
        answer = await self.call("l2_status")
        if "result" not in answer:
            raise Critical(f"sequencer l2_status failed: {answer}")
        head = answer["result"]["headBatch"]
        return None if head is None else int(head)

    async def batch(self, number: int) -> Batch | None:
        """`l2_getRawBatch(number)` decoded; None when the sequencer has no such batch."""
        answer = await self.call("l2_getRawBatch", number)
        if "result" not in answer:
            if answer.get("code") == -32004:
                return None
            raise Critical(f"sequencer l2_getRawBatch({number}) failed: {answer}")
        return Batch.decode(bytes.fromhex(str(answer["result"])[2:]))

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def spendable_coins(
    rpc: BitcoinRPC, address: str, script_pubkey: bytes, tip: int, exclude: Iterable[OutPoint]
) -> list[tuple[OutPoint, TxOut]]:
    """Confirmed, mature outputs paying `address` that no mempool transaction spends, minus `exclude`.

    Only confirmed coins: an anchor that spent an unconfirmed parent would be evicted with it when that
    parent is replaced, and the chunks of one batch must not chain (see docs/PROTOCOL.md, "Anchors").
    """
    result = await rpc.call("scantxoutset", "start", [f"addr({address})"])
    if not isinstance(result, dict) or not result.get("success", False):
        raise Critical(f"scantxoutset failed: {result!r}")
    skip = set(exclude)
    coins: list[tuple[OutPoint, TxOut]] = []
    for u in result["unspents"]:
        op = OutPoint(bytes.fromhex(u["txid"])[::-1], int(u["vout"]))
        if op in skip:
            continue
        if u.get("coinbase") and tip - int(u["height"]) + 1 < COINBASE_MATURITY:
            continue
        coins.append((op, TxOut(to_sats(u["amount"]), script_pubkey)))
    if not coins:
        return []
    answers = await rpc.batch([("gettxout", [op.txid_hex, op.vout, True]) for op, _ in coins])
    # gettxout with include_mempool answers null for an output a mempool transaction spends.
    return [c for c, a in zip(coins, answers, strict=True) if a is not None and not isinstance(a, RPCError)]
