"""Real-time mode: sticky per-unit assignment and conversion attribution."""
