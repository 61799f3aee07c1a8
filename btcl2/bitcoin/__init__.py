"""Bitcoin primitives and the JSON-RPC client every btcl2 role uses to reach a Bitcoin node."""
