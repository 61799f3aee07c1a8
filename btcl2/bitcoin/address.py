"""Bitcoin addresses: networks, Base58Check, Bech32/Bech32m (BIP173/BIP350), and script conversion.

Decoding follows Bitcoin Core's DecodeDestination (src/key_io.cpp) step by step, because the
regtest node must reject a bad address with the very message bitcoind gives, including the
likely error positions that validateaddress reports for Bech32 strings.
"""

from dataclasses import dataclass
from enum import Enum

from btcl2.bitcoin import script as s
from btcl2.bitcoin.hashes import sha256d
from btcl2.errors import InvalidInput


class InvalidAddress(InvalidInput):
    """Raised when a string is not a valid address for the network; the message is Core's."""

    def __init__(self, message: str, error_locations: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.error_locations = error_locations
        """Indices of likely typos (Bech32 only), as validateaddress's "error_locations"."""


@dataclass(frozen=True, slots=True)
class Network:
    """Address and port parameters of one Bitcoin network."""

    name: str
    """The chain name as getblockchaininfo's "chain" reports it."""
    bech32_hrp: str
    """Human-readable part of segwit addresses."""
    p2pkh_prefix: int
    """Base58 version byte of P2PKH addresses."""
    p2sh_prefix: int
    """Base58 version byte of P2SH addresses."""
    wif_prefix: int
    """Base58 version byte of WIF private keys."""
    rpc_port: int
    """Default JSON-RPC port."""


MAINNET = Network("main", "bc", 0, 5, 128, 8332)
TESTNET = Network("test", "tb", 111, 196, 239, 18332)
TESTNET4 = Network("testnet4", "tb", 111, 196, 239, 48332)
SIGNET = Network("signet", "tb", 111, 196, 239, 38332)
REGTEST = Network("regtest", "bcrt", 111, 196, 239, 18443)
NETWORKS: dict[str, Network] = {n.name: n for n in (MAINNET, TESTNET, TESTNET4, SIGNET, REGTEST)}


def network_by_name(name: str) -> Network:
    """The network whose getblockchaininfo "chain" is name; InvalidInput if unknown."""
    try:
        return NETWORKS[name]
    except KeyError:
        raise InvalidInput(f"unknown network {name!r}") from None


# ---------------------------------------------------------------------------------------------
# Base58


B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(B58_ALPHABET)}
_SPACE = " \f\n\r\t\v"


def base58_encode(data: bytes) -> str:
    """Encode bytes in Base58, each leading zero byte as a '1'."""
    zeros = len(data) - len(data.lstrip(b"\x00"))
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(B58_ALPHABET[r])
    return "1" * zeros + "".join(reversed(out))


def base58_decode(text: str, max_len: int) -> bytes | None:
    """Decode Base58 like Core: surrounding whitespace is ignored; None if invalid or over max_len bytes."""
    if "\x00" in text:
        return None
    body = text.strip(_SPACE)
    ones = len(body) - len(body.lstrip("1"))
    if ones > max_len:
        return None
    n = 0
    for c in body[ones:]:
        digit = _B58_INDEX.get(c)
        if digit is None:
            return None
        n = n * 58 + digit
    out = b"\x00" * ones + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return out if len(out) <= max_len else None


def base58check_encode(payload: bytes) -> str:
    """Base58 of payload followed by the first 4 bytes of its double SHA-256."""
    return base58_encode(payload + sha256d(payload)[:4])


def base58check_decode(text: str, max_len: int) -> bytes | None:
    """The payload of a Base58Check string of at most max_len payload bytes; None if invalid."""
    raw = base58_decode(text, max_len + 4)
    if raw is None or len(raw) < 4 or sha256d(raw[:-4])[:4] != raw[-4:]:
        return None
    return raw[:-4]


def encode_wif(secret: bytes, network: Network, compressed: bool = True) -> str:
    """A private key in Wallet Import Format."""
    return base58check_encode(bytes([network.wif_prefix]) + secret + (b"\x01" if compressed else b""))


def decode_wif(text: str, network: Network) -> tuple[bytes, bool] | None:
    """(32-byte secret, compressed) of a WIF key for network, as Core's DecodeSecret; None if invalid."""
    data = base58check_decode(text, 34)
    if data is None or not data or data[0] != network.wif_prefix:
        return None
    if len(data) == 33:
        secret, compressed = data[1:], False
    elif len(data) == 34 and data[-1] == 1:
        secret, compressed = data[1:33], True
    else:
        return None
    if not 0 < int.from_bytes(secret, "big") < s.SECP256K1_ORDER:
        return None
    return secret, compressed


# ---------------------------------------------------------------------------------------------
# Bech32 / Bech32m


class Bech32Encoding(Enum):
    """Which checksum constant a Bech32 string uses."""

    BECH32 = 1
    BECH32M = 0x2BC830A3


BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {c: i for i, c in enumerate(BECH32_CHARSET)}
BECH32_MAX_LEN = 90
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GENERATOR[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_encode(hrp: str, data: list[int], encoding: Bech32Encoding) -> str:
    """Encode 5-bit values under a lowercase hrp with the encoding's checksum."""
    values = _hrp_expand(hrp) + data
    mod = _polymod([*values, 0, 0, 0, 0, 0, 0]) ^ encoding.value
    checksum = [(mod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(BECH32_CHARSET[d] for d in data + checksum)


def _check_characters(text: str) -> list[int]:
    """Positions of characters outside 33..126 or breaking single case (Core's CheckCharacters)."""
    errors = []
    lower = upper = False
    for i, c in enumerate(text):
        if "a" <= c <= "z":
            if upper:
                errors.append(i)
            else:
                lower = True
        elif "A" <= c <= "Z":
            if lower:
                errors.append(i)
            else:
                upper = True
        elif not 33 <= ord(c) <= 126:
            errors.append(i)
    return errors


def bech32_decode(text: str, limit: int = BECH32_MAX_LEN) -> tuple[Bech32Encoding, str, list[int]] | None:
    """(encoding, lowercase hrp, 5-bit data without checksum) of a valid string, else None."""
    if _check_characters(text):
        return None
    pos = text.rfind("1")
    if len(text) > limit or pos < 1 or pos + 6 >= len(text):
        return None
    lowered = text.lower()
    hrp = lowered[:pos]
    data = []
    for c in lowered[pos + 1 :]:
        if c not in _BECH32_INDEX:
            return None
        data.append(_BECH32_INDEX[c])
    check = _polymod(_hrp_expand(hrp) + data)
    for encoding in Bech32Encoding:
        if check == encoding.value:
            return encoding, hrp, data[:-6]
    return None


def convert_bits(data: list[int] | bytes, frombits: int, tobits: int, pad: bool) -> list[int] | None:
    """Regroup bits (8->5 with padding to encode, 5->8 without to decode); None on bad padding."""
    acc = bits = 0
    out = []
    maxv = (1 << tobits) - 1
    for value in data:
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or (acc << (tobits - bits)) & maxv:
        return None
    return out


def encode_segwit_address(hrp: str, version: int, program: bytes) -> str:
    """A segwit address: Bech32 for version 0, Bech32m for versions 1..16 (BIP350)."""
    encoding = Bech32Encoding.BECH32 if version == 0 else Bech32Encoding.BECH32M
    five = convert_bits(program, 8, 5, True)
    assert five is not None  # padding never fails when encoding
    return bech32_encode(hrp, [version, *five], encoding)


# GF(1024) as GF(32)[e]/(e^2 + 9e + 23), for locating Bech32 errors as Core's LocateErrors does.
def _gf_tables() -> tuple[list[int], list[int]]:
    gf32_exp = [1] * 31
    gf32_log = [-1] * 32
    gf32_log[1] = 0
    v = 1
    for i in range(1, 31):
        v <<= 1
        if v & 32:
            v ^= 41
        gf32_exp[i] = v
        gf32_log[v] = i
    exp = [1] * 1023
    log = [-1] * 1024
    log[1] = 0
    v = 1
    for i in range(1, 1023):
        v0, v1 = v & 31, v >> 5
        v0n = gf32_exp[(gf32_log[v1] + gf32_log[23]) % 31] if v1 else 0
        v1n = (gf32_exp[(gf32_log[v1] + gf32_log[9]) % 31] if v1 else 0) ^ v0
        v = v1n << 5 | v0n
        exp[i] = v
        log[v] = i
    return exp, log


_GF1024_EXP, _GF1024_LOG = _gf_tables()
_SYNDROME_CONSTS = [
    _GF1024_EXP[(999 * k + _GF1024_LOG[1 << shift]) % 1023] << 20
    | _GF1024_EXP[(998 * k + _GF1024_LOG[1 << shift]) % 1023] << 10
    | _GF1024_EXP[(997 * k + _GF1024_LOG[1 << shift]) % 1023]
    for k in range(1, 6)
    for shift in range(5)
]


def _syndrome(residue: int) -> int:
    low = residue & 0x1F
    result = low ^ (low << 10) ^ (low << 20)
    for i in range(25):
        if (residue >> (5 + i)) & 1:
            result ^= _SYNDROME_CONSTS[i]
    return result


def _error_positions(residue: int, length: int, text_len: int) -> list[int]:
    """Positions of at most two substitutions that explain a checksum residue, if any."""
    syn = _syndrome(residue)
    s0, s1, s2 = syn & 0x3FF, (syn >> 10) & 0x3FF, syn >> 20
    l_s0, l_s1, l_s2 = _GF1024_LOG[s0], _GF1024_LOG[s1], _GF1024_LOG[s2]
    exp, log = _GF1024_EXP, _GF1024_LOG
    if l_s0 != -1 and l_s1 != -1 and l_s2 != -1 and (2 * l_s1 - l_s2 - l_s0 + 2046) % 1023 == 0:
        p1 = (l_s1 - l_s0 + 1023) % 1023
        l_e1 = l_s0 + (1023 - 997) * p1
        return [text_len - p1 - 1] if p1 < length and l_e1 % 33 == 0 else []
    for p1 in range(length):
        s2_s1p1 = s2 ^ (0 if s1 == 0 else exp[(l_s1 + p1) % 1023])
        s1_s0p1 = s1 ^ (0 if s0 == 0 else exp[(l_s0 + p1) % 1023])
        if s2_s1p1 == 0 or s1_s0p1 == 0:
            continue
        p2 = (log[s2_s1p1] - log[s1_s0p1] + 1023) % 1023
        if p2 >= length or p1 == p2:
            continue
        s1_s0p2 = s1 ^ (0 if s0 == 0 else exp[(l_s0 + p2) % 1023])
        if s1_s0p2 == 0:
            continue
        inv_p1_p2 = 1023 - log[exp[p1] ^ exp[p2]]
        if (log[s1_s0p1] + inv_p1_p2 + (1023 - 997) * p2) % 33:
            continue
        if (log[s1_s0p2] + inv_p1_p2 + (1023 - 997) * p1) % 33:
            continue
        first, second = text_len - max(p1, p2) - 1, text_len - min(p1, p2) - 1
        return [first, second]
    return []


def bech32_locate_errors(text: str, limit: int = BECH32_MAX_LEN) -> tuple[str, list[int]]:
    """Core's bech32::LocateErrors: (message, likely error indices); ("", []) if the string is valid."""
    if len(text) > limit:
        return "Bech32 string too long", list(range(limit, len(text)))
    bad = _check_characters(text)
    if bad:
        return "Invalid character or mixed case", bad
    pos = text.rfind("1")
    if pos == -1:
        return "Missing separator", []
    if pos == 0 or pos + 6 >= len(text):
        return "Invalid separator position", [pos]
    hrp = text[:pos].lower()
    values = []
    for i in range(pos + 1, len(text)):
        d = _BECH32_INDEX.get(text[i].lower())
        if d is None:
            return "Invalid Base 32 character", [i]
        values.append(d)
    locations: list[int] = []
    found: Bech32Encoding | None = None
    for encoding in (Bech32Encoding.BECH32, Bech32Encoding.BECH32M):
        residue = _polymod(_hrp_expand(hrp) + values) ^ encoding.value
        if residue == 0:
            return "", []
        possible = _error_positions(residue, len(values), len(text))
        if not locations or (possible and len(possible) < len(locations)):
            locations = possible
            if locations:
                found = encoding
    if found is Bech32Encoding.BECH32M:
        return "Invalid Bech32m checksum", locations
    if found is Bech32Encoding.BECH32:
        return "Invalid Bech32 checksum", locations
    return "Invalid checksum", locations


# ---------------------------------------------------------------------------------------------
# Addresses <-> scripts


def decode_destination(addr: str, network: Network) -> tuple[bytes | None, str, list[int]]:
    """Core's DecodeDestination: (scriptPubKey or None, error message, Bech32 error locations)."""
    hrp = network.bech32_hrp
    # A Bech32 string for another network falls through to Base58 and gets Base58's error.
    if addr[: len(hrp)].lower() != hrp:
        return _decode_base58_destination(addr, network)
    dec = bech32_decode(addr)
    if dec is None:
        message, locations = bech32_locate_errors(addr)
        return None, message, locations
    encoding, dec_hrp, data = dec
    if not data:
        return None, "Empty Bech32 data section", []
    if dec_hrp != hrp:
        message = "Invalid or unsupported prefix for Segwit (Bech32) address"
        message += f" (expected {hrp}, got {dec_hrp})."
        return None, message, []
    version = data[0]
    if version == 0 and encoding is not Bech32Encoding.BECH32:
        return None, "Version 0 witness address must use Bech32 checksum", []
    if version != 0 and encoding is not Bech32Encoding.BECH32M:
        return None, "Version 1+ witness address must use Bech32m checksum", []
    program_bits = convert_bits(data[1:], 5, 8, False)
    if program_bits is None:
        return None, "Invalid padding in Bech32 data section", []
    program = bytes(program_bits)
    unit = "byte" if len(program) == 1 else "bytes"
    if version == 0:
        if len(program) in (20, 32):
            return s.witness_program(0, program), "", []
        return None, f"Invalid Bech32 v0 address program size ({len(program)} {unit}), per BIP141", []
    if version == 1 and len(program) == 32:
        return s.p2tr(program), "", []
    if version == 1 and program == b"\x4e\x73":
        return s.p2a(), "", []
    if version > 16:
        return None, "Invalid Bech32 address witness version", []
    if not 2 <= len(program) <= 40:
        return None, f"Invalid Bech32 address program size ({len(program)} {unit})", []
    return s.witness_program(version, program), "", []


def _decode_base58_destination(addr: str, network: Network) -> tuple[bytes | None, str, list[int]]:
    data = base58check_decode(addr, 21)
    if data is None:
        if base58_decode(addr, 100) is None:
            return None, "Invalid or unsupported Segwit (Bech32) or Base58 encoding.", []
        return None, "Invalid checksum or length of Base58 address (P2PKH or P2SH)", []
    if len(data) == 21 and data[0] == network.p2pkh_prefix:
        return s.p2pkh(data[1:]), "", []
    if len(data) == 21 and data[0] == network.p2sh_prefix:
        return s.p2sh(data[1:]), "", []
    if data and data[0] in (network.p2pkh_prefix, network.p2sh_prefix):
        return None, "Invalid length for Base58 address (P2PKH or P2SH)", []
    return None, "Invalid or unsupported Base58-encoded address.", []


def address_to_script(addr: str, network: Network) -> bytes:
    """The scriptPubKey an address pays to; InvalidAddress with Core's message if invalid."""
    spk, error, locations = decode_destination(addr, network)
    if spk is None:
        raise InvalidAddress(error, tuple(locations))
    return spk


def is_valid_address(addr: str, network: Network) -> bool:
    """Whether addr decodes to a destination on network."""
    return decode_destination(addr, network)[0] is not None


def script_to_address(spk: bytes, network: Network) -> str | None:
    """Core's ExtractDestination + EncodeDestination; None for P2PK, multisig, nulldata, nonstandard."""
    kind, sol = s.solve(spk)
    if kind == s.ScriptType.PUBKEYHASH:
        return base58check_encode(bytes([network.p2pkh_prefix]) + sol[0])
    if kind == s.ScriptType.SCRIPTHASH:
        return base58check_encode(bytes([network.p2sh_prefix]) + sol[0])
    if kind in (s.ScriptType.WITNESS_V0_KEYHASH, s.ScriptType.WITNESS_V0_SCRIPTHASH):
        return encode_segwit_address(network.bech32_hrp, 0, sol[0])
    if kind == s.ScriptType.WITNESS_V1_TAPROOT:
        return encode_segwit_address(network.bech32_hrp, 1, sol[0])
    if kind == s.ScriptType.ANCHOR:
        return encode_segwit_address(network.bech32_hrp, 1, b"\x4e\x73")
    if kind == s.ScriptType.WITNESS_UNKNOWN:
        return encode_segwit_address(network.bech32_hrp, sol[0][0], sol[1])
    return None
