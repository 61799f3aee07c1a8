"""The embedded regtest node: libbitcoinkernel validates, btcl2 adds the mempool, the miner and the RPC server."""
