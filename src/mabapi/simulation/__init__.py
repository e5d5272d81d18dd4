"""Simulated experiments that drive exactly the policy code the service runs (stats only)."""
