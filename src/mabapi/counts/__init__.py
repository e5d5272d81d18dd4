"""Reported, live and running totals: the tables both domains read (no maths, no web)."""
