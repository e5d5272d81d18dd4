"""Allocations: applying a policy to an experiment's sums, segment pooling, late
conversions, the answer cache and the snapshots of what was served."""
