"""The poster's part of the sequencer's JSON-RPC API: l2_getBatch's "anchor" field and l2_getRawBatch.

Installed on the sequencer's API by `btcl2 sequencer run`; without `--post` the "anchor" field is null
(the process does not know), and l2_getRawBatch serves a separate `btcl2 poster run`.
"""

from typing import Any

from btcl2.poster.journal import BatchAnchor
from btcl2.poster.service import Poster
from btcl2.sequencer.api import SequencerAPI, batch_json, parse_batch_ref, parse_int
from btcl2.sequencer.service import Sequencer


def anchor_json(anchor: BatchAnchor) -> dict[str, Any]:
    """{"status", "txids", "confirmations"}; txids in RPC (display) order."""
    return {"status": anchor.status, "txids": list(anchor.txids), "confirmations": anchor.confirmations}


def install(api: SequencerAPI, seq: Sequencer, poster: Poster | None) -> None:
    """Add the poster's methods (and field) to the sequencer's API."""

    def get_batch(p: dict[str, Any]) -> dict[str, Any]:
        doc = batch_json(seq.batch(parse_batch_ref(p["number"], "number")))
        doc["anchor"] = None if poster is None else anchor_json(poster.batch_anchor(doc["number"]))
        return doc

    def get_raw_batch(p: dict[str, Any]) -> str:
        return "0x" + seq.batch(parse_int(p["number"], "number", 0, 2**64 - 1)).encode().hex()

    api.methods["l2_getBatch"] = (("number",), 1, get_batch)
    api.methods["l2_getRawBatch"] = (("number",), 1, get_raw_batch)
