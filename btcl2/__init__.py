"""btcl2: a cross-chain Bitcoin L2 node."""

__version__ = "0.1.0"
