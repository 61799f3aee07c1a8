"""The federation: M-of-N signers of the custody multisig and the coordinator that drives payouts.

`payout` is the deterministic payout transaction format (pure), `checks` the rules a signer applies,
`views` what a signer learns from its own nodes, `signer` the signing service, `coordinator` the payout
driver, `store` their LevelDB records and `cli` the commands.
"""
