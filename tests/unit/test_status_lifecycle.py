"""btcl2.status: identifiers, and lifecycles assembled from canned chain answers (the functional test
drives the real processes); the JSON log format."""

import asyncio
import json
import logging
from typing import Any

import pytest

from btcl2.bitcoin.rpc import RPCError
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.core.deposits import DepositKind, deposit_tag_script
from btcl2.core.params import Params
from btcl2.logs import JsonFormatter, setup_logging
from btcl2.status.lifecycle import (
    BadIdentifier,
    batch_lifecycle,
    deposit_lifecycle,
    parse_query,
    render_text,
    tx_lifecycle,
)
from btcl2.status.lookup import NotFoundAnywhere, Sources, lookup

TXID = "ab" * 32
TXH = "0x" + "cd" * 32


def names(life: Any) -> list[tuple[str, bool]]:
    return [(s.name, s.done) for s in life.stages]


def test_parse_query() -> None:
    assert parse_query(f"{TXID}:1").kind == "deposit" and parse_query(f"{TXID}:1").vout == 1
    assert parse_query(TXID.upper()).txid == TXID and parse_query(TXID).vout is None
    assert parse_query(TXH.upper().replace("0X", "0x")).kind == "tx"
    assert parse_query("12").number == 12 and parse_query("batch:3").number == 3
    assert parse_query(f"l2:{TXH}").kind == "withdrawal" and parse_query(f"evm:{TXH}").ref == f"evm:{TXH}"
    for bad in ("", "0x12", TXID + ":x", "zz" * 32, "batch:x", "evm:7", "evm:0x12"):
        with pytest.raises(BadIdentifier):
            parse_query(bad)


def btc_view(confs: int, **extra: Any) -> dict[str, Any]:
    return {"txid": TXID, "vout": 0, "confirmations": confs, "blocktime": 1_700_000_000 if confs else None,
            "kind": "l2", "recipient": "0x" + "11" * 20, "amount_sats": 50_000, "status": "seen", **extra}  # fmt: skip


def batch_doc(status: str | None, confs: int = 0) -> dict[str, Any]:
    anchor = None if status is None else {"status": status, "txids": ["ee" * 32], "confirmations": confs}
    return {"number": 4, "hash": "0x" + "44" * 32, "timestamp": 1_700_000_100, "transactions": [TXH],
            "deposits": [], "anchor": anchor}  # fmt: skip


def test_deposit_stages() -> None:
    seen = deposit_lifecycle(btc_view(0), None, None, 2, 2)
    assert seen.status == "seen" and names(seen) == [("seen", True), ("confirmed", False), ("credited", False)]
    confirming = deposit_lifecycle(btc_view(1), {"status": "seen", "batch": None}, None, 2, 2)
    assert confirming.status == "seen" and confirming.stages[1].detail == "1/2"
    credited = deposit_lifecycle(btc_view(3), {"status": "credited", "batch": 4}, batch_doc("broadcast"), 2, 2)
    assert credited.status == "credited" and credited.stages[2].detail == "batch 4"
    assert credited.stages[2].time == 1_700_000_100
    final = deposit_lifecycle(btc_view(5), {"status": "credited", "batch": 4}, batch_doc("final", 2), 2, 2, 1_700_000_200)
    assert final.status == "final" and final.stages[3].time == 1_700_000_200 and final.stages[3].txid == "ee" * 32
    rejected = deposit_lifecycle(btc_view(3, status="rejected", reason="below minimum"), None, None, 2, 2)
    assert rejected.status == "rejected" and rejected.stages[-1].detail == "below minimum"
    evm = deposit_lifecycle(btc_view(3, kind="evm"), None, None, 2, 2, None, {"evm_tx": "0x99", "evm_block": 7})
    assert evm.status == "minted" and evm.stages[-1].chain == "evm"


def test_tx_stages() -> None:
    tx = {"txHash": TXH, "status": "pending", "batch": None, "index": None, "type": "transfer", "amount": 5}
    assert tx_lifecycle(tx, None, 2).status == "pending"
    sealed = tx_lifecycle({**tx, "status": "sealed", "batch": 4, "index": 0}, batch_doc("broadcast"), 2)
    assert sealed.status == "sealed" and names(sealed)[2:] == [("anchored", False), ("final", False)]
    anchored = tx_lifecycle({**tx, "status": "anchored", "batch": 4, "index": 0}, batch_doc("anchored", 1), 2)
    assert anchored.status == "anchored" and anchored.stages[3].detail == "1/2"
    no_poster = tx_lifecycle({**tx, "status": "sealed", "batch": 4, "index": 0}, batch_doc(None), 2)
    assert no_poster.status == "sealed" and "without --post" in (no_poster.stages[2].detail or "")
    wd = {**tx, "type": "withdrawal", "status": "final", "batch": 4, "index": 0}
    paid = tx_lifecycle(wd, batch_doc("final", 3), 2, None, {"status": "confirmed", "txid": "ff" * 32})
    assert paid.kind == "withdrawal" and paid.status == "paid" and paid.stages[-1].txid == "ff" * 32
    rejected = tx_lifecycle({**tx, "status": "rejected", "reason": "BadNonce: x"}, None, 2)
    assert rejected.status == "rejected"
    assert any("sealed" in line for line in render_text(sealed))


def test_batch_stages() -> None:
    life = batch_lifecycle(batch_doc("final", 2), 2)
    assert life.status == "final" and life.info["transactions"] == 1
    assert json.loads(json.dumps(life.to_json()))["stages"][0]["name"] == "sealed"


def test_lookup_with_canned_sources() -> None:
    async def l2(method: str, *params: Any) -> Any:
        if method == "l2_getTransaction":
            if params[0] != TXH:
                raise RPCError(-32004, "transaction not found", method)
            return {"txHash": TXH, "status": "sealed", "batch": 4, "index": 0, "type": "transfer"}
        if method == "l2_getBatch":
            return batch_doc("anchored", 1)
        raise AssertionError(method)

    async def bitcoin(method: str, *params: Any) -> Any:
        assert method == "getrawtransaction"
        return {"blocktime": 1_700_000_300}

    src = Sources(l2, bitcoin, Params())
    life = asyncio.run(lookup(TXH, src))
    assert life.status == "anchored" and life.stages[2].time == 1_700_000_300
    with pytest.raises(NotFoundAnywhere):
        asyncio.run(lookup("0x" + "00" * 32, src))


def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(logging.INFO, "json")
    logging.getLogger("btcl2.test").info("sealed batch %d", 3, extra={"batch": 3})
    doc = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert doc["msg"] == "sealed batch 3" and doc["batch"] == 3 and doc["level"] == "info"
    assert doc["logger"] == "btcl2.test" and doc["ts"].endswith("Z")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    try:
        raise ValueError("inner")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert "ValueError: inner" in json.loads(JsonFormatter().format(record))["exc"]
    with pytest.raises(ValueError):
        setup_logging(logging.INFO, "xml")
    setup_logging(logging.WARNING, "text")


def evm_deposit_tx() -> Tx:
    params = Params()
    tag = TxOut(0, deposit_tag_script(DepositKind.EVM, b"\x22" * 20))
    fed = TxOut(1_000_000, params.federation_script_pubkey)
    return Tx(2, (TxIn(OutPoint(b"\x01" * 32, 0)),), (fed, tag))


def evm_deposit_sources(mint: Any) -> tuple[Sources, str, list[tuple[str, int]]]:
    tx, asked = evm_deposit_tx(), []

    async def l2(method: str, *params: Any) -> Any:
        raise AssertionError("an EVM deposit is not the sequencer's: " + method)

    async def bitcoin(method: str, *params: Any) -> Any:
        return {"hex": tx.hex(), "confirmations": 9, "blockhash": "aa" * 32, "blocktime": 1_700_000_000}

    async def evm_mint(txid: str, vout: int) -> dict[str, Any] | None:
        asked.append((txid, vout))
        return mint

    return Sources(l2, bitcoin, Params(), None, evm_mint), tx.txid_hex, asked


def test_evm_deposit_minted_comes_from_the_bridge() -> None:
    """The defect `btcl2 status` had: an EVM deposit stayed `confirmed` because nobody asked the Bridge."""
    src, txid, asked = evm_deposit_sources({"status": "minted", "evm_tx": "0x" + "99" * 32, "evm_block": 12})
    life = asyncio.run(lookup(f"{txid}:0", src))
    assert asked == [(txid, 0)]
    assert life.status == "minted" and life.stages[-1].chain == "evm" and life.stages[-1].done
    assert life.stages[-1].txid == "0x" + "99" * 32 and life.stages[-1].detail == "block 12"
    pending, _, _ = evm_deposit_sources(None)
    waiting = asyncio.run(lookup(f"{txid}:0", pending))
    assert waiting.status == "confirmed" and names(waiting)[-1] == ("minted", False)
    assert waiting.stages[-1].detail is None


def test_evm_deposit_without_an_evm_view_says_the_evm_was_not_asked() -> None:
    src, txid, _ = evm_deposit_sources(None)
    blind = Sources(src.l2, src.bitcoin, src.params)
    life = asyncio.run(lookup(f"{txid}:0", blind))
    assert names(life)[-1] == ("minted", False) and "EVM not asked" in (life.stages[-1].detail or "")


def test_status_takes_the_devnets_evm_and_bridge() -> None:
    """On a devnet `btcl2 status` reads the EVM node and the Bridge from devnet.toml, as `deposit status` does."""
    from btcl2.cli import cli
    from btcl2.devnet.discover import default_map_for

    values = {"bitcoin_rpc": "http://b", "evm_rpc": "http://e", "bridge": "0xB", "bridge_address": "0xB"}
    entry = default_map_for(cli, values, None)["status"]
    assert entry["evm_rpc"] == "http://e" and entry["bridge_address"] == "0xB"
