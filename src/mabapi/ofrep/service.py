"""OFREP evaluation: a flag is an experiment, the targeting key a unit, and evaluating it
is assigning the unit (the same operation as POST /experiments/{id}/assign, counted once
per unit). No FastAPI here: the routes call it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.errors import AppError
from mabapi.experiments import repository
from mabapi.ofrep.schemas import (
    MAX_BULK_FLAGS,
    Context,
    EvaluationOut,
    Metadata,
)


class OfrepError(AppError):
    """An error OFREP names: answered as `{"key", "errorCode", "errorDetails"}`."""

    def __init__(self, status: int, code: str, details: str, key: str | None = None) -> None:
        super().__init__(details)
        self.status_code = status
        self.error_code = code
        self.key = key


def flags_of(context: Context) -> list[str] | None:
    """The flags a bulk evaluation is scoped to (context.flags, at most MAX_BULK_FLAGS: the
    schema bounds both forms), or None for the experiments that opt in."""
    named = context.flags
    if named is None:
        return None
    if isinstance(named, str):
        named = named.split(",")
    return sorted(set(named))


def disabled(key: str, status: str) -> EvaluationOut:
    """A flag that takes no units (draft, paused, stopped without a winner, archived):
    no value, so the code's default applies; nothing is assigned."""
    return EvaluationOut(key=key, reason="DISABLED", variant=None, metadata={"status": status})


def evaluated(
    key: str,
    *,
    variant_id: str,
    probability: float,
    new: bool,
    concluded: bool,
    algorithm: str,
    values: dict[str, Any],
) -> EvaluationOut:
    metadata: Metadata = {"propensity": probability, "policy": algorithm, "new": new}
    value = values.get(variant_id)
    return EvaluationOut(
        key=key,
        reason="STATIC" if concluded else "SPLIT",
        variant=variant_id,
        metadata=metadata,
        value=variant_id if value is None else value,
    )


def etag(flags: Sequence[dict[str, Any]]) -> str:
    """A strong ETag over what a bulk answer says of each flag (not the per-call `new`)."""
    stable = [
        {k: v for k, v in flag.items() if k != "metadata"}
        | {"metadata": {k: v for k, v in flag.get("metadata", {}).items() if k != "new"}}
        for flag in flags
    ]
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()
    return f'"{digest[:32]}"'


def matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {part.strip().removeprefix("W/") for part in if_none_match.split(",")}
    return "*" in candidates or tag in candidates


async def bulk_flags(session: AsyncSession, project_id: str | None) -> list[str]:
    """The flags a bulk evaluation without `flags` evaluates: the project's running (or
    concluded) experiments whose settings opt in (`openfeature.bulk`), by id, at most
    MAX_BULK_FLAGS."""
    chosen = [
        experiment_id
        for experiment_id, settings in await repository.flag_candidates(session, project_id)
        if ((settings or {}).get("openfeature") or {}).get("bulk") is True
    ]
    return chosen[:MAX_BULK_FLAGS]
