"""The seeded soak harness: users on every chain, crashes, reorgs and RPC outages, the audit after every
step (`python -m btcl2.soak --seed S --steps N`)."""
