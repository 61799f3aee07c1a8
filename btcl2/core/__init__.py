"""The pure core of btcl2: L2 types and encodings, the state transition, Merkle trees, parameters.

Nothing here performs I/O: replay, the sequencer and the tests all call the same functions.
"""
