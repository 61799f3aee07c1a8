"""The one keccak-256 entry point of the core, so the backend can change in one place."""

from eth_hash.auto import keccak


def keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum uses it (the pre-standard padding, not NIST SHA3-256)."""
    return bytes(keccak(data))
