"""Metrics: reported daily rows, their revisions, and the ingestion of both."""
