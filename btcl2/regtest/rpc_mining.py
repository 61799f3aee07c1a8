"""Mining RPCs of the embedded node: generate, submit, fee estimates."""

from typing import TYPE_CHECKING, Any

from btcl2.bitcoin.descriptor import DescriptorError, parse_descriptor
from btcl2.bitcoin.rpc import RPCError
from btcl2.bitcoin.tx import Tx
from btcl2.errors import DecodeError
from btcl2.regtest import miner
from btcl2.regtest.mempool import TxRejected
from btcl2.regtest.rpc_util import NETWORK, decode_block, parse_hash, script_for_address
from btcl2.regtest.rpcargs import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_MISC_ERROR,
    RPC_VERIFY_ERROR,
    Arg,
    registry,
)

if TYPE_CHECKING:
    from btcl2.regtest.rpcserver import RPCServer

rpc = registry.method
DEFAULT_MAX_TRIES = 1_000_000


def _generate(srv: "RPCServer", nblocks: int, script_pubkey: bytes) -> list[str]:
    if nblocks < 0:
        raise RPCError(RPC_INVALID_PARAMETER, "Invalid parameter, nblocks must be non-negative")
    hashes = []
    for _ in range(nblocks):
        block, result = srv.node.mine(script_pubkey)
        if result is not None:
            raise RPCError(RPC_MISC_ERROR, f"ProcessNewBlock, block not accepted: {result}")
        hashes.append(block.hash_hex)
    return hashes


@rpc(
    "generatetoaddress",
    "generating",
    Arg("nblocks", "num", True),
    Arg("address", "str", True),
    Arg("maxtries", "num"),
    summary="Mine to a specified address and return the block hashes.",
)
def generatetoaddress(srv: "RPCServer", nblocks: int, address: str, maxtries: int | None) -> list[str]:
    try:
        spk = script_for_address(address)
    except RPCError:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from None
    return _generate(srv, nblocks, spk)


def _descriptor_script(desc: str) -> bytes:
    try:
        targets = parse_descriptor(desc, NETWORK)
    except DescriptorError as e:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, str(e)) from None
    if len(targets) != 1:
        raise RPCError(
            RPC_INVALID_PARAMETER, "Ranged descriptor not accepted. Maybe pass through deriveaddresses first?"
        )
    return targets[0].script_pubkey


@rpc(
    "generatetodescriptor",
    "generating",
    Arg("num_blocks", "num", True),
    Arg("descriptor", "str", True),
    Arg("maxtries", "num"),
    summary="Mine to a specified descriptor and return the block hashes.",
)
def generatetodescriptor(
    srv: "RPCServer", num_blocks: int, descriptor: str, maxtries: int | None
) -> list[str]:
    return _generate(srv, num_blocks, _descriptor_script(descriptor))


@rpc(
    "generateblock",
    "generating",
    Arg("output", "str", True),
    Arg("transactions", "arr", True),
    Arg("submit", "bool"),
    summary="Mine a set of ordered transactions to a specified address or descriptor and return the block hash.",
)
def generateblock(
    srv: "RPCServer", output: str, transactions: list[Any], submit: bool | None
) -> dict[str, Any]:
    try:
        spk = script_for_address(output)
    except RPCError:
        try:
            spk = _descriptor_script(output)
        except RPCError:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address or descriptor") from None
    node = srv.node
    txs: list[Tx] = []
    for item in transactions:
        if isinstance(item, str) and len(item) == 64:
            try:
                txid = parse_hash(item, "txid")
            except RPCError:
                txid = b""
            entry = node.mempool.entries.get(txid)
            if entry is not None:
                txs.append(entry.tx)
                continue
            if all(c in "0123456789abcdefABCDEF" for c in item):
                raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, f"Transaction {item} not in mempool.")
        try:
            txs.append(Tx.from_hex(str(item)))
        except DecodeError:
            raise RPCError(
                RPC_DESERIALIZATION_ERROR,
                f"Transaction decode failed for {item}. Make sure the tx has at least one input.",
            ) from None
    try:
        block = miner.solve(node.template(spk, txs))
    except TxRejected as e:
        raise RPCError(RPC_VERIFY_ERROR, f"TestBlockValidity failed: {e.reason}") from None
    result: dict[str, Any] = {"hash": block.hash_hex}
    if submit is False:
        result["hex"] = block.encode().hex()
        return result
    outcome = node.submit_block(block.encode())
    if outcome is not None:
        raise RPCError(RPC_VERIFY_ERROR, f"TestBlockValidity failed: {outcome}")
    return result


@rpc(
    "submitblock",
    "mining",
    Arg("hexdata", "hex", True),
    Arg("dummy", "str"),
    summary="Attempts to submit new block to network.",
)
def submitblock(srv: "RPCServer", hexdata: str, dummy: str | None) -> Any:
    block = decode_block(hexdata)
    if not block.txs or not block.txs[0].is_coinbase:
        raise RPCError(RPC_DESERIALIZATION_ERROR, "Block does not start with a coinbase")
    return srv.node.submit_block(block.encode())


@rpc(
    "estimatesmartfee",
    "util",
    Arg("conf_target", "num", True),
    Arg("estimate_mode", "str"),
    summary="Estimates the approximate fee per kilobyte needed for a transaction to begin confirmation within conf_target blocks.",
)
def estimatesmartfee(srv: "RPCServer", conf_target: int, estimate_mode: str | None) -> dict[str, Any]:
    if estimate_mode is not None and estimate_mode.upper() not in ("UNSET", "ECONOMICAL", "CONSERVATIVE"):
        raise RPCError(
            RPC_INVALID_PARAMETER,
            'Invalid estimate_mode parameter, must be one of: "unset", "economical", "conservative"',
        )
    if not 1 <= conf_target <= 1008:
        raise RPCError(RPC_INVALID_PARAMETER, "Invalid conf_target, must be between 1 and 1008")
    # Like a fresh Core node, the embedded node keeps no fee history to estimate from.
    return {"errors": ["Insufficient data or no feerate found"], "blocks": 0}
