"""Experiments, their variants, daily metrics and allocation snapshots."""
