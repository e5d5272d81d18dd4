"""Kept so the original README's `uvicorn main:app --reload` still works."""

from mabapi.app import create_app
from mabapi.settings import Settings

app = create_app(Settings())
