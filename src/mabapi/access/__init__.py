"""Projects, API keys and scopes, and the audit log."""
