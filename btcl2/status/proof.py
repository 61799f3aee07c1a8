"""Proof bundles (`btcl2 status ID --proof FILE`): everything a third party needs to check, with plain
functions and no trust in btcl2's servers, that

- a deposit is in a Bitcoin block (SPV: the transaction, its Merkle branch, the block's coinbase with a branch
  as long (the Bridge's depth rule), the 80-byte header), and pays the federation;
- an L2 transaction is in a batch (the batch header, whose hash commits to its transactions root, and the
  Merkle branch of the transaction's hash under that root);
- an account holds a balance after that batch (the sparse Merkle proof under the header's post-state root).

Format (JSON, hex without 0x unless noted): {"version": 1, "id", "spv"?, "batch"?, "inclusion"?, "state": [...]}.
Checking that the batch header itself is anchored on Bitcoin is `btcl2 replay`'s job; the bundle names the
anchor txids so the reader can look them up.
"""

from typing import Any

from btcl2.bitcoin.block import Block, BlockHeader
from btcl2.bitcoin.hashes import sha256d
from btcl2.bitcoin.tx import Tx
from btcl2.bridge.spv import BadSpvProof, MintProof, check_mint_proof, mint_proof
from btcl2.core.merkle import merkle_branch, verify_branch
from btcl2.core.params import Params
from btcl2.core.smt import Proof, verify_proof
from btcl2.core.state import Account
from btcl2.core.types import BatchHeader
from btcl2.hexstr import from_hex
from btcl2.status.lifecycle import Lifecycle
from btcl2.status.lookup import Sources

BUNDLE_VERSION = 1


def _h(data: bytes) -> str:
    return data.hex()


def _unhex(text: str) -> bytes:
    return from_hex(text[2:] if text[:2].lower() == "0x" else text)


async def spv_section(src: Sources, txid: str, vout: int, block_hash: str) -> dict[str, Any]:
    """The SPV proof of output `vout` of `txid` in block `block_hash` (both display order)."""
    block = Block.decode(bytes.fromhex(await src.bitcoin("getblock", block_hash, 0)))
    proof = mint_proof(block, bytes.fromhex(txid)[::-1], vout)
    return {
        "txid": txid,
        "vout": vout,
        "rawTx": _h(proof.raw_tx_no_witness),
        "merkleProof": [_h(s) for s in proof.merkle_proof],
        "txIndex": proof.tx_index,
        "coinbaseTx": _h(proof.coinbase_tx),
        "coinbaseProof": [_h(s) for s in proof.coinbase_proof],
        "blockHeader": _h(block.header.encode()),
        "blockHash": block_hash,
        "federationScript": _h(src.params.federation_script_pubkey),
    }


async def batch_section(src: Sources, number: int) -> tuple[dict[str, Any], list[str]]:
    """(the batch header section, the batch's transaction hashes) for batch `number`."""
    raw = await src.l2("l2_getRawBatch", number)
    batch_doc = await src.l2("l2_getBatch", number)
    from btcl2.core.types import Batch

    batch = Batch.decode(_unhex(raw))
    anchor = batch_doc.get("anchor") or {}
    section = {
        "number": number,
        "header": _h(batch.header.encode()),
        "hash": _h(batch.header.hash),
        "anchorTxids": list(anchor.get("txids") or ()),
    }
    return section, ["0x" + t.tx_hash.hex() for t in batch.transactions]


async def state_section(src: Sources, address: str, batch: int) -> dict[str, Any]:
    """The state proof of `address` at `batch` (l2_getProof)."""
    got = await src.l2("l2_getProof", address, batch)
    return {
        "address": got["address"],
        "batch": got["batch"],
        "stateRoot": got["stateRoot"][2:],
        "account": got["account"],
        "proof": got["proof"][2:],
    }


async def build_bundle(life: Lifecycle, src: Sources) -> dict[str, Any]:
    """The proof bundle of a lifecycle: SPV for a deposit, batch inclusion for an L2 transaction, and the
    state proofs of the accounts involved at the batch that credited / holds it."""
    bundle: dict[str, Any] = {"version": BUNDLE_VERSION, "id": life.id, "kind": life.kind, "state": []}
    number = life.info.get("batch") if life.kind != "batch" else life.info.get("number")
    if life.kind == "deposit":
        raw = await src.bitcoin("getrawtransaction", life.info["txid"], 1)
        if raw.get("blockhash"):
            bundle["spv"] = await spv_section(src, life.info["txid"], life.info["vout"], raw["blockhash"])
    if number is None:
        return bundle
    header, hashes = await batch_section(src, int(number))
    bundle["batch"] = header
    if life.kind in ("transfer", "withdrawal", "exit"):
        index = hashes.index(life.id)
        bundle["inclusion"] = {
            "txHash": life.id[2:],
            "index": index,
            "branch": [
                {"left": left, "hash": _h(h)} for left, h in merkle_branch([_unhex(x) for x in hashes], index)
            ],
        }
    accounts = [life.info.get(k) for k in ("recipient", "from", "to")]
    for address in dict.fromkeys(a for a in accounts if a):
        bundle["state"].append(await state_section(src, address, int(number)))
    return bundle


def verify_bundle(bundle: dict[str, Any], params: Params) -> list[str]:
    """Check every section of a bundle with the plain check functions; the list of failures (empty: valid)."""
    failures: list[str] = []
    if bundle.get("version") != BUNDLE_VERSION:
        return [f"unknown bundle version {bundle.get('version')}"]
    if "spv" in bundle:
        failures += _verify_spv(bundle["spv"], params)
    header = None
    if "batch" in bundle:
        header = BatchHeader.decode(_unhex(bundle["batch"]["header"]))
        if _h(header.hash) != bundle["batch"]["hash"] or header.number != bundle["batch"]["number"]:
            failures.append("batch: header does not hash to the stated batch hash/number")
    if "inclusion" in bundle:
        inc = bundle["inclusion"]
        branch = [(bool(s["left"]), _unhex(s["hash"])) for s in inc["branch"]]
        if header is None or not verify_branch(header.transactions_root, _unhex(inc["txHash"]), branch):
            failures.append("inclusion: the transaction is not under the batch's transactions root")
    for st in bundle.get("state", []):
        failures += _verify_state(st, header)
    return failures


def _verify_spv(spv: dict[str, Any], params: Params) -> list[str]:
    out = []
    raw = _unhex(spv["rawTx"])
    txid = sha256d(raw)
    header = BlockHeader.decode(_unhex(spv["blockHeader"]))
    if txid[::-1].hex() != spv["txid"]:
        out.append("spv: the raw transaction does not hash to the txid")
    if header.hash[::-1].hex() != spv["blockHash"]:
        out.append("spv: the header does not hash to the block hash")
    proof = MintProof(
        raw,
        tuple(_unhex(s) for s in spv["merkleProof"]),
        header.hash,
        int(spv["vout"]),
        int(spv["txIndex"]),
        _unhex(spv.get("coinbaseTx", "")),
        tuple(_unhex(s) for s in spv.get("coinbaseProof", [])),
    )
    try:
        check_mint_proof(proof, header.merkle_root)  # the Bridge's rules, the coinbase depth rule included
    except BadSpvProof as e:
        out.append(f"spv: {e}")
    if int.from_bytes(header.hash, "little") > _target(header.bits):
        out.append("spv: the header's proof of work is below its target")
    tx = Tx.decode(raw)
    vout = int(spv["vout"])
    if not 0 <= vout < len(tx.vout) or tx.vout[vout].script_pubkey != params.federation_script_pubkey:
        out.append("spv: the output does not pay the federation")
    return out


def _target(bits: int) -> int:
    exponent, mantissa = bits >> 24, bits & 0x7FFFFF
    return mantissa << (8 * (exponent - 3)) if exponent > 3 else mantissa >> (8 * (3 - exponent))


def _verify_state(st: dict[str, Any], header: BatchHeader | None) -> list[str]:
    out = []
    root = _unhex(st["stateRoot"])
    if header is not None and root != header.post_state_root:
        out.append(f"state: {st['address']}: the root is not the batch's post-state root")
    acct = st.get("account")
    value = None if acct is None else Account(acct["balance"], acct["nonce"]).leaf
    if not verify_proof(root, _unhex(st["address"]), value, Proof.decode(_unhex(st["proof"]))):
        out.append(f"state: {st['address']}: the proof does not match the root")
    return out
