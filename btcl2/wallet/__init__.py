"""The user's side: key files, a single-key Bitcoin wallet, the sequencer client and the user commands."""
