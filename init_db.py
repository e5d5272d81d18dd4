"""Kept so the original README's `python init_db.py` still works: migrates the database."""

from mabapi.cli import app

if __name__ == "__main__":
    app(["db", "upgrade"], prog_name="init_db.py")
