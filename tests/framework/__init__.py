"""Functional test framework: regtest nodes as processes (embedded btcl2 node or real bitcoind) and helpers."""
