"""Bitcoin script: opcodes, pushes, standard templates, Core's Solver, asm rendering and relay policy.

Every behaviour here mirrors Bitcoin Core (src/script/script.cpp, src/script/solver.cpp,
src/core_io.cpp, src/policy/policy.cpp) because the regtest node's RPC must print exactly what
bitcoind prints and its mempool must accept exactly what bitcoind accepts.
"""

import struct
from collections.abc import Iterator
from enum import StrEnum

from btcl2.bitcoin.serialize import ser_compact_size
from btcl2.bitcoin.tx import TxOut
from btcl2.errors import DecodeError

OP_0 = 0x00
OP_PUSHDATA1 = 0x4C
OP_PUSHDATA2 = 0x4D
OP_PUSHDATA4 = 0x4E
OP_1NEGATE = 0x4F
OP_RESERVED = 0x50
OP_1 = 0x51
OP_2 = 0x52
OP_3 = 0x53
OP_4 = 0x54
OP_5 = 0x55
OP_6 = 0x56
OP_7 = 0x57
OP_8 = 0x58
OP_9 = 0x59
OP_10 = 0x5A
OP_11 = 0x5B
OP_12 = 0x5C
OP_13 = 0x5D
OP_14 = 0x5E
OP_15 = 0x5F
OP_16 = 0x60
OP_NOP = 0x61
OP_VER = 0x62
OP_IF = 0x63
OP_NOTIF = 0x64
OP_VERIF = 0x65
OP_VERNOTIF = 0x66
OP_ELSE = 0x67
OP_ENDIF = 0x68
OP_VERIFY = 0x69
OP_RETURN = 0x6A
OP_TOALTSTACK = 0x6B
OP_FROMALTSTACK = 0x6C
OP_2DROP = 0x6D
OP_2DUP = 0x6E
OP_3DUP = 0x6F
OP_2OVER = 0x70
OP_2ROT = 0x71
OP_2SWAP = 0x72
OP_IFDUP = 0x73
OP_DEPTH = 0x74
OP_DROP = 0x75
OP_DUP = 0x76
OP_NIP = 0x77
OP_OVER = 0x78
OP_PICK = 0x79
OP_ROLL = 0x7A
OP_ROT = 0x7B
OP_SWAP = 0x7C
OP_TUCK = 0x7D
OP_CAT = 0x7E
OP_SUBSTR = 0x7F
OP_LEFT = 0x80
OP_RIGHT = 0x81
OP_SIZE = 0x82
OP_INVERT = 0x83
OP_AND = 0x84
OP_OR = 0x85
OP_XOR = 0x86
OP_EQUAL = 0x87
OP_EQUALVERIFY = 0x88
OP_RESERVED1 = 0x89
OP_RESERVED2 = 0x8A
OP_1ADD = 0x8B
OP_1SUB = 0x8C
OP_2MUL = 0x8D
OP_2DIV = 0x8E
OP_NEGATE = 0x8F
OP_ABS = 0x90
OP_NOT = 0x91
OP_0NOTEQUAL = 0x92
OP_ADD = 0x93
OP_SUB = 0x94
OP_MUL = 0x95
OP_DIV = 0x96
OP_MOD = 0x97
OP_LSHIFT = 0x98
OP_RSHIFT = 0x99
OP_BOOLAND = 0x9A
OP_BOOLOR = 0x9B
OP_NUMEQUAL = 0x9C
OP_NUMEQUALVERIFY = 0x9D
OP_NUMNOTEQUAL = 0x9E
OP_LESSTHAN = 0x9F
OP_GREATERTHAN = 0xA0
OP_LESSTHANOREQUAL = 0xA1
OP_GREATERTHANOREQUAL = 0xA2
OP_MIN = 0xA3
OP_MAX = 0xA4
OP_WITHIN = 0xA5
OP_RIPEMD160 = 0xA6
OP_SHA1 = 0xA7
OP_SHA256 = 0xA8
OP_HASH160 = 0xA9
OP_HASH256 = 0xAA
OP_CODESEPARATOR = 0xAB
OP_CHECKSIG = 0xAC
OP_CHECKSIGVERIFY = 0xAD
OP_CHECKMULTISIG = 0xAE
OP_CHECKMULTISIGVERIFY = 0xAF
OP_NOP1 = 0xB0
OP_CHECKLOCKTIMEVERIFY = 0xB1
OP_CHECKSEQUENCEVERIFY = 0xB2
OP_NOP4 = 0xB3
OP_NOP5 = 0xB4
OP_NOP6 = 0xB5
OP_NOP7 = 0xB6
OP_NOP8 = 0xB7
OP_NOP9 = 0xB8
OP_NOP10 = 0xB9
OP_CHECKSIGADD = 0xBA
OP_INVALIDOPCODE = 0xFF
# Core's asm names: the constant's own name, except pushes of small numbers, which print as numbers.
OPCODE_NAMES: dict[int, str] = {
    value: name
    for name, value in list(globals().items())
    if name.startswith("OP_") and isinstance(value, int)
}
OPCODE_NAMES[OP_0] = "0"
OPCODE_NAMES[OP_1NEGATE] = "-1"
OPCODE_NAMES.update({OP_1 + i: str(i + 1) for i in range(16)})

# Aliases defined after the name table so that asm keeps Core's preferred names.
OP_FALSE = OP_0
OP_TRUE = OP_1
OP_NOP2 = OP_CHECKLOCKTIMEVERIFY
OP_NOP3 = OP_CHECKSEQUENCEVERIFY

MAX_SCRIPT_SIZE = 10_000
MAX_SCRIPT_ELEMENT_SIZE = 520
MAX_PUBKEYS_PER_MULTISIG = 20
DUST_RELAY_TX_FEE = 3000
"""Default -dustrelayfee in satoshis per 1000 virtual bytes."""
WITNESS_SCALE_FACTOR = 4

SIGHASH_ALL = 1
SIGHASH_NONE = 2
SIGHASH_SINGLE = 3
SIGHASH_ANYONECANPAY = 0x80
SIGHASH_NAMES: dict[int, str] = {
    SIGHASH_ALL: "ALL",
    SIGHASH_ALL | SIGHASH_ANYONECANPAY: "ALL|ANYONECANPAY",
    SIGHASH_NONE: "NONE",
    SIGHASH_NONE | SIGHASH_ANYONECANPAY: "NONE|ANYONECANPAY",
    SIGHASH_SINGLE: "SINGLE",
    SIGHASH_SINGLE | SIGHASH_ANYONECANPAY: "SINGLE|ANYONECANPAY",
}

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_ANCHOR_SCRIPT = bytes([OP_1, 0x02, 0x4E, 0x73])


def op_name(opcode: int) -> str:
    """Core's GetOpName: the asm word for an opcode ("OP_UNKNOWN" for undefined ones)."""
    return OPCODE_NAMES.get(opcode, "OP_UNKNOWN")


# ---------------------------------------------------------------------------------------------
# Numbers and pushes


def script_num_encode(n: int) -> bytes:
    """Serialize an integer as a minimal CScriptNum (little-endian sign-magnitude)."""
    if n == 0:
        return b""
    neg = n < 0
    mag = -n if neg else n
    out = bytearray()
    while mag:
        out.append(mag & 0xFF)
        mag >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if neg else 0)
    elif neg:
        out[-1] |= 0x80
    return bytes(out)


def script_num_decode(data: bytes, require_minimal: bool = False, max_size: int = 4) -> int:
    """Parse a CScriptNum; raise DecodeError if too long or (when asked) not minimally encoded."""
    if len(data) > max_size:
        raise DecodeError("script number overflow")
    # Minimal: the top byte may be 0x00/0x80 only when the byte below it needs its high bit.
    if require_minimal and data and (data[-1] & 0x7F) == 0 and (len(data) <= 1 or not data[-2] & 0x80):
        raise DecodeError("non-minimally encoded script number")
    if not data:
        return 0
    value = int.from_bytes(data, "little")
    if data[-1] & 0x80:
        return -(value & ~(0x80 << (8 * (len(data) - 1))))
    return value


def push_data(data: bytes) -> bytes:
    """Push bytes with the shortest push opcode for their length, as Core's `CScript() << bytes`.

    Like Core, a single byte 1..16 is pushed as data (not as OP_1..OP_16), so `iter_ops` returns
    exactly the bytes pushed; use `push_int` for numbers.
    """
    n = len(data)
    if n < OP_PUSHDATA1:
        return bytes([n]) + data
    if n <= 0xFF:
        return bytes([OP_PUSHDATA1, n]) + data
    if n <= 0xFFFF:
        return bytes([OP_PUSHDATA2]) + struct.pack("<H", n) + data
    return bytes([OP_PUSHDATA4]) + struct.pack("<I", n) + data


def push_int(n: int) -> bytes:
    """Push a number as Core's `CScript() << n`: OP_0, OP_1NEGATE, OP_1..OP_16, else a CScriptNum push."""
    if n == 0:
        return bytes([OP_0])
    if n == -1 or 1 <= n <= 16:
        return bytes([OP_1 + n - 1])
    return push_data(script_num_encode(n))


def _get_op(script: bytes, pos: int) -> tuple[int, bytes | None, int] | None:
    """Read one instruction at pos: (opcode, pushed data or None, next position), None if truncated."""
    if pos >= len(script):
        return None
    opcode = script[pos]
    pos += 1
    if opcode > OP_PUSHDATA4:
        return opcode, None, pos
    if opcode < OP_PUSHDATA1:
        size = opcode
    else:
        width = {OP_PUSHDATA1: 1, OP_PUSHDATA2: 2, OP_PUSHDATA4: 4}[opcode]
        if len(script) - pos < width:
            return None
        size = int.from_bytes(script[pos : pos + width], "little")
        pos += width
    if len(script) - pos < size:
        return None
    return opcode, script[pos : pos + size], pos + size


def iter_ops(script: bytes) -> Iterator[tuple[int, bytes | None]]:
    """Yield (opcode, data) per instruction; data is the pushed bytes for push opcodes, else None.

    Raises DecodeError when a push runs past the end of the script.
    """
    pos = 0
    while pos < len(script):
        op = _get_op(script, pos)
        if op is None:
            raise DecodeError(f"truncated push at offset {pos}")
        opcode, data, pos = op
        yield opcode, data


def _decode_op_n(opcode: int) -> int:
    return 0 if opcode == OP_0 else opcode - (OP_1 - 1)


def check_minimal_push(data: bytes, opcode: int) -> bool:
    """Core's CheckMinimalPush: whether a push opcode is the smallest way to push data (BIP62)."""
    if not data:
        return opcode == OP_0
    if len(data) == 1 and (1 <= data[0] <= 16 or data[0] == 0x81):
        return False
    if len(data) <= 75:
        return opcode == len(data)
    if len(data) <= 255:
        return opcode == OP_PUSHDATA1
    if len(data) <= 65535:
        return opcode == OP_PUSHDATA2
    return True


# ---------------------------------------------------------------------------------------------
# Templates


def p2pkh(h160: bytes) -> bytes:
    """OP_DUP OP_HASH160 <20> OP_EQUALVERIFY OP_CHECKSIG."""
    _require_len(h160, 20)
    return bytes([OP_DUP, OP_HASH160, 20]) + h160 + bytes([OP_EQUALVERIFY, OP_CHECKSIG])


def p2sh(h160: bytes) -> bytes:
    """OP_HASH160 <20> OP_EQUAL."""
    _require_len(h160, 20)
    return bytes([OP_HASH160, 20]) + h160 + bytes([OP_EQUAL])


def p2wpkh(h160: bytes) -> bytes:
    """OP_0 <20>."""
    _require_len(h160, 20)
    return bytes([OP_0, 20]) + h160


def p2wsh(script_sha256: bytes) -> bytes:
    """OP_0 <32>, the SHA-256 of the witness script."""
    _require_len(script_sha256, 32)
    return bytes([OP_0, 32]) + script_sha256


def p2tr(xonly: bytes) -> bytes:
    """OP_1 <32>, the x-only output key."""
    _require_len(xonly, 32)
    return bytes([OP_1, 32]) + xonly


def p2a() -> bytes:
    """The pay-to-anchor script OP_1 <4e73>."""
    return _ANCHOR_SCRIPT


def witness_program(version: int, program: bytes) -> bytes:
    """OP_n <program> for any witness version 0..16 and a 2..40 byte program."""
    if not 0 <= version <= 16 or not 2 <= len(program) <= 40:
        raise ValueError("invalid witness version or program size")
    return bytes([OP_0 if version == 0 else OP_1 + version - 1, len(program)]) + program


def p2pk(pubkey: bytes) -> bytes:
    """<pubkey> OP_CHECKSIG."""
    return push_data(pubkey) + bytes([OP_CHECKSIG])


def multisig(m: int, pubkeys: list[bytes] | tuple[bytes, ...]) -> bytes:
    """Bare m-of-n: OP_m <keys...> OP_n OP_CHECKMULTISIG, keys in the order given."""
    if not 1 <= m <= len(pubkeys) <= MAX_PUBKEYS_PER_MULTISIG:
        raise ValueError("multisig needs 1 <= m <= n <= 20")
    body = b"".join(push_data(k) for k in pubkeys)
    return push_int(m) + body + push_int(len(pubkeys)) + bytes([OP_CHECKMULTISIG])


def op_return(*chunks: bytes) -> bytes:
    """OP_RETURN followed by one push per chunk (a nulldata output)."""
    return bytes([OP_RETURN]) + b"".join(push_data(c) for c in chunks)


def _require_len(data: bytes, n: int) -> None:
    if len(data) != n:
        raise ValueError(f"expected {n} bytes, got {len(data)}")


# ---------------------------------------------------------------------------------------------
# Solver


class ScriptType(StrEnum):
    """Core's TxoutType, named as in the "type" field of RPC results."""

    NONSTANDARD = "nonstandard"
    PUBKEY = "pubkey"
    PUBKEYHASH = "pubkeyhash"
    SCRIPTHASH = "scripthash"
    MULTISIG = "multisig"
    NULLDATA = "nulldata"
    ANCHOR = "anchor"
    WITNESS_V0_KEYHASH = "witness_v0_keyhash"
    WITNESS_V0_SCRIPTHASH = "witness_v0_scripthash"
    WITNESS_V1_TAPROOT = "witness_v1_taproot"
    WITNESS_UNKNOWN = "witness_unknown"


def pubkey_valid_size(data: bytes) -> bool:
    """Core's CPubKey::ValidSize: the length the header byte announces (33 or 65)."""
    if not data:
        return False
    if data[0] in (2, 3):
        return len(data) == 33
    if data[0] in (4, 6, 7):
        return len(data) == 65
    return False


def is_witness_program(spk: bytes) -> tuple[int, bytes] | None:
    """(version, program) if spk is a 1-byte version opcode plus one 2..40 byte direct push."""
    if not 4 <= len(spk) <= 42:
        return None
    if spk[0] != OP_0 and not OP_1 <= spk[0] <= OP_16:
        return None
    if spk[1] + 2 != len(spk):
        return None
    return _decode_op_n(spk[0]), spk[2:]


def is_pay_to_anchor(spk: bytes) -> bool:
    """Whether spk is exactly OP_1 <4e73> (P2A)."""
    return spk == _ANCHOR_SCRIPT


def _script_number(opcode: int, data: bytes | None, lo: int, hi: int) -> int | None:
    """A number in [lo, hi] as OP_1..OP_16 or a minimal push, else None (Core's GetScriptNumber)."""
    if OP_1 <= opcode <= OP_16:
        n = _decode_op_n(opcode)
    elif data is not None:
        if not check_minimal_push(data, opcode):
            return None
        try:
            n = script_num_decode(data, require_minimal=True)
        except DecodeError:
            return None
    else:
        return None
    return n if lo <= n <= hi else None


def _match_multisig(spk: bytes) -> tuple[int, list[bytes]] | None:
    if not spk or spk[-1] != OP_CHECKMULTISIG:
        return None
    op = _get_op(spk, 0)
    if op is None:
        return None
    required = _script_number(op[0], op[1], 1, MAX_PUBKEYS_PER_MULTISIG)
    if required is None:
        return None
    pos = op[2]
    keys: list[bytes] = []
    while True:
        op = _get_op(spk, pos)
        if op is None:
            return None  # Core sees OP_INVALIDOPCODE here, which is never a number
        opcode, data, pos = op
        if data is None or not pubkey_valid_size(data):
            break
        keys.append(data)
    n = _script_number(opcode, data, required, MAX_PUBKEYS_PER_MULTISIG)
    if n is None or n != len(keys) or pos + 1 != len(spk):
        return None
    return required, keys


def solve(spk: bytes) -> tuple[ScriptType, list[bytes]]:
    """Classify a scriptPubKey like Core's Solver and return its solutions.

    Solutions: the hash for P2PKH/P2SH/witness v0/taproot, the key for P2PK, [version byte,
    program] for unknown witness versions, [m, keys..., n] (m and n as one byte each) for multisig.
    """
    if len(spk) == 23 and spk[0] == OP_HASH160 and spk[1] == 20 and spk[22] == OP_EQUAL:
        return ScriptType.SCRIPTHASH, [spk[2:22]]
    wp = is_witness_program(spk)
    if wp is not None:
        version, program = wp
        if version == 0 and len(program) == 20:
            return ScriptType.WITNESS_V0_KEYHASH, [program]
        if version == 0 and len(program) == 32:
            return ScriptType.WITNESS_V0_SCRIPTHASH, [program]
        if version == 1 and len(program) == 32:
            return ScriptType.WITNESS_V1_TAPROOT, [program]
        if is_pay_to_anchor(spk):
            return ScriptType.ANCHOR, []
        if version != 0:
            return ScriptType.WITNESS_UNKNOWN, [bytes([version]), program]
        return ScriptType.NONSTANDARD, []
    if spk and spk[0] == OP_RETURN and is_push_only(spk[1:]):
        return ScriptType.NULLDATA, []
    if len(spk) in (35, 67) and spk[0] == len(spk) - 2 and spk[-1] == OP_CHECKSIG:
        pubkey = spk[1:-1]
        if pubkey_valid_size(pubkey):
            return ScriptType.PUBKEY, [pubkey]
    if (
        len(spk) == 25
        and spk[:3] == bytes([OP_DUP, OP_HASH160, 20])
        and spk[23:] == bytes([OP_EQUALVERIFY, OP_CHECKSIG])
    ):
        return ScriptType.PUBKEYHASH, [spk[3:23]]
    ms = _match_multisig(spk)
    if ms is not None:
        m, keys = ms
        return ScriptType.MULTISIG, [bytes([m]), *keys, bytes([len(keys)])]
    return ScriptType.NONSTANDARD, []


# ---------------------------------------------------------------------------------------------
# Predicates


def is_push_only(script: bytes) -> bool:
    """Core's IsPushOnly: only push opcodes (OP_RESERVED and OP_1..OP_16 count as pushes)."""
    pos = 0
    while pos < len(script):
        op = _get_op(script, pos)
        if op is None or op[0] > OP_16:
            return False
        pos = op[2]
    return True


def is_unspendable(spk: bytes) -> bool:
    """Core's IsUnspendable: starts with OP_RETURN or is longer than MAX_SCRIPT_SIZE."""
    return (len(spk) > 0 and spk[0] == OP_RETURN) or len(spk) > MAX_SCRIPT_SIZE


def sigop_count(script: bytes, accurate: bool) -> int:
    """Core's GetSigOpCount: legacy signature operations, counting multisig as 20 unless accurate."""
    n = 0
    last = OP_INVALIDOPCODE
    pos = 0
    while pos < len(script):
        op = _get_op(script, pos)
        if op is None:
            break
        opcode, _, pos = op
        if opcode in (OP_CHECKSIG, OP_CHECKSIGVERIFY):
            n += 1
        elif opcode in (OP_CHECKMULTISIG, OP_CHECKMULTISIGVERIFY):
            n += _decode_op_n(last) if accurate and OP_1 <= last <= OP_16 else MAX_PUBKEYS_PER_MULTISIG
        last = opcode
    return n


# ---------------------------------------------------------------------------------------------
# Signatures


def is_valid_der_signature(sig_with_hashtype: bytes) -> bool:
    """Core's IsValidSignatureEncoding (BIP66 strict DER), the last byte being the sighash type."""
    sig = sig_with_hashtype
    if not 9 <= len(sig) <= 73 or sig[0] != 0x30 or sig[1] != len(sig) - 3:
        return False
    len_r = sig[3]
    if 5 + len_r >= len(sig):
        return False
    len_s = sig[5 + len_r]
    if len_r + len_s + 7 != len(sig) or sig[2] != 0x02 or len_r == 0 or sig[4] & 0x80:
        return False
    if len_r > 1 and sig[4] == 0 and not sig[5] & 0x80:
        return False
    if sig[len_r + 4] != 0x02 or len_s == 0 or sig[len_r + 6] & 0x80:
        return False
    return not (len_s > 1 and sig[len_r + 6] == 0 and not sig[len_r + 7] & 0x80)


def is_low_der_signature(sig: bytes) -> bool:
    """Core's IsLowDERSignature: strict DER (with trailing sighash byte) and S <= n/2."""
    if not is_valid_der_signature(sig):
        return False
    len_r = sig[3]
    len_s = sig[5 + len_r]
    s = int.from_bytes(sig[6 + len_r : 6 + len_r + len_s], "big")
    if s >= SECP256K1_ORDER:
        return True  # libsecp256k1's lax parser zeroes an overflowing signature, which is "low"
    return s <= SECP256K1_ORDER // 2


def has_defined_hashtype(sig: bytes) -> bool:
    """Core's IsDefinedHashtypeSignature: the last byte, minus ANYONECANPAY, is ALL, NONE or SINGLE."""
    return bool(sig) and SIGHASH_ALL <= (sig[-1] & ~SIGHASH_ANYONECANPAY) <= SIGHASH_SINGLE


# ---------------------------------------------------------------------------------------------
# Asm


def to_asm(script: bytes, attempt_sighash_decode: bool = False) -> str:
    """Core's ScriptToAsmStr: the "asm" field of RPC results.

    Pushes of up to 4 bytes print as numbers, longer ones as hex; with attempt_sighash_decode a
    push that is a strict-DER signature with a defined sighash type prints as <hex>[ALL] etc.
    """
    words: list[str] = []
    decode_sigs = attempt_sighash_decode and not is_unspendable(script)
    pos = 0
    while pos < len(script):
        op = _get_op(script, pos)
        if op is None:
            words.append("[error]")
            break
        opcode, data, pos = op
        if data is None:
            words.append(op_name(opcode))
        elif len(data) <= 4:
            words.append(str(script_num_decode(data)))
        elif decode_sigs and is_valid_der_signature(data) and has_defined_hashtype(data):
            words.append(data[:-1].hex() + "[" + SIGHASH_NAMES[data[-1]] + "]")
        else:
            words.append(data.hex())
    return " ".join(words)


# ---------------------------------------------------------------------------------------------
# Policy


def is_standard_output(spk: bytes, permit_bare_multisig: bool = True) -> bool:
    """Core's IsStandard for one output: any solvable type; bare multisig only up to 3 keys.

    OP_RETURN outputs of any size pass (Core v30 dropped the 83-byte limit; the total is bounded
    per transaction by -datacarriersize, which the mempool checks). permit_bare_multisig mirrors
    -permitbaremultisig (default true), which Core applies per transaction ("bare-multisig").
    """
    kind, sol = solve(spk)
    if kind == ScriptType.NONSTANDARD:
        return False
    if kind == ScriptType.MULTISIG:
        m, n = sol[0][0], sol[-1][0]
        if not 1 <= n <= 3 or not 1 <= m <= n:
            return False
        return permit_bare_multisig
    return True


def dust_threshold(txout: TxOut, dust_relay_fee_per_kvb: int = DUST_RELAY_TX_FEE) -> int:
    """Core's GetDustThreshold: the smallest standard value of an output (0 if unspendable)."""
    spk = txout.script_pubkey
    if is_unspendable(spk):
        return 0
    size = 8 + len(ser_compact_size(len(spk))) + len(spk)
    if is_witness_program(spk) is not None:
        # outpoint, empty scriptSig, sequence, and a P2WPKH witness at a quarter of its weight
        size += 32 + 4 + 1 + 107 // WITNESS_SCALE_FACTOR + 4
    else:
        size += 32 + 4 + 1 + 107 + 4
    return -(-dust_relay_fee_per_kvb * size // 1000)  # CFeeRate::GetFee rounds up


def is_dust(txout: TxOut, dust_relay_fee_per_kvb: int = DUST_RELAY_TX_FEE) -> bool:
    """Core's IsDust: the output's value is below its dust threshold."""
    return txout.value < dust_threshold(txout, dust_relay_fee_per_kvb)
