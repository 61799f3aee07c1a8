"""Which figures each btcl2 service exports on /metrics, read at scrape time from what it already keeps.

Names follow Prometheus conventions (`btcl2_` prefix, `_total` for counters, base units); label `state`
carries the lifecycle stage so one query sums or splits them.
"""

import asyncio
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

from btcl2.httpguard import Snapshot
from btcl2.metrics import Counter, LabelValues, Registry, process_metrics

ANCHOR_WINDOW = 100
"""Batches (the latest ones) whose anchoring status is counted in btcl2_batches_by_anchor_status."""
DEPOSIT_REFRESH = 1.0
"""Seconds between two tallies of the deposit records by state (btcl2_deposits)."""


def sequencer_metrics(api: Any, seq: Any, poster: Any | None) -> tuple[Registry, Snapshot[Any]]:
    """The sequencer's (and, with --post, its poster's) figures; counts the API's JSON-RPC errors by
    wrapping `api.execute`. The deposit tally reads every deposit record, so it is not read per scrape: the
    returned Snapshot refreshes it in a worker thread every DEPOSIT_REFRESH seconds while the app runs."""
    registry = Registry()
    process_metrics(registry, "sequencer")
    sealed = registry.counter("btcl2_batches_sealed_total", "Batches sealed (the head batch number + 1).")
    sealed.set_function(lambda: 0 if seq.store.head_number is None else seq.store.head_number + 1)
    registry.gauge("btcl2_mempool_transactions", "L2 transactions waiting in the mempool.").set_function(
        lambda: len(seq.mempool)
    )
    deposits = registry.gauge("btcl2_deposits", "Deposits the sequencer knows, by state.", ["state"])
    tally: Snapshot[dict[LabelValues, float]] = Snapshot(
        "deposit tally", lambda: asyncio.to_thread(_deposit_states, seq), DEPOSIT_REFRESH
    )
    deposits.set_function(lambda: tally.value or {})
    withdrawals = registry.gauge("btcl2_withdrawals", "L2 withdrawals sealed in batches.", ["state"])
    withdrawals.set_function(lambda: {("requested",): float(len(seq.state.withdrawals))})
    registry.gauge("btcl2_bitcoin_tip_height", "Bitcoin tip height the watcher follows.").set_function(
        lambda: seq.view.chain.tip.height
    )
    registry.gauge("btcl2_l1_origin_height", "L1 origin height of the head batch.").set_function(
        lambda: seq.state.head.l1_origin_height
    )
    if poster is not None:
        poster_metrics(registry, poster, lambda: seq.store.head_number)
    errors = registry.counter(
        "btcl2_rpc_errors_total", "JSON-RPC error replies of the API, by method and code.", ["method", "code"]
    )
    count_rpc_errors(api, errors)
    return registry, tally


def _deposit_states(seq: Any) -> dict[LabelValues, float]:
    tally: Tally[str] = Tally(record.status.name.lower() for record in seq.store.deposits())
    tally["awaiting_credit"] = seq.pending_deposit_count()
    return {(state,): float(n) for state, n in tally.items()}


def poster_metrics(registry: Registry, poster: Any, head: Callable[[], int | None]) -> None:
    """Anchor confirmations of the head batch and anchoring status counts of the latest batches."""

    def head_confirmations() -> float:
        number = head()
        return 0.0 if number is None else float(poster.batch_anchor(number).confirmations)

    def by_status() -> dict[LabelValues, float]:
        number = head()
        if number is None:
            return {}
        tally = Tally(poster.batch_status(n) for n in range(max(0, number - ANCHOR_WINDOW + 1), number + 1))
        return {(s,): float(tally.get(s, 0)) for s in ("sealed", "broadcast", "anchored", "final")}

    registry.gauge(
        "btcl2_anchor_confirmations", "Confirmations of the head batch's anchor (fewest among its chunks)."
    ).set_function(head_confirmations)
    registry.gauge(
        "btcl2_batches_by_anchor_status",
        f"The latest {ANCHOR_WINDOW} batches by anchoring status.",
        ["state"],
    ).set_function(by_status)


def count_rpc_errors(api: Any, errors: Counter) -> None:
    """Count every JSON-RPC error reply of a SequencerAPI-like object (an `execute(request)` method)."""
    execute = api.execute

    def counted(req: Any) -> dict[str, Any] | None:
        reply: dict[str, Any] | None = execute(req)
        if reply is not None and "error" in reply:
            method = req.get("method") if isinstance(req, dict) else None
            name = method if isinstance(method, str) and method in api.methods else "other"
            errors.inc(name, str(reply["error"].get("code")))
        return reply

    api.execute = counted


def signer_metrics(signer: Any) -> tuple[Registry, Counter]:
    """A signer's figures; the returned counter is incremented per /sign round by HTTP status."""
    registry = Registry()
    process_metrics(registry, "signer")
    registry.counter("btcl2_signer_payouts_signed_total", "Payouts this signer has signed.").set_function(
        lambda: signer.signed_count()
    )
    rounds = registry.counter(
        "btcl2_signer_rounds_total", "Signature requests answered, by outcome.", ["outcome"]
    )
    return registry, rounds


def signer_app_metrics(app: Any, signer: Any) -> None:
    """GET /metrics on a signer's app (behind its bearer token, like every route) and rounds by outcome."""
    from aiohttp import web

    registry, rounds = signer_metrics(signer)
    outcomes = {200: "signed", 400: "bad_request", 409: "refused", 503: "node_error"}

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if request.path == "/sign":
            rounds.inc(outcomes.get(response.status, str(response.status)))
        return response

    app.middlewares.append(count)
    registry.add_route(app)


def start_standalone(
    service: str, port: int | None, gauges: dict[str, tuple[str, Callable[[], Any]]]
) -> None:
    """For services without an HTTP API: serve process metrics and `gauges` (name -> (help, read at scrape
    time)) on 127.0.0.1:`port` from a daemon thread; nothing without a port."""
    if port is None:
        return
    from btcl2.metrics import serve_in_thread

    registry = Registry()
    process_metrics(registry, service)
    for name, (help_text, read) in gauges.items():
        registry.gauge(name, help_text).set_function(read)
    serve_in_thread(registry, "127.0.0.1", port)


def relayer_gauges(
    bitcoin_rpc: str, cookie: str | None, evm: Any, bridge: Any, light_client: str | None
) -> dict[str, tuple[str, Callable[[], Any]]]:
    """The relayer's lag: Bitcoin blocks the EVM light client has not been given yet."""
    from btcl2.bitcoin.rpc import SyncBitcoinRPC
    from btcl2.bridge.artifacts import load_artifact
    from btcl2.bridge.evm import Contract

    node = SyncBitcoinRPC(bitcoin_rpc, cookie_file=cookie, retries=1, timeout=5.0)
    address = light_client or str(evm.call(bridge, "lightClient"))
    lc = Contract(address, load_artifact("BitcoinLightClient"))

    def lag() -> float:
        return float(int(node.call("getblockcount")) - int(evm.call(lc, "bestHeight")))

    return {"btcl2_relayer_lag_blocks": ("Bitcoin tip height minus the light client's best height.", lag)}


def node_gauges(
    url: str, cookie: str | None, user: str | None, password: str | None
) -> dict[str, tuple[str, Callable[[], Any]]]:
    """A regtest node's height and mempool size, read through its own RPC."""
    from btcl2.bitcoin.rpc import SyncBitcoinRPC

    rpc = SyncBitcoinRPC(url, cookie_file=cookie, user=user, password=password, retries=1, timeout=5.0)
    return {
        "btcl2_bitcoin_height": ("Height of the node's active chain.", lambda: rpc.call("getblockcount")),
        "btcl2_bitcoin_mempool_transactions": (
            "Transactions in the node's mempool.",
            lambda: rpc.call("getmempoolinfo")["size"],
        ),
    }
