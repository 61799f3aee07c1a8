"""Raw-transaction RPCs of the embedded node: create, decode, sign, test and send."""

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from btcl2.bitcoin.address import REGTEST
from btcl2.bitcoin.keys import InvalidKey, PrivateKey
from btcl2.bitcoin.rpc import RPCError
from btcl2.bitcoin.script import OP_RETURN, is_unspendable, push_data, to_asm
from btcl2.bitcoin.sign import PrevoutInfo, sign_transaction
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bitcoin.univ import SpentOutput, btc, tx_to_univ
from btcl2.regtest.coins import decode_undo
from btcl2.regtest.mempool import RejectKind, TxRejected, fee_for
from btcl2.regtest.rpc_util import (
    NETWORK,
    amount_from_value,
    decode_tx,
    parse_hash,
    parse_hex,
    parse_verbosity,
    script_for_address,
)
from btcl2.regtest.rpcargs import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_VERIFY_ALREADY_IN_UTXO_SET,
    RPC_VERIFY_ERROR,
    RPC_VERIFY_REJECTED,
    Arg,
    registry,
)
from btcl2.storage import schema as S

if TYPE_CHECKING:
    from btcl2.regtest.rpcserver import RPCServer

rpc = registry.method
DEFAULT_MAX_FEE_RATE = 10_000_000  # 0.10 BTC/kvB, Core's DEFAULT_MAX_RAW_TX_FEE_RATE
SEQUENCE_FINAL = 0xFFFFFFFF
SEQUENCE_NONFINAL = 0xFFFFFFFE
SEQUENCE_RBF = 0xFFFFFFFD


@rpc(
    "getrawtransaction",
    "rawtransactions",
    Arg("txid", "hex", True),
    Arg("verbosity|verbose", "any"),
    Arg("blockhash", "hex"),
    summary="Return the raw transaction data (hex, or an object with verbosity 1, and prevouts with 2).",
)
def getrawtransaction(srv: "RPCServer", txid_hex: str, verbosity: Any, blockhash: str | None) -> Any:
    node = srv.node
    chain = node.chain
    txid = parse_hash(txid_hex, "parameter 1")
    level = parse_verbosity(verbosity, 0)
    block_hash = None
    if blockhash is not None:
        block_hash = parse_hash(blockhash, "parameter 3")
        if chain.entry(block_hash) is None:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Block hash not found")
    if txid == chain.block(chain.hash_at(0)).txs[0].txid:
        raise RPCError(
            RPC_INVALID_ADDRESS_OR_KEY,
            "The genesis block coinbase is not considered an ordinary transaction and cannot be retrieved",
        )
    tx, found_in = _find_tx(srv, txid, block_hash)
    if tx is None:
        msg = (
            "No such transaction found in the provided block"
            if block_hash
            else "No such mempool or blockchain transaction"
        )
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, msg + ". Use gettransaction for wallet transactions.")
    if level <= 0:
        return tx.hex()
    result: dict[str, Any] = {}
    if block_hash is not None:
        result["in_active_chain"] = chain.is_active(block_hash)
    prevouts = _block_prevouts(srv, tx, found_in) if level >= 2 and found_in is not None else None
    result.update(tx_to_univ(tx, NETWORK, prevouts=prevouts, verbosity=2 if prevouts else 1))
    if found_in is not None:
        result["blockhash"] = found_in[::-1].hex()
        e = chain.require_entry(found_in)
        if chain.is_active(found_in):
            result["confirmations"] = chain.height - e.height + 1
            result["time"] = e.header.time
            result["blocktime"] = e.header.time
        else:
            result["confirmations"] = 0
    return result


def _find_tx(srv: "RPCServer", txid: bytes, block_hash: bytes | None) -> tuple[Tx | None, bytes | None]:
    chain = srv.node.chain
    if block_hash is None:
        entry = srv.node.mempool.entries.get(txid)
        if entry is not None:
            return entry.tx, None
        block_hash = chain.tx_block(txid)
        if block_hash is None:
            return None, None
    for tx in chain.block(block_hash).txs:
        if tx.txid == txid:
            return tx, block_hash
    return None, None


def _block_prevouts(srv: "RPCServer", tx: Tx, block_hash: bytes) -> list[SpentOutput] | None:
    chain = srv.node.chain
    undo_raw = chain.db.get(S.REGTEST_UNDO + block_hash)
    if tx.is_coinbase or undo_raw is None:
        return None
    undo = decode_undo(undo_raw)
    pos = 0
    for t in chain.block(block_hash).txs[1:]:
        if t.txid == tx.txid:
            return [SpentOutput(c.out, c.height, c.is_coinbase) for c in undo[pos : pos + len(t.vin)]]
        pos += len(t.vin)
    return None


@rpc(
    "decoderawtransaction",
    "rawtransactions",
    Arg("hexstring", "hex", True),
    Arg("iswitness", "bool"),
    summary="Return a JSON object representing the serialized, hex-encoded transaction.",
)
def decoderawtransaction(srv: "RPCServer", hexstring: str, iswitness: bool | None) -> dict[str, Any]:
    return tx_to_univ(decode_tx(hexstring), NETWORK, include_hex=False)


@rpc("decodescript", "rawtransactions", Arg("hexstring", "hex", True), summary="Decode a hex-encoded script.")
def decodescript(srv: "RPCServer", hexstring: str) -> dict[str, Any]:
    from btcl2.bitcoin.univ import script_pubkey_to_univ

    script = parse_hex(hexstring, "argument")
    out = script_pubkey_to_univ(script, NETWORK, include_hex=False)
    out["asm"] = to_asm(script)
    return out


def _parse_inputs(inputs: list[Any], locktime: int, rbf: bool) -> list[TxIn]:
    vin = []
    for item in inputs:
        if not isinstance(item, dict):
            raise RPCError(
                -3, "JSON value of type " + type(item).__name__ + " is not of expected type object"
            )
        txid = parse_hash(item.get("txid"), "txid")
        vout = item.get("vout")
        if vout is None:
            raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, missing vout key")
        if not isinstance(vout, int) or isinstance(vout, bool):
            raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, vout must be a number")
        if vout < 0:
            raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
        default_seq = SEQUENCE_RBF if rbf else (SEQUENCE_NONFINAL if locktime else SEQUENCE_FINAL)
        seq = item.get("sequence", default_seq)
        if not isinstance(seq, int) or not 0 <= seq <= 0xFFFFFFFF:
            raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, sequence number is out of range")
        vin.append(TxIn(OutPoint(txid, vout), b"", seq))
    return vin


def _parse_outputs(outputs: Any) -> list[TxOut]:
    if isinstance(outputs, list):
        merged: dict[str, Any] = {}
        has_data = False
        for obj in outputs:
            if not isinstance(obj, dict):
                raise RPCError(
                    RPC_INVALID_PARAMETER, "Invalid parameter, key-value pair not an object as expected"
                )
            if len(obj) != 1:
                raise RPCError(
                    RPC_INVALID_PARAMETER, "Invalid parameter, key-value pair must contain exactly one key"
                )
            key = next(iter(obj))
            if key == "data":
                if has_data:
                    raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, duplicate key: data")
                has_data = True
            elif key in merged:
                raise RPCError(RPC_INVALID_PARAMETER, f"Invalid parameter, duplicated address: {key}")
            merged[key] = obj[key]
        outputs = merged
    if not isinstance(outputs, dict):
        raise RPCError(-3, "JSON value is not an object as expected")
    vout = []
    seen: set[bytes] = set()
    for name, value in outputs.items():
        if name == "data":
            vout.append(TxOut(0, bytes([OP_RETURN]) + push_data(parse_hex(str(value), "Data"))))
            continue
        try:
            spk = script_for_address(name)
        except RPCError:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, f"Invalid Bitcoin address: {name}") from None
        amount = amount_from_value(value)
        if spk in seen:
            raise RPCError(RPC_INVALID_PARAMETER, f"Invalid parameter, duplicated address: {name}")
        seen.add(spk)
        vout.append(TxOut(amount, spk))
    return vout


@rpc(
    "createrawtransaction",
    "rawtransactions",
    Arg("inputs", "arr", True),
    Arg("outputs", "any", True),
    Arg("locktime", "num"),
    Arg("replaceable", "bool"),
    Arg("version", "num"),
    summary="Create a transaction spending the given inputs and creating new outputs (unsigned).",
)
def createrawtransaction(
    srv: "RPCServer",
    inputs: list[Any],
    outputs: Any,
    locktime: int | None,
    replaceable: bool | None,
    version: int | None,
) -> str:
    locktime = 0 if locktime is None else locktime
    if not 0 <= locktime <= 0xFFFFFFFF:
        raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, locktime out of range")
    version = 2 if version is None else version
    if not 1 <= version <= 3:
        raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, version out of range(1~3)")
    vin = _parse_inputs(inputs, locktime, bool(replaceable))
    tx = Tx(version, tuple(vin), tuple(_parse_outputs(outputs)), locktime)
    return tx.hex()


def _prevtx_infos(srv: "RPCServer", tx: Tx, prevtxs: list[Any] | None) -> dict[OutPoint, PrevoutInfo]:
    infos: dict[OutPoint, PrevoutInfo] = {}
    for txin in tx.vin:
        out = srv.node.spent_output(txin.prevout)
        if out is not None:
            infos[txin.prevout] = PrevoutInfo(out.script_pubkey, out.value)
    for p in prevtxs or []:
        if not isinstance(p, dict):
            raise RPCError(-3, "expected object")
        for key in ("txid", "vout", "scriptPubKey"):
            if key not in p:
                raise RPCError(-3, f"Missing {key}")
        op = OutPoint(parse_hash(p["txid"], "txid"), int(p["vout"]))
        if op.vout < 0:
            raise RPCError(RPC_DESERIALIZATION_ERROR, "vout cannot be negative")
        spk = parse_hex(p["scriptPubKey"], "scriptPubKey")
        existing = infos.get(op)
        if existing is not None and existing.script_pubkey != spk:
            raise RPCError(
                RPC_DESERIALIZATION_ERROR,
                f"Previous output scriptPubKey mismatch:\n{to_asm(existing.script_pubkey)}\nvs:\n{to_asm(spk)}",
            )
        amount = amount_from_value(p["amount"]) if "amount" in p else (existing.amount if existing else None)
        redeem = parse_hex(p["redeemScript"], "redeemScript") if "redeemScript" in p else None
        witness = parse_hex(p["witnessScript"], "witnessScript") if "witnessScript" in p else None
        infos[op] = PrevoutInfo(spk, amount, redeem, witness)
    return infos


_SIGHASH_NAMES = {
    "DEFAULT": 0,
    "ALL": 1,
    "NONE": 2,
    "SINGLE": 3,
    "ALL|ANYONECANPAY": 0x81,
    "NONE|ANYONECANPAY": 0x82,
    "SINGLE|ANYONECANPAY": 0x83,
}


@rpc(
    "signrawtransactionwithkey",
    "rawtransactions",
    Arg("hexstring", "str", True),
    Arg("privkeys", "arr", True),
    Arg("prevtxs", "arr"),
    Arg("sighashtype", "str"),
    summary="Sign inputs for a raw transaction with the given base58-encoded private keys.",
)
def signrawtransactionwithkey(
    srv: "RPCServer", hexstring: str, privkeys: list[Any], prevtxs: list[Any] | None, sighashtype: str | None
) -> dict[str, Any]:
    tx = decode_tx(hexstring)
    keys = []
    for wif in privkeys:
        if not isinstance(wif, str):
            raise RPCError(-3, "JSON value is not a string as expected")
        try:
            key, _compressed, prefix = PrivateKey.from_wif(wif)
        except InvalidKey:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid private key") from None
        if prefix != REGTEST.wif_prefix:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid private key")
        keys.append(key)
    hashtype = _SIGHASH_NAMES.get(sighashtype or "DEFAULT")
    if hashtype is None:
        raise RPCError(RPC_INVALID_PARAMETER, f"{sighashtype} is not a valid sighash parameter.")
    result = sign_transaction(tx, keys, _prevtx_infos(srv, tx, prevtxs), hashtype)
    out: dict[str, Any] = {"hex": result.tx.hex(), "complete": result.complete}
    if result.errors:
        out["errors"] = [e.to_json() for e in result.errors]
    return out


def _max_fee_rate(value: Any) -> int:
    return DEFAULT_MAX_FEE_RATE if value is None else amount_from_value(value)


@rpc(
    "sendrawtransaction",
    "rawtransactions",
    Arg("hexstring", "str", True),
    Arg("maxfeerate", "amount"),
    Arg("maxburnamount", "amount"),
    summary="Submit a raw transaction (serialized, hex-encoded) to the local node and network.",
)
def sendrawtransaction(srv: "RPCServer", hexstring: str, maxfeerate: Any, maxburnamount: Any) -> str:
    tx = decode_tx(hexstring)
    max_burn = 0 if maxburnamount is None else amount_from_value(maxburnamount)
    for out in tx.vout:
        if is_unspendable(out.script_pubkey) and out.value > max_burn:
            raise RPCError(
                RPC_VERIFY_ERROR, "Unspendable output exceeds maximum configured by user (maxburnamount)"
            )
    node = srv.node
    if any(node.chain.coin(OutPoint(tx.txid, n)) for n in range(len(tx.vout))):
        raise RPCError(RPC_VERIFY_ALREADY_IN_UTXO_SET, "Transaction outputs already in utxo set")
    if tx.txid in node.mempool:
        return tx.txid_hex
    rate = _max_fee_rate(maxfeerate)
    try:
        accepted = node.check_tx(tx)
    except TxRejected as e:
        if e.kind == RejectKind.MISSING_INPUTS:
            raise RPCError(RPC_VERIFY_ERROR, e.reason) from None
        if e.kind == RejectKind.ALREADY_IN_CHAIN:
            raise RPCError(
                RPC_VERIFY_ALREADY_IN_UTXO_SET, "Transaction outputs already in utxo set"
            ) from None
        raise RPCError(RPC_VERIFY_REJECTED, str(e)) from None
    if rate and accepted.fee > fee_for(rate, tx.vsize):
        raise RPCError(
            RPC_VERIFY_ERROR, "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)"
        )
    node.mempool.add(tx, accepted.fee, set(accepted.replaced), node.chain.height)
    return tx.txid_hex


@rpc(
    "testmempoolaccept",
    "rawtransactions",
    Arg("rawtxs", "arr", True),
    Arg("maxfeerate", "amount"),
    summary="Returns result of mempool acceptance tests indicating if raw transaction(s) would be accepted.",
)
def testmempoolaccept(srv: "RPCServer", rawtxs: list[Any], maxfeerate: Any) -> list[dict[str, Any]]:
    if not 1 <= len(rawtxs) <= 25:
        raise RPCError(RPC_INVALID_PARAMETER, "Array must contain between 1 and 25 transactions.")
    if len(rawtxs) > 1:
        raise RPCError(
            RPC_INVALID_PARAMETER,
            "Package validation is not supported by this node; test one transaction at a time.",
        )
    txs = []
    for raw in rawtxs:
        try:
            txs.append(Tx.from_hex(str(raw)))
        except Exception:
            raise RPCError(
                RPC_DESERIALIZATION_ERROR, f"TX decode failed: {raw} Make sure the tx has at least one input."
            ) from None
    rate = _max_fee_rate(maxfeerate)
    tx = txs[0]
    res: dict[str, Any] = {"txid": tx.txid_hex, "wtxid": tx.wtxid_hex}
    try:
        accepted = srv.node.check_tx(tx)
    except TxRejected as e:
        res["allowed"] = False
        if e.kind == RejectKind.MISSING_INPUTS:
            res["reject-reason"] = "missing-inputs"
        else:
            res["reject-reason"] = e.reason
            res["reject-details"] = str(e)
        return [res]
    if rate and accepted.fee > fee_for(rate, tx.vsize):
        res["allowed"] = False
        res["reject-reason"] = "max-fee-exceeded"
        return [res]
    res["allowed"] = True
    res["vsize"] = tx.vsize
    res["fees"] = {
        "base": btc(accepted.fee),
        "effective-feerate": btc(accepted.fee * 1000 // tx.vsize),
        "effective-includes": [tx.wtxid_hex],
    }
    return [res]


__all__ = ["Decimal"]
