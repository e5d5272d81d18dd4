"""Guardrails: declared secondary metrics, their checks against the reference variant,
breaches and their clearing."""
