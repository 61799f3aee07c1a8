"""The one keccak-256 entry point of the core, so the backend can change in one place.

safe-pysha3's C implementation is about eight times faster per call than eth-hash's pycryptodome backend, and
the sequencer hashes dozens of times per transfer (signing digests, tree nodes, roots); eth-hash stays as the
fallback for platforms without a build of it.
"""

from collections.abc import Callable

_keccak: Callable[[bytes], bytes]
try:
    import sha3

    def _keccak(data: bytes) -> bytes:
        return bytes(sha3.keccak_256(data).digest())

except ImportError:  # pragma: no cover - exercised only where safe-pysha3 is missing
    from eth_hash.auto import keccak as _eth_keccak

    def _keccak(data: bytes) -> bytes:
        return bytes(_eth_keccak(data))


def keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum uses it (the pre-standard padding, not NIST SHA3-256)."""
    return _keccak(data)
