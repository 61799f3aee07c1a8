"""LevelDB storage: one wrapper, one key schema, atomic write batches."""
