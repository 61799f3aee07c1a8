"""The EVM side of btcl2: contract artifacts, a typed EVM JSON-RPC client, deployment and SPV proof building."""
