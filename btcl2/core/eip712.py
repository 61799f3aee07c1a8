"""EIP-712 signing of L2 transactions, so that any EVM wallet (eth_signTypedData_v4) can sign them.

Domain: EIP712Domain(string name,string version,uint256 chainId) with name "btcl2", version "1" and
the rollup's chain id. A signature made for another chain id recovers to an unrelated address, so it
can never move the signer's funds; `parse_typed_data` names the mistake (`WrongChain`) up front.
"""

import functools
from typing import Any

import coincurve

from btcl2.bitcoin.tx import MAX_MONEY
from btcl2.core.errors import BadSignature, MalformedEncoding, WrongChain
from btcl2.core.hashing import keccak256
from btcl2.core.types import (
    MAX_WITHDRAWAL_SCRIPT,
    SIGNATURE_SIZE,
    Address20,
    ExitToEvm,
    Hash32,
    L2Tx,
    Sats,
    SignedTx,
    Transfer,
    Withdrawal,
)
from btcl2.hexstr import from_hex

DOMAIN_NAME = "btcl2"
DOMAIN_VERSION = "1"
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId)"
TRANSFER_TYPE = "Transfer(address to,uint64 amount,uint64 fee,uint64 nonce)"
WITHDRAWAL_TYPE = "Withdrawal(uint64 amount,uint64 fee,uint64 nonce,bytes script)"
EXIT_TO_EVM_TYPE = "ExitToEvm(uint64 amount,uint64 fee,uint64 nonce,address evmAddress)"

_TRANSFER_TYPEHASH = keccak256(TRANSFER_TYPE.encode())
_WITHDRAWAL_TYPEHASH = keccak256(WITHDRAWAL_TYPE.encode())
_EXIT_TO_EVM_TYPEHASH = keccak256(EXIT_TO_EVM_TYPE.encode())

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = SECP256K1_N // 2

_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
    ],
    "Transfer": [
        {"name": "to", "type": "address"},
        {"name": "amount", "type": "uint64"},
        {"name": "fee", "type": "uint64"},
        {"name": "nonce", "type": "uint64"},
    ],
    "Withdrawal": [
        {"name": "amount", "type": "uint64"},
        {"name": "fee", "type": "uint64"},
        {"name": "nonce", "type": "uint64"},
        {"name": "script", "type": "bytes"},
    ],
    "ExitToEvm": [
        {"name": "amount", "type": "uint64"},
        {"name": "fee", "type": "uint64"},
        {"name": "nonce", "type": "uint64"},
        {"name": "evmAddress", "type": "address"},
    ],
}


def _word(n: int) -> bytes:
    return n.to_bytes(32, "big")


@functools.lru_cache(maxsize=16)
def domain_separator(chain_id: int) -> Hash32:
    """hashStruct(EIP712Domain{name: "btcl2", version: "1", chainId})."""
    return Hash32(
        keccak256(
            keccak256(DOMAIN_TYPE.encode())
            + keccak256(DOMAIN_NAME.encode())
            + keccak256(DOMAIN_VERSION.encode())
            + _word(chain_id)
        )
    )


def struct_hash(tx: L2Tx) -> Hash32:
    """hashStruct of a Transfer or an ExitToEvm (addresses left-padded to a word) or a Withdrawal (bytes as
    keccak256)."""
    if isinstance(tx, Transfer):
        fields = b"\x00" * 12 + tx.to + _word(tx.amount) + _word(tx.fee) + _word(tx.nonce)
        return Hash32(keccak256(_TRANSFER_TYPEHASH + fields))
    if isinstance(tx, ExitToEvm):
        fields = _word(tx.amount) + _word(tx.fee) + _word(tx.nonce) + b"\x00" * 12 + tx.evm_address
        return Hash32(keccak256(_EXIT_TO_EVM_TYPEHASH + fields))
    fields = _word(tx.amount) + _word(tx.fee) + _word(tx.nonce) + keccak256(tx.script)
    return Hash32(keccak256(_WITHDRAWAL_TYPEHASH + fields))


def signing_digest(tx: L2Tx, chain_id: int) -> Hash32:
    """keccak256(0x19 0x01 || domainSeparator || hashStruct(tx)): the 32 bytes that are signed."""
    return Hash32(keccak256(b"\x19\x01" + domain_separator(chain_id) + struct_hash(tx)))


def address_of(pubkey: coincurve.PublicKey) -> Address20:
    """The Ethereum-style address: the last 20 bytes of keccak256(uncompressed key without 0x04)."""
    return Address20(keccak256(pubkey.format(compressed=False)[1:])[12:])


def address_from_private_key(private_key: bytes) -> Address20:
    """The address of a 32-byte secp256k1 private key."""
    return address_of(coincurve.PrivateKey(private_key).public_key)


def sign(tx: L2Tx, private_key: bytes, chain_id: int) -> SignedTx:
    """Sign `tx` for `chain_id` with a 32-byte key; the signature is low-S with v in {27, 28}."""
    sig = coincurve.PrivateKey(private_key).sign_recoverable(signing_digest(tx, chain_id), hasher=None)
    # libsecp256k1 always returns low-S, so r || s || recid maps directly onto r || s || v.
    return SignedTx(tx, sig[:64] + bytes([27 + sig[64]]))


def recover_sender(signed: SignedTx, chain_id: int) -> Address20:
    """The address that signed `signed` for `chain_id`; BadSignature if the signature is not canonical."""
    sig = signed.signature
    if len(sig) != SIGNATURE_SIZE:
        raise BadSignature(f"signature must be {SIGNATURE_SIZE} bytes, got {len(sig)}")
    r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    if v not in (27, 28):
        raise BadSignature(f"signature v must be 27 or 28, got {v}")
    if not 0 < r < SECP256K1_N or not 0 < s < SECP256K1_N:
        raise BadSignature("signature r or s out of range")
    if s > _HALF_N:
        raise BadSignature("signature is high-S (malleable)")
    try:
        pub = coincurve.PublicKey.from_signature_and_message(
            sig[:64] + bytes([v - 27]), signing_digest(signed.tx, chain_id), hasher=None
        )
    except Exception as exc:  # coincurve raises a bare Exception when no key recovers
        raise BadSignature("signature does not recover a public key") from exc
    return address_of(pub)


def typed_data(tx: L2Tx, chain_id: int) -> dict[str, Any]:
    """The eth_signTypedData_v4 object for `tx` (addresses and bytes as 0x-hex, integers as int)."""
    if isinstance(tx, Transfer):
        primary, message = "Transfer", {"to": "0x" + tx.to.hex(), "amount": tx.amount, "fee": tx.fee}
    elif isinstance(tx, ExitToEvm):
        primary = "ExitToEvm"
        message = {"amount": tx.amount, "fee": tx.fee, "evmAddress": "0x" + tx.evm_address.hex()}
    else:
        primary = "Withdrawal"
        message = {"amount": tx.amount, "fee": tx.fee, "script": "0x" + tx.script.hex()}
    message["nonce"] = tx.nonce
    return {
        "types": {"EIP712Domain": _TYPES["EIP712Domain"], primary: _TYPES[primary]},
        "primaryType": primary,
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id},
        "message": message,
    }


def _hex_field(message: dict[str, Any], name: str, max_len: int) -> bytes:
    value = message.get(name)
    if not isinstance(value, str) or not value.startswith("0x"):
        raise MalformedEncoding(f"{name} must be a 0x-prefixed hex string")
    try:
        raw = from_hex(value[2:])
    except ValueError as exc:
        raise MalformedEncoding(f"{name} is not hex") from exc
    if len(raw) > max_len:
        raise MalformedEncoding(f"{name} longer than {max_len} bytes")
    return raw


def _int_field(message: dict[str, Any], name: str, limit: int) -> int:
    value = message.get(name)
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError as exc:
            raise MalformedEncoding(f"{name} is not an integer") from exc
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise MalformedEncoding(f"{name} must be an integer in 0..{limit}")
    return value


def parse_typed_data(obj: dict[str, Any], chain_id: int) -> L2Tx:
    """The transaction an eth_signTypedData_v4 object describes; WrongChain if its domain is not ours."""
    domain = obj.get("domain")
    if not isinstance(domain, dict):
        raise MalformedEncoding("typed data has no domain")
    if domain.get("name") != DOMAIN_NAME or domain.get("version") != DOMAIN_VERSION:
        raise WrongChain(f"domain must be name {DOMAIN_NAME!r} version {DOMAIN_VERSION!r}")
    if _int_field(domain, "chainId", 2**256 - 1) != chain_id:
        raise WrongChain(f"typed data is for chain {domain.get('chainId')}, this rollup is {chain_id}")
    primary, message = obj.get("primaryType"), obj.get("message")
    if not isinstance(message, dict) or primary not in ("Transfer", "Withdrawal", "ExitToEvm"):
        raise MalformedEncoding("primaryType must be Transfer, Withdrawal or ExitToEvm, with a message")
    amount = Sats(_int_field(message, "amount", MAX_MONEY))
    fee = Sats(_int_field(message, "fee", MAX_MONEY))
    nonce = _int_field(message, "nonce", 2**64 - 1)
    if primary == "Transfer":
        to = _hex_field(message, "to", 20)
        if len(to) != 20:
            raise MalformedEncoding("to must be a 20-byte address")
        return Transfer(Address20(to), amount, fee, nonce)
    if primary == "ExitToEvm":
        evm = _hex_field(message, "evmAddress", 20)
        if len(evm) != 20:
            raise MalformedEncoding("evmAddress must be a 20-byte address")
        return ExitToEvm(amount, fee, nonce, Address20(evm))
    return Withdrawal(amount, fee, nonce, _hex_field(message, "script", MAX_WITHDRAWAL_SCRIPT))
