"""Database plumbing: metadata, engine and sessions, migrations."""
