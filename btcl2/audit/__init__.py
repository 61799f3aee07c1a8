"""`btcl2 audit`: conservation and exactly-once, each term read from the chains themselves (DESIGN.md,
invariants 1 and 2). `conservation` reads the terms, `exactly_once` judges the credits and payouts it found,
`cli` prints them."""
