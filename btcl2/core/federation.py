"""The federation's custody script: a P2WSH sorted M-of-N multisig holding every deposited satoshi."""

from btcl2.bitcoin.hashes import sha256
from btcl2.bitcoin.script import MAX_PUBKEYS_PER_MULTISIG, multisig, p2wsh
from btcl2.core.errors import BadFederation


def federation_script(pubkeys: list[bytes] | tuple[bytes, ...], m: int) -> bytes:
    """The witness script OP_m <keys sorted bytewise> OP_n OP_CHECKMULTISIG (as descriptor `sortedmulti`).

    Keys must be distinct 33-byte compressed keys; 1 <= m <= n <= 20.
    """
    for key in pubkeys:
        if len(key) != 33 or key[0] not in (2, 3):
            raise BadFederation(f"federation key is not a 33-byte compressed key: {key.hex()}")
    if len(set(pubkeys)) != len(pubkeys):
        raise BadFederation("duplicate federation key")
    if not 1 <= m <= len(pubkeys) <= MAX_PUBKEYS_PER_MULTISIG:
        raise BadFederation(f"need 1 <= m <= n <= {MAX_PUBKEYS_PER_MULTISIG}, got m={m} n={len(pubkeys)}")
    return multisig(m, sorted(pubkeys))


def federation_script_pubkey(pubkeys: list[bytes] | tuple[bytes, ...], m: int) -> bytes:
    """The P2WSH scriptPubKey (OP_0 <sha256(witness script)>) that deposits pay."""
    return p2wsh(sha256(federation_script(pubkeys, m)))
