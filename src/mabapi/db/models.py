"""Imports every table module so `Base.metadata` is complete (Alembic, tests)."""

from mabapi.assignments import models as assignments_models
from mabapi.db.base import Base
from mabapi.experiments import models as experiments_models

__all__ = ["Base", "assignments_models", "experiments_models"]
