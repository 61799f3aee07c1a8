"""Transaction signing with a list of keys: the engine behind `signrawtransactionwithkey`.

Follows Bitcoin Core's SignTransaction / ProduceSignature: for each input it extracts signatures already
present (so several signers can complete a multisig one call each), signs what the keys allow, then checks
the result with libbitcoinkernel and reports per-input errors with Core's messages.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pbk
from pbk.script import PrecomputedTransactionData, ScriptVerifyException

from btcl2.bitcoin.hashes import hash160, sha256
from btcl2.bitcoin.keys import PrivateKey, tweak_xonly_pubkey, verify_ecdsa
from btcl2.bitcoin.sighash import (
    SIGHASH_ALL,
    SIGHASH_ANYONECANPAY,
    SIGHASH_DEFAULT,
    SIGHASH_SINGLE,
    legacy_sighash,
    segwit_v0_sighash,
    taproot_sighash,
)
from btcl2.bitcoin.tx import MAX_MONEY, OutPoint, Tx, TxIn, TxOut
from btcl2.errors import InvalidInput

_VALID_HASH_TYPES = frozenset({0x00, 0x01, 0x02, 0x03, 0x81, 0x82, 0x83})
_BASE, _WITNESS_V0 = "base", "witness_v0"

# Script types, named after Core's TxoutType.
PUBKEY = "pubkey"
PUBKEYHASH = "pubkeyhash"
SCRIPTHASH = "scripthash"
MULTISIG = "multisig"
WITNESS_V0_KEYHASH = "witness_v0_keyhash"
WITNESS_V0_SCRIPTHASH = "witness_v0_scripthash"
WITNESS_V1_TAPROOT = "witness_v1_taproot"
WITNESS_UNKNOWN = "witness_unknown"
ANCHOR = "anchor"
NULL_DATA = "nulldata"
NONSTANDARD = "nonstandard"

# Core's per-input messages (src/script/sign.cpp and src/script/script_error.cpp).
ERR_NOT_FOUND = "Input not found or already spent"
ERR_STACK = "Unable to sign input, invalid stack size (possibly missing key)"
ERR_NULLFAIL = "CHECK(MULTI)SIG failing with non-zero signature (possibly need more signatures)"
ERR_EVAL_FALSE = "Script evaluated without error but finished with a false/empty top stack element"
ERR_WITNESS_EMPTY = "Witness program was passed an empty witness"
ERR_WITNESS_MISMATCH = "Witness program hash mismatch"
ERR_SCHNORR = "Invalid Schnorr signature"


class MissingAmount(InvalidInput):
    """Raised when a segwit or taproot input was signed without the amount of the output it spends.

    Core answers signrawtransactionwithkey with RPC_TYPE_ERROR (-3) here rather than a per-input error.
    """

    rpc_code = -3


class PrevoutMismatch(InvalidInput):
    """Raised when a given redeemScript/witnessScript does not fit the output (RPC_INVALID_PARAMETER)."""

    rpc_code = -8


@dataclass(frozen=True, slots=True)
class PrevoutInfo:
    """What the signer must know about an output being spent."""

    script_pubkey: bytes
    """The output's locking script."""
    amount: int | None = None
    """Its value in satoshis; required for segwit and taproot inputs."""
    redeem_script: bytes | None = None
    """The P2SH redeem script, when the output is P2SH."""
    witness_script: bytes | None = None
    """The P2WSH witness script, when the output is P2WSH or P2SH-P2WSH."""


@dataclass(frozen=True, slots=True)
class InputError:
    """Why one input is not (fully) signed, in the shape of Core's `errors` entries."""

    txid_hex: str
    """The spent output's txid (display order)."""
    vout: int
    """The spent output's index."""
    witness: list[str]
    """The input's witness stack after signing, hex."""
    script_sig_hex: str
    """The input's scriptSig after signing, hex."""
    sequence: int
    """The input's nSequence."""
    error: str
    """Core's message."""

    def to_json(self) -> dict[str, Any]:
        """The object Core puts in signrawtransactionwithkey's `errors` array."""
        return {
            "txid": self.txid_hex,
            "vout": self.vout,
            "witness": list(self.witness),
            "scriptSig": self.script_sig_hex,
            "sequence": self.sequence,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class SignResult:
    """The outcome of sign_transaction."""

    tx: Tx
    """The transaction with every signature that could be made or kept."""
    complete: bool
    """True when every input verifies."""
    errors: list[InputError]
    """One entry per input that does not verify, in input order."""


# --- scripts -------------------------------------------------------------------------------------------


def _push(data: bytes) -> bytes:
    n = len(data)
    if n < 0x4C:
        return bytes([n]) + data
    if n <= 0xFF:
        return b"\x4c" + bytes([n]) + data
    if n <= 0xFFFF:
        return b"\x4d" + n.to_bytes(2, "little") + data
    return b"\x4e" + n.to_bytes(4, "little") + data


def _push_all(values: Sequence[bytes]) -> bytes:
    """A scriptSig pushing each value, with the small-number opcodes where Core uses them."""
    out = []
    for v in values:
        if not v:
            out.append(b"\x00")
        elif len(v) == 1 and 1 <= v[0] <= 16:
            out.append(bytes([0x50 + v[0]]))
        elif v == b"\x81":
            out.append(b"\x4f")
        else:
            out.append(_push(v))
    return b"".join(out)


def _parse_pushes(script: bytes) -> list[bytes] | None:
    """The stack a push-only script leaves, or None if it holds other opcodes or is truncated."""
    stack: list[bytes] = []
    pc = 0
    while pc < len(script):
        op = script[pc]
        pc += 1
        if op == 0:
            stack.append(b"")
        elif op <= 0x4E:
            width = {0x4C: 1, 0x4D: 2, 0x4E: 4}.get(op, 0)
            size = int.from_bytes(script[pc : pc + width], "little") if width else op
            pc += width
            if pc + size > len(script):
                return None
            stack.append(script[pc : pc + size])
            pc += size
        elif op == 0x4F:
            stack.append(b"\x81")
        elif 0x51 <= op <= 0x60:
            stack.append(bytes([op - 0x50]))
        else:
            return None
    return stack


def _valid_pubkey_size(pk: bytes) -> bool:
    return bool(pk) and ((pk[0] in (2, 3) and len(pk) == 33) or (pk[0] in (4, 6, 7) and len(pk) == 65))


def _p2pkh(keyhash: bytes) -> bytes:
    return b"\x76\xa9\x14" + keyhash + b"\x88\xac"


def _p2wpkh(keyhash: bytes) -> bytes:
    return b"\x00\x14" + keyhash


def _p2wsh(script: bytes) -> bytes:
    return b"\x00\x20" + sha256(script)


def _p2sh(script: bytes) -> bytes:
    return b"\xa9\x14" + hash160(script) + b"\x87"


def _match_multisig(spk: bytes) -> list[bytes] | None:
    if len(spk) < 3 or spk[-1] != 0xAE or not 0x51 <= spk[0] <= 0x60 or not 0x51 <= spk[-2] <= 0x60:
        return None
    keys = _parse_pushes(spk[1:-2])
    m, n = spk[0] - 0x50, spk[-2] - 0x50
    if keys is None or len(keys) != n or m > n or not all(_valid_pubkey_size(k) for k in keys):
        return None
    return [bytes([m]), *keys, bytes([n])]


def solve(spk: bytes) -> tuple[str, list[bytes]]:
    """Classify a script as Core's Solver does: (type, solutions)."""
    if len(spk) == 23 and spk[:2] == b"\xa9\x14" and spk[-1] == 0x87:
        return SCRIPTHASH, [spk[2:22]]
    if 4 <= len(spk) <= 42 and (spk[0] == 0 or 0x51 <= spk[0] <= 0x60) and spk[1] + 2 == len(spk):
        version, program = (0 if spk[0] == 0 else spk[0] - 0x50), spk[2:]
        if version == 0 and len(program) == 20:
            return WITNESS_V0_KEYHASH, [program]
        if version == 0 and len(program) == 32:
            return WITNESS_V0_SCRIPTHASH, [program]
        if version == 1 and len(program) == 32:
            return WITNESS_V1_TAPROOT, [program]
        if version == 1 and program == b"\x4e\x73":
            return ANCHOR, []
        if version != 0:
            return WITNESS_UNKNOWN, [bytes([version]), program]
        return NONSTANDARD, []
    if spk[:1] == b"\x6a":
        return NULL_DATA, []
    if len(spk) in (35, 67) and spk[0] == len(spk) - 2 and spk[-1] == 0xAC and _valid_pubkey_size(spk[1:-1]):
        return PUBKEY, [spk[1:-1]]
    if len(spk) == 25 and spk[:3] == b"\x76\xa9\x14" and spk[-2:] == b"\x88\xac":
        return PUBKEYHASH, [spk[3:23]]
    multisig = _match_multisig(spk)
    if multisig is not None:
        return MULTISIG, multisig
    return NONSTANDARD, []


# --- signing -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Input:
    """Signing state of one input (Core's SignatureData, reduced to what key-based signing needs)."""

    index: int
    prev: PrevoutInfo
    amount: int
    signatures: dict[bytes, tuple[bytes, bytes]]
    """hash160(pubkey) -> (pubkey, signature with hash type byte), found in the input or made here."""
    found_scripts: list[bytes]
    """Redeem/witness scripts read from the input's existing scriptSig and witness."""


@dataclass(slots=True)
class _Signer:
    tx: Tx
    hash_type: int
    keys_by_id: dict[bytes, tuple[PrivateKey, bytes]]
    spent: list[TxOut] | None
    """Every spent output, or None when one is unknown (taproot signing then is impossible, as in Core)."""

    def ecdsa_digest(self, inp: _Input, script_code: bytes, sigversion: str, hash_type: int) -> bytes:
        if sigversion == _WITNESS_V0:
            return segwit_v0_sighash(self.tx, inp.index, script_code, inp.amount, hash_type)
        return legacy_sighash(self.tx, inp.index, script_code, hash_type)

    def create_sig(self, inp: _Input, pubkey: bytes, script_code: bytes, sigversion: str) -> bytes | None:
        keyid = hash160(pubkey)
        if keyid in inp.signatures:
            return inp.signatures[keyid][1]
        entry = self.keys_by_id.get(keyid)
        if entry is None:
            return None
        # Core refuses uncompressed keys inside segwit v0 scripts: they are non-standard there.
        if sigversion == _WITNESS_V0 and len(pubkey) != 33:
            return None
        hash_type = SIGHASH_ALL if self.hash_type == SIGHASH_DEFAULT else self.hash_type
        digest = self.ecdsa_digest(inp, script_code, sigversion, hash_type)
        sig = entry[0].sign_ecdsa(digest) + bytes([hash_type])
        inp.signatures[keyid] = (pubkey, sig)
        return sig

    def find_script(self, inp: _Input, script_hash: bytes) -> bytes | None:
        """A known script whose hash160 (20 bytes) or sha256 (32 bytes) is script_hash."""
        prev = inp.prev
        candidates = [s for s in (prev.witness_script, prev.redeem_script) if s is not None]
        candidates += [_p2wsh(s) for s in candidates]
        candidates += inp.found_scripts
        # P2SH-P2WPKH needs no redeem script from the caller: it follows from the key.
        candidates += [_p2wpkh(keyid) for keyid, (_, pk) in self.keys_by_id.items() if len(pk) == 33]
        hasher = hash160 if len(script_hash) == 20 else sha256
        return next((s for s in candidates if hasher(s) == script_hash), None)

    def sign_taproot(self, inp: _Input, output_key: bytes) -> list[bytes] | None:
        if self.spent is None:
            return None
        for key, _ in self.keys_by_id.values():
            xonly = key.xonly_pubkey()
            if tweak_xonly_pubkey(xonly) == output_key:
                signer = key.tweak_taproot()
            elif xonly == output_key:
                signer = key
            else:
                continue
            digest = taproot_sighash(self.tx, inp.index, self.spent, self.hash_type)
            suffix = bytes([self.hash_type]) if self.hash_type != SIGHASH_DEFAULT else b""
            return [signer.sign_schnorr(digest) + suffix]
        return None

    def sign_step(self, inp: _Input, script: bytes, sigversion: str) -> tuple[bool, str, list[bytes]]:
        """One level of Core's SignStep: (solved, script type, stack or next script)."""
        kind, sol = solve(script)
        if kind == PUBKEY:
            sig = self.create_sig(inp, sol[0], script, sigversion)
            return (sig is not None, kind, [sig] if sig is not None else [])
        if kind == PUBKEYHASH:
            pubkey = self.pubkey_for(inp, sol[0])
            sig = self.create_sig(inp, pubkey, script, sigversion) if pubkey is not None else None
            if pubkey is None or sig is None:
                return False, kind, []
            return True, kind, [sig, pubkey]
        if kind in (SCRIPTHASH, WITNESS_V0_SCRIPTHASH):
            found = self.find_script(inp, sol[0])
            return (found is not None, kind, [found] if found is not None else [])
        if kind == MULTISIG:
            return self.sign_multisig(inp, script, sol, sigversion)
        if kind == WITNESS_V0_KEYHASH:
            return True, kind, [sol[0]]
        if kind == WITNESS_V1_TAPROOT:
            stack = self.sign_taproot(inp, sol[0])
            return (stack is not None, kind, stack or [])
        if kind == ANCHOR:
            return True, kind, []
        return False, kind, []

    def pubkey_for(self, inp: _Input, keyid: bytes) -> bytes | None:
        if keyid in inp.signatures:
            return inp.signatures[keyid][0]
        entry = self.keys_by_id.get(keyid)
        return entry[1] if entry is not None else None

    def sign_multisig(
        self, inp: _Input, script: bytes, sol: list[bytes], sigversion: str
    ) -> tuple[bool, str, list[bytes]]:
        required = sol[0][0]
        stack = [b""]  # the extra element CHECKMULTISIG pops
        for pubkey in sol[1:-1]:
            # Every key is tried, so signatures are collected in pubkey order up to the threshold.
            sig = self.create_sig(inp, pubkey, script, sigversion)
            if sig is not None and len(stack) < required + 1:
                stack.append(sig)
        solved = len(stack) == required + 1
        stack += [b""] * (required + 1 - len(stack))
        return solved, MULTISIG, stack

    def produce(self, inp: _Input) -> tuple[bytes, tuple[bytes, ...], bool]:
        """Core's ProduceSignature: (scriptSig, witness, solved)."""
        spk = inp.prev.script_pubkey
        solved, kind, result = self.sign_step(inp, spk, _BASE)
        subscript: bytes | None = None
        if solved and kind == SCRIPTHASH:
            subscript = result[0]
            solved, kind, result = self.sign_step(inp, subscript, _BASE)
            solved = solved and kind != SCRIPTHASH
        witness: list[bytes] = []
        if solved and kind == WITNESS_V0_KEYHASH:
            solved, _, witness = self.sign_step(inp, _p2pkh(result[0]), _WITNESS_V0)
            result = []
        elif solved and kind == WITNESS_V0_SCRIPTHASH:
            witness_script = result[0]
            ok, sub, witness = self.sign_step(inp, witness_script, _WITNESS_V0)
            solved = ok and sub not in (SCRIPTHASH, WITNESS_V0_SCRIPTHASH, WITNESS_V0_KEYHASH)
            witness = [*witness, witness_script]
            result = []
        elif kind == WITNESS_V1_TAPROOT and subscript is None:
            witness = result if solved else []
            result = []
        if subscript is not None:
            result = [*result, subscript]
        return _push_all(result), tuple(witness), solved

    def extract(self, inp: _Input, txin: TxIn) -> None:
        """Core's DataFromTransaction: learn scripts and valid multisig signatures already in the input."""
        stack = _parse_pushes(txin.script_sig) or []
        witness = list(txin.witness)
        script = inp.prev.script_pubkey
        kind, sol = solve(script)
        sigversion = _BASE
        if kind == SCRIPTHASH and stack and stack[-1]:
            script = stack.pop()
            inp.found_scripts.append(script)
            kind, sol = solve(script)
        if kind == WITNESS_V0_SCRIPTHASH and witness and witness[-1]:
            script = witness[-1]
            inp.found_scripts.append(script)
            kind, sol = solve(script)
            stack, sigversion = witness[:-1], _WITNESS_V0
        if kind != MULTISIG or not stack:
            return
        pubkeys = sol[1:-1]
        next_key = 0
        for sig in stack:
            for i in range(next_key, len(pubkeys)):
                keyid = hash160(pubkeys[i])
                if keyid in inp.signatures or self.check_sig(inp, sig, pubkeys[i], script, sigversion):
                    next_key = i + 1
                    break

    def check_sig(self, inp: _Input, sig: bytes, pubkey: bytes, script_code: bytes, sigversion: str) -> bool:
        if not sig:
            return False
        digest = self.ecdsa_digest(inp, script_code, sigversion, sig[-1])
        if not verify_ecdsa(pubkey, sig[:-1], digest):
            return False
        inp.signatures[hash160(pubkey)] = (pubkey, sig)
        return True


def _kernel_verify(tx: Tx, index: int, spk: bytes, amount: int, spent: list[TxOut] | None) -> bool:
    """Check one input with libbitcoinkernel under every consensus rule."""
    flags = pbk.ScriptVerificationFlags.ALL
    ktx = pbk.Transaction(tx.encode())
    precomputed = None
    if spent is not None:
        outs = [pbk.TransactionOutput(pbk.ScriptPubkey(o.script_pubkey), o.value) for o in spent]
        precomputed = PrecomputedTransactionData(ktx, outs)
    elif solve(spk)[0] == WITNESS_V1_TAPROOT:
        # Taproot cannot be checked without every spent output; Core fails such inputs for missing data.
        return False
    else:
        flags &= ~pbk.ScriptVerificationFlags.TAPROOT
    try:
        return bool(pbk.ScriptPubkey(spk).verify(amount, ktx, precomputed, index, flags))
    except ScriptVerifyException:
        return False


def _sig_stack_error(kind: str, stack: list[bytes]) -> str:
    """The error Core's interpreter reports for signatures that do not satisfy a (multi)sig script."""
    if kind == MULTISIG:
        return ERR_NULLFAIL if any(stack[1:]) else ERR_EVAL_FALSE
    if kind in (PUBKEY, PUBKEYHASH) and not stack:
        return ERR_STACK
    return ERR_NULLFAIL


def _witness_error(kind: str, program: bytes, witness: Sequence[bytes]) -> str:
    if not witness:
        return ERR_WITNESS_EMPTY
    if kind == WITNESS_V0_KEYHASH:
        return ERR_WITNESS_MISMATCH if len(witness) != 2 else ERR_NULLFAIL
    if kind == WITNESS_V0_SCRIPTHASH:
        if sha256(witness[-1]) != program:
            return ERR_WITNESS_MISMATCH
        return _sig_stack_error(solve(witness[-1])[0], list(witness[:-1]))
    return ERR_SCHNORR


def _failure_message(spk: bytes, script_sig: bytes, witness: Sequence[bytes]) -> str:
    """Name why an input fails as Core would, from the shape of what it holds.

    The kernel only answers valid or invalid, so the cause is read from the scripts: the common cases
    (missing key, missing signatures, empty witness) give exactly Core's messages.
    """
    kind, sol = solve(spk)
    if kind in (WITNESS_V0_KEYHASH, WITNESS_V0_SCRIPTHASH, WITNESS_V1_TAPROOT):
        return _witness_error(kind, sol[0], witness)
    stack = _parse_pushes(script_sig) or []
    if not stack and kind in (PUBKEY, PUBKEYHASH, SCRIPTHASH, MULTISIG):
        return ERR_STACK
    if kind == SCRIPTHASH:
        inner, inner_sol = solve(stack[-1])
        if inner in (WITNESS_V0_KEYHASH, WITNESS_V0_SCRIPTHASH):
            return _witness_error(inner, inner_sol[0], witness)
        return _sig_stack_error(inner, stack[:-1])
    if kind in (PUBKEY, PUBKEYHASH, MULTISIG):
        return _sig_stack_error(kind, stack)
    return ERR_EVAL_FALSE


def _check_prevout(prev: PrevoutInfo) -> None:
    """Reject inconsistent prevout data as Core's ParsePrevouts does."""
    if prev.amount is not None and not 0 <= prev.amount <= MAX_MONEY:
        raise InvalidInput("Amount out of range")
    spk = prev.script_pubkey
    rs, ws = prev.redeem_script, prev.witness_script
    if rs is None and ws is None:
        return
    script = ws if ws is not None else rs
    assert script is not None
    if ws is not None and rs is not None and rs != ws and rs != _p2wsh(ws):
        raise PrevoutMismatch("redeemScript does not correspond to witnessScript")
    kind = solve(spk)[0]
    if kind == SCRIPTHASH and spk not in (_p2sh(script), _p2sh(_p2wsh(script))):
        raise PrevoutMismatch("redeemScript/witnessScript does not match scriptPubKey")
    if kind == WITNESS_V0_SCRIPTHASH and spk != _p2wsh(script):
        raise PrevoutMismatch("redeemScript/witnessScript does not match scriptPubKey")


def _keystore(keys: Sequence[PrivateKey]) -> dict[bytes, tuple[PrivateKey, bytes]]:
    # A bare PrivateKey does not say whether its owner used the compressed form, so both are indexed.
    store: dict[bytes, tuple[PrivateKey, bytes]] = {}
    for key in keys:
        for compressed in (False, True):
            pubkey = key.pubkey(compressed)
            store[hash160(pubkey)] = (key, pubkey)
    return store


def _missing_amount(prev: PrevoutInfo) -> MissingAmount:
    # Core names the coin as CTxOut::ToString shows it, with the unknown amount standing at MAX_MONEY.
    value = f"{MAX_MONEY // 100_000_000}.{MAX_MONEY % 100_000_000:08d}"
    spk = prev.script_pubkey.hex()[:30]
    return MissingAmount(f"Missing amount for CTxOut(nValue={value}, scriptPubKey={spk})")


def sign_transaction(
    tx: Tx,
    keys: Sequence[PrivateKey],
    prevouts: dict[OutPoint, PrevoutInfo],
    sighash_type: int = SIGHASH_DEFAULT,
) -> SignResult:
    """Sign every input the keys can sign, keeping signatures already present; Core's SignTransaction.

    SIGHASH_DEFAULT (Core's default too) signs ECDSA inputs with SIGHASH_ALL and taproot inputs with a
    64-byte signature. Raises MissingAmount when a segwit input was signed without its amount and
    PrevoutMismatch for scripts that do not fit their scriptPubKey.
    """
    if sighash_type not in _VALID_HASH_TYPES:
        raise InvalidInput(f"{sighash_type} is not a valid sighash parameter.")
    for info in prevouts.values():
        _check_prevout(info)
    known = [prevouts.get(txin.prevout) for txin in tx.vin]
    spent = None
    if all(p is not None for p in known):
        spent = [TxOut(MAX_MONEY if p.amount is None else p.amount, p.script_pubkey) for p in known if p]
    signer = _Signer(tx, sighash_type, _keystore(keys), spent)
    single = (sighash_type & ~SIGHASH_ANYONECANPAY) == SIGHASH_SINGLE
    errors: dict[int, str] = {}
    missing_amount: list[int] = []
    for i, prev in enumerate(known):
        if prev is None:
            errors[i] = ERR_NOT_FOUND
            continue
        amount = MAX_MONEY if prev.amount is None else prev.amount
        inp = _Input(i, prev, amount, {}, [])
        txin = signer.tx.vin[i]
        if not _kernel_verify(signer.tx, i, prev.script_pubkey, amount, spent):
            signer.extract(inp, txin)
            if not single or i < len(tx.vout):
                script_sig, witness, _ = signer.produce(inp)
                txin = replace(txin, script_sig=script_sig, witness=witness)
                vin = (*signer.tx.vin[:i], txin, *signer.tx.vin[i + 1 :])
                signer.tx = replace(signer.tx, vin=vin)
        if amount == MAX_MONEY and txin.witness:
            missing_amount.append(i)
            continue
        if not _kernel_verify(signer.tx, i, prev.script_pubkey, amount, spent):
            errors[i] = _failure_message(prev.script_pubkey, txin.script_sig, txin.witness)
    if missing_amount:
        raise _missing_amount(known[missing_amount[0]] or PrevoutInfo(b""))
    reported = [_input_error(signer.tx.vin[i], message) for i, message in errors.items()]
    return SignResult(signer.tx, not errors, reported)


def _input_error(txin: TxIn, message: str) -> InputError:
    return InputError(
        txin.prevout.txid_hex,
        txin.prevout.vout,
        [w.hex() for w in txin.witness],
        txin.script_sig.hex(),
        txin.sequence,
        message,
    )
