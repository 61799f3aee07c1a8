"""Signature hashes: legacy (pre-segwit), BIP143 (segwit v0) and BIP341/342 (taproot).

Pure functions over `Tx`; each returns the 32-byte digest that is signed, in the byte order the signer uses.
"""

import struct
from collections.abc import Sequence

from btcl2.bitcoin.hashes import sha256, sha256d, tagged_hash
from btcl2.bitcoin.serialize import ser_bytes, ser_compact_size
from btcl2.bitcoin.tx import Tx, TxOut
from btcl2.errors import InvalidInput

SIGHASH_DEFAULT = 0x00
SIGHASH_ALL = 0x01
SIGHASH_NONE = 0x02
SIGHASH_SINGLE = 0x03
SIGHASH_ANYONECANPAY = 0x80
SIGHASH_OUTPUT_MASK = 0x03
SIGHASH_INPUT_MASK = 0x80

OP_CODESEPARATOR = 0xAB
_OP_PUSHDATA1, _OP_PUSHDATA2, _OP_PUSHDATA4 = 0x4C, 0x4D, 0x4E

# The legacy algorithm's answer when SIGHASH_SINGLE has no matching output: the number 1 as a uint256.
_LEGACY_ONE = b"\x01" + b"\x00" * 31
# What a blanked output serializes as under legacy SIGHASH_SINGLE: value -1, empty script.
_NULL_TXOUT = TxOut(-1, b"")


def _next_op(script: bytes, pc: int) -> tuple[int | None, int]:
    """Step over one opcode as Core's GetOp does: (opcode, next pc), opcode None on a truncated push.

    On a truncated push the returned pc is past the opcode and length bytes but not the data, which is
    what the legacy serializer then uses to cut the script.
    """
    if pc >= len(script):
        return None, pc
    op = script[pc]
    pc += 1
    if op <= _OP_PUSHDATA4:
        width = {_OP_PUSHDATA1: 1, _OP_PUSHDATA2: 2, _OP_PUSHDATA4: 4}.get(op, 0)
        if width:
            if len(script) - pc < width:
                return None, pc
            size = int.from_bytes(script[pc : pc + width], "little")
            pc += width
        else:
            size = op
        if len(script) - pc < size:
            return None, pc
        pc += size
    return op, pc


def _legacy_script_code(script: bytes) -> bytes:
    """Serialize a script code without its OP_CODESEPARATORs, byte for byte as Core's legacy serializer."""
    seps = 0
    pc = 0
    while True:
        op, pc = _next_op(script, pc)
        if op is None:
            break
        seps += op == OP_CODESEPARATOR
    out = [ser_compact_size(len(script) - seps)]
    begin = pc = 0
    while True:
        op, pc = _next_op(script, pc)
        if op is None:
            break
        if op == OP_CODESEPARATOR:
            out.append(script[begin : pc - 1])
            begin = pc
    if begin != len(script):
        out.append(script[begin:pc])
    return b"".join(out)


def legacy_sighash(tx: Tx, input_index: int, script_code: bytes, hash_type: int) -> bytes:
    """Pre-segwit signature hash (Core's SignatureHash for SigVersion::BASE).

    Keeps the historical quirks: SIGHASH_SINGLE without a matching output signs the number 1, and
    OP_CODESEPARATORs are dropped from the script code. The signature itself is not removed from the
    script code here; that FindAndDelete step belongs to script evaluation.
    """
    if not 0 <= input_index < len(tx.vin):
        raise InvalidInput("input index out of range")
    base = hash_type & 0x1F
    anyone = bool(hash_type & SIGHASH_ANYONECANPAY)
    single, none = base == SIGHASH_SINGLE, base == SIGHASH_NONE
    if single and input_index >= len(tx.vout):
        return _LEGACY_ONE
    indices = [input_index] if anyone else range(len(tx.vin))
    parts = [struct.pack("<i", tx.version), ser_compact_size(len(indices))]
    for i in indices:
        txin = tx.vin[i]
        parts.append(txin.prevout.encode())
        parts.append(_legacy_script_code(script_code) if i == input_index else b"\x00")
        sequence = 0 if i != input_index and (single or none) else txin.sequence
        parts.append(struct.pack("<I", sequence))
    n_out = 0 if none else (input_index + 1 if single else len(tx.vout))
    parts.append(ser_compact_size(n_out))
    for i in range(n_out):
        parts.append((_NULL_TXOUT if single and i != input_index else tx.vout[i]).encode())
    parts.append(struct.pack("<I", tx.locktime))
    parts.append(struct.pack("<I", hash_type & 0xFFFFFFFF))
    return sha256d(b"".join(parts))


def segwit_v0_sighash(tx: Tx, input_index: int, script_code: bytes, amount: int, hash_type: int) -> bytes:
    """BIP143 signature hash for segwit v0 inputs; script_code is the raw script (no length prefix)."""
    if not 0 <= input_index < len(tx.vin):
        raise InvalidInput("input index out of range")
    base = hash_type & 0x1F
    anyone = bool(hash_type & SIGHASH_ANYONECANPAY)
    zero = b"\x00" * 32
    hash_prevouts = zero if anyone else sha256d(b"".join(i.prevout.encode() for i in tx.vin))
    hash_sequence = zero
    if not anyone and base not in (SIGHASH_SINGLE, SIGHASH_NONE):
        hash_sequence = sha256d(b"".join(struct.pack("<I", i.sequence) for i in tx.vin))
    hash_outputs = zero
    if base not in (SIGHASH_SINGLE, SIGHASH_NONE):
        hash_outputs = sha256d(b"".join(o.encode() for o in tx.vout))
    elif base == SIGHASH_SINGLE and input_index < len(tx.vout):
        hash_outputs = sha256d(tx.vout[input_index].encode())
    txin = tx.vin[input_index]
    preimage = b"".join(
        [
            struct.pack("<i", tx.version),
            hash_prevouts,
            hash_sequence,
            txin.prevout.encode(),
            ser_bytes(script_code),
            struct.pack("<q", amount),
            struct.pack("<I", txin.sequence),
            hash_outputs,
            struct.pack("<I", tx.locktime),
            struct.pack("<I", hash_type & 0xFFFFFFFF),
        ]
    )
    return sha256d(preimage)


def tapleaf_hash(script: bytes, leaf_version: int = 0xC0) -> bytes:
    """BIP341 TapLeaf hash of a tapscript."""
    return tagged_hash("TapLeaf", bytes([leaf_version]) + ser_bytes(script))


def taproot_sighash(
    tx: Tx,
    input_index: int,
    spent_outputs: Sequence[TxOut],
    hash_type: int,
    leaf_hash: bytes | None = None,
    annex: bytes | None = None,
) -> bytes:
    """BIP341 signature hash (key path), or BIP342 (script path) when leaf_hash is given.

    Script-path hashes assume no OP_CODESEPARATOR was executed (codesep position 0xffffffff).
    Raises InvalidInput for an undefined hash type or SIGHASH_SINGLE without a matching output.
    """
    if not 0 <= input_index < len(tx.vin):
        raise InvalidInput("input index out of range")
    if len(spent_outputs) != len(tx.vin):
        raise InvalidInput("taproot signature hash needs every spent output")
    if not (hash_type <= 0x03 or 0x81 <= hash_type <= 0x83):
        raise InvalidInput(f"invalid taproot sighash type {hash_type:#x}")
    output_type = SIGHASH_ALL if hash_type == SIGHASH_DEFAULT else hash_type & SIGHASH_OUTPUT_MASK
    anyone = (hash_type & SIGHASH_INPUT_MASK) == SIGHASH_ANYONECANPAY
    ext_flag = 1 if leaf_hash is not None else 0
    parts = [b"\x00", bytes([hash_type]), struct.pack("<iI", tx.version, tx.locktime)]
    if not anyone:
        parts.append(sha256(b"".join(i.prevout.encode() for i in tx.vin)))
        parts.append(sha256(b"".join(struct.pack("<q", o.value) for o in spent_outputs)))
        parts.append(sha256(b"".join(ser_bytes(o.script_pubkey) for o in spent_outputs)))
        parts.append(sha256(b"".join(struct.pack("<I", i.sequence) for i in tx.vin)))
    if output_type == SIGHASH_ALL:
        parts.append(sha256(b"".join(o.encode() for o in tx.vout)))
    parts.append(bytes([ext_flag * 2 + (annex is not None)]))
    txin = tx.vin[input_index]
    if anyone:
        parts.append(txin.prevout.encode() + spent_outputs[input_index].encode())
        parts.append(struct.pack("<I", txin.sequence))
    else:
        parts.append(struct.pack("<I", input_index))
    if annex is not None:
        parts.append(sha256(ser_bytes(annex)))
    if output_type == SIGHASH_SINGLE:
        if input_index >= len(tx.vout):
            raise InvalidInput("SIGHASH_SINGLE without a matching output")
        parts.append(sha256(tx.vout[input_index].encode()))
    if leaf_hash is not None:
        parts += [leaf_hash, b"\x00", struct.pack("<I", 0xFFFFFFFF)]
    return tagged_hash("TapSighash", b"".join(parts))
