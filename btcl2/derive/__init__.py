"""Derivation: rebuild the L2 from Bitcoin alone (`btcl2 replay`, followers, federation signers).

Stages, each resettable, in the order data flows: L1 traversal (`l1`) -> anchor chunks and their
reassembly (`frames`) -> batch queue and execution (`pipeline`), with the derived state optionally kept in
LevelDB (`store`) and the outcome summarised by `report`.
"""
