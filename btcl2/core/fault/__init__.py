"""The step model of a batch for fault proofs (docs/PROTOCOL.md, "Fault proofs").

A batch runs as steps: each deposit credit, then each transaction, then one seal step that turns the
accumulators into the header's roots. `model` holds the values and commitments, `execute` one step from its
witness (what OneStepProver.sol re-states), `prove` every state and witness of a batch.
"""
