"""Helpers shared by the functional suites: keys and addresses, mining, coins, signing, error checks."""

import base64
import http.client
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from btcl2.bitcoin import address, script
from btcl2.bitcoin.block import Block, BlockHeader, merkle_root
from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import WIF_PREFIX_TESTNET, PrivateKey
from btcl2.bitcoin.rpc import RPCError
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut

from .node import RegtestNode

COIN = 100_000_000
COINBASE_MATURITY = 100
WAIT_TIMEOUT = 30.0


def btc(sats: int) -> Decimal:
    """Satoshis -> the Decimal BTC amount Core prints."""
    return (Decimal(sats) / COIN).quantize(Decimal("0.00000001"))


def to_sats(amount: Decimal | int) -> int:
    """A Core BTC amount -> satoshis (exact)."""
    sats = Decimal(amount) * COIN
    if sats != sats.to_integral_value():
        raise ValueError(f"{amount} has sub-satoshi precision")
    return int(sats)


@dataclass(frozen=True, slots=True)
class Key:
    """A regtest key with its P2WPKH and P2PKH forms."""

    priv: PrivateKey
    """The secret key."""
    pubkey: bytes
    """Compressed SEC public key."""
    wif: str
    """WIF for test networks (prefix 0xef), as signrawtransactionwithkey takes it."""
    p2wpkh_script: bytes
    """OP_0 <hash160(pubkey)>."""
    p2wpkh_address: str
    """bcrt1q... address of p2wpkh_script."""
    p2pkh_script: bytes
    """OP_DUP OP_HASH160 <hash160(pubkey)> OP_EQUALVERIFY OP_CHECKSIG."""
    p2pkh_address: str
    """m.../n... address of p2pkh_script."""


def new_key() -> Key:
    """A fresh random regtest key."""
    priv = PrivateKey.generate()
    pub = priv.pubkey()
    wpkh = script.p2wpkh(hash160(pub))
    pkh = script.p2pkh(hash160(pub))
    wpkh_addr = address.script_to_address(wpkh, address.REGTEST)
    pkh_addr = address.script_to_address(pkh, address.REGTEST)
    assert wpkh_addr is not None and pkh_addr is not None
    return Key(priv, pub, priv.to_wif(WIF_PREFIX_TESTNET), wpkh, wpkh_addr, pkh, pkh_addr)


@dataclass(frozen=True, slots=True)
class Coin:
    """An unspent output the tests hold the key for."""

    txid: str
    """Transaction id, display (RPC) order."""
    vout: int
    """Output index."""
    value: int
    """Amount in satoshis."""
    script_pubkey: str
    """Hex scriptPubKey."""
    key: Key
    """The key that can spend it."""

    def as_input(self) -> dict[str, Any]:
        """The createrawtransaction input object."""
        return {"txid": self.txid, "vout": self.vout}

    def as_prevtx(self) -> dict[str, Any]:
        """The signrawtransactionwithkey prevtxs entry."""
        return {"txid": self.txid, "vout": self.vout, "scriptPubKey": self.script_pubkey, "amount": btc(self.value)}


def mine(node: RegtestNode, n: int, addr: str) -> list[str]:
    """Mine n blocks paying addr; returns their hashes."""
    hashes: list[str] = node.rpc.call("generatetoaddress", n, addr)
    assert len(hashes) == n
    return hashes


def coinbase_coin(node: RegtestNode, block_hash: str, key: Key) -> Coin:
    """Output 0 of the coinbase of block_hash, assumed to pay key."""
    block = node.rpc.call("getblock", block_hash, 2)
    cb = block["tx"][0]
    out = cb["vout"][0]
    assert out["scriptPubKey"]["hex"] == key.p2wpkh_script.hex(), "coinbase does not pay this key"
    return Coin(cb["txid"], 0, to_sats(out["value"]), out["scriptPubKey"]["hex"], key)


def sign(node: RegtestNode, unsigned_hex: str, coins: list[Coin]) -> str:
    """signrawtransactionwithkey with the coins' keys and prevtxs; asserts the result is complete."""
    wifs = sorted({c.key.wif for c in coins})
    res = node.rpc.call("signrawtransactionwithkey", unsigned_hex, wifs, [c.as_prevtx() for c in coins])
    assert res["complete"], res.get("errors")
    signed: str = res["hex"]
    return signed


def create_tx(node: RegtestNode, coins: list[Coin], outputs: list[dict[str, Any]] | dict[str, Any]) -> str:
    """createrawtransaction + signrawtransactionwithkey; returns signed hex (not broadcast)."""
    unsigned = node.rpc.call("createrawtransaction", [c.as_input() for c in coins], outputs)
    return sign(node, unsigned, coins)


def spend_coinbase(
    node: RegtestNode, coin: Coin, to_address: str, fee: int = 1_000, broadcast: bool = True
) -> tuple[str, str]:
    """Spend a coin (typically a coinbase) whole to to_address minus fee; returns (txid, signed hex).

    The path is the one a bitcoin-cli user takes: createrawtransaction, signrawtransactionwithkey,
    sendrawtransaction.
    """
    signed = create_tx(node, [coin], {to_address: btc(coin.value - fee)})
    txid = node.rpc.call("sendrawtransaction", signed) if broadcast else Tx.from_hex(signed).txid_hex
    return txid, signed


def with_extra_outputs(node: RegtestNode, coins: list[Coin], outputs: dict[str, Any], extra: list[TxOut]) -> str:
    """Build a tx with createrawtransaction, append outputs it cannot express, then sign it."""
    unsigned = Tx.from_hex(node.rpc.call("createrawtransaction", [c.as_input() for c in coins], outputs))
    unsigned = replace(unsigned, vout=(*unsigned.vout, *extra))
    return sign(node, unsigned.hex(), coins)


def op_return_outputs(total_data: int, per_output: int) -> list[TxOut]:
    """Zero-value OP_RETURN outputs carrying total_data bytes of payload, per_output bytes each."""
    outs = []
    left = total_data
    n = 0
    while left > 0:
        size = min(per_output, left)
        outs.append(TxOut(0, script.op_return(bytes([n % 256]) * size)))
        left -= size
        n += 1
    return outs


def tamper_signature(signed_hex: str, input_index: int = 0) -> str:
    """Flip one bit of the r value of a P2WPKH input's signature, keeping it a valid DER encoding."""
    tx = Tx.from_hex(signed_hex)
    vin = list(tx.vin)
    witness = list(vin[input_index].witness)
    sig = bytearray(witness[0])
    r_len = sig[3]
    sig[4 + r_len - 1] ^= 0x01
    witness[0] = bytes(sig)
    vin[input_index] = replace(vin[input_index], witness=tuple(witness))
    return replace(tx, vin=tuple(vin)).hex()


def assert_rpc_error(code: int, message: str | None, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> RPCError:
    """Call fn and assert it raises RPCError with this code and a message containing `message`."""
    try:
        fn(*args, **kwargs)
    except RPCError as e:
        assert e.code == code, f"expected code {code}, got {e.code}: {e.message!r}"
        if message is not None:
            assert message in e.message, f"expected {message!r} in {e.message!r}"
        return e
    raise AssertionError(f"no RPC error raised (expected {code} {message!r})")


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_TIMEOUT, what: str = "condition") -> None:
    """Poll predicate until true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass(frozen=True, slots=True)
class HTTPResult:
    """A raw HTTP exchange with the RPC port."""

    status: int
    """HTTP status code."""
    body: bytes
    """Response body."""
    headers: dict[str, str]
    """Response headers, names lower-cased."""


def raw_post(url: str, body: bytes, auth: str | None, timeout: float = 30.0) -> HTTPResult:
    """POST body to url with an optional Authorization header; bypasses the RPC client on purpose."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = auth
        conn.request("POST", parts.path or "/", body=body, headers=headers)
        resp = conn.getresponse()
        return HTTPResult(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def cookie_auth(node: RegtestNode) -> str:
    """The Basic Authorization header value for the node's cookie."""
    token = node.cookie_file.read_text().strip()
    return "Basic " + base64.b64encode(token.encode()).decode()


class CoinPool:
    """Mature coinbase outputs held by one key, handed out one per use so tests do not collide."""

    def __init__(self, node: RegtestNode, key: Key, coins: list[Coin]) -> None:
        self.node = node
        self.key = key
        self.coins = coins

    @classmethod
    def fund(cls, node: RegtestNode, n_mature: int, key: Key | None = None) -> "CoinPool":
        """Mine COINBASE_MATURITY + n_mature blocks to a key; the first n_mature coinbases are then spendable."""
        key = key if key is not None else new_key()
        hashes = mine(node, COINBASE_MATURITY + n_mature, key.p2wpkh_address)
        return cls(node, key, [coinbase_coin(node, h, key) for h in hashes[:n_mature]])

    def take(self) -> Coin:
        """One spendable coin, removed from the pool."""
        if not self.coins:
            raise AssertionError("coin pool exhausted: fund more coins for this module")
        return self.coins.pop(0)


def post_oversized(url: str, auth: str, size: int, timeout: float = 30.0) -> int | None:
    """POST a JSON body of `size` bytes; returns the HTTP status, or None if the node just closed the socket.

    The body is streamed after the headers because a server may answer (and close) as soon as it sees the
    Content-Length, while another reads until the limit; both are fine as long as the answer is not 200.
    """
    parts = urllib.parse.urlsplit(url)
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.hostname}\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode()
    chunk = b"[" + b"0," * (1 << 19)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout) as sock:
        try:
            sock.sendall(head)
            sent = 0
            while sent < size:
                piece = chunk[: size - sent]
                sock.sendall(piece)
                sent += len(piece)
        except OSError:
            pass  # the server stopped reading: its answer (if any) is waiting in our receive buffer
        try:
            first = sock.recv(64)
        except OSError:
            return None
    if not first.startswith(b"HTTP/"):
        return None
    return int(first.split(b" ", 2)[1])


REGTEST_BITS = 0x207FFFFF
REGTEST_HALVING = 150


def regtest_subsidy(height: int) -> int:
    """The block subsidy at height on regtest (halving every 150 blocks)."""
    halvings = height // REGTEST_HALVING
    return 0 if halvings >= 64 else (50 * COIN) >> halvings


def build_block(prev_hash: str, prev_height: int, prev_time: int, pay_to: bytes, tag: int = 0) -> Block:
    """A block with only a coinbase on top of prev_hash, built and mined here, not by the node.

    `tag` goes into the coinbase so two blocks built on the same parent differ.
    """
    height = prev_height + 1
    # BIP34: the coinbase scriptSig starts with the height; the tag keeps sibling blocks distinct.
    script_sig = script.push_int(height) + script.push_data(tag.to_bytes(4, "little"))
    coinbase = Tx(
        version=2,
        vin=(TxIn(OutPoint(b"\x00" * 32, 0xFFFFFFFF), script_sig=script_sig),),
        vout=(TxOut(regtest_subsidy(height), pay_to),),
        locktime=0,
    )
    root = merkle_root([coinbase.txid])
    header = BlockHeader(0x20000000, bytes.fromhex(prev_hash)[::-1], root, prev_time + 1, REGTEST_BITS, 0)
    target = (REGTEST_BITS & 0xFFFFFF) << (8 * ((REGTEST_BITS >> 24) - 3))
    while int.from_bytes(header.hash, "little") > target:
        header = replace(header, nonce=header.nonce + 1)
    return Block(header, (coinbase,))


def build_block_on(node: RegtestNode, prev_hash: str, pay_to: bytes, tag: int = 0) -> Block:
    """build_block on a block the node knows, reading its height and time from getblockheader."""
    prev = node.rpc.call("getblockheader", prev_hash)
    return build_block(prev_hash, prev["height"], max(prev["time"], prev["mediantime"]), pay_to, tag)
