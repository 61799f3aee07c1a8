"""The poster: anchors every sealed batch on Bitcoin, journaled, fee-bumped and reorg-safe."""
