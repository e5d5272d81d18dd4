"""Imports every table module so `Base.metadata` is complete (Alembic, tests)."""

from mabapi.access import models as access_models
from mabapi.assignments import models as assignments_models
from mabapi.counts import models as counts_models
from mabapi.db.base import Base
from mabapi.experiments import models as experiments_models
from mabapi.webhooks import models as webhooks_models

__all__ = [
    "Base",
    "access_models",
    "assignments_models",
    "counts_models",
    "experiments_models",
    "webhooks_models",
]
