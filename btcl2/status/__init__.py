"""`btcl2 status ID`: the lifecycle of a deposit, L2 transaction, batch or withdrawal across the three
chains, and proof bundles that can be checked without trusting btcl2's servers."""
