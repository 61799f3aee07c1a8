"""The devnet: the whole stack (Bitcoin, anvil, sequencer + poster, relayer, signers, coordinator) on one
machine, supervised, described by `<datadir>/devnet.toml` that every user command reads."""
