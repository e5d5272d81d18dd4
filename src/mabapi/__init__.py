"""mabapi: a self-hosted multi-armed bandit service for A/B tests."""

__version__ = "0.4.0"
