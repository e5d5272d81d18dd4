"""Field types shared by every domain's request and response schemas."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictInt,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from mabapi.errors import encodable

# A day's count per variant. 10^12 keeps every total exact in a 64-bit integer: every day
# from year 1 to 9999 (3.65 million) at 10^12 is 3.65 x 10^18 < 2^63 - 1 = 9.22 x 10^18.
# (2^53 a day overflowed the running totals after 1,024 days: a 500.)
MAX_COUNT = 10**12
# Anchored: FastAPI and pydantic search a pattern anywhere in the value, so an unanchored
# one let "a\x00b" through as a path id (the database then refused the NUL: a 500).
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# "." and ".." match the pattern but no HTTP client can address them in a path.
DOT_SEGMENTS = frozenset({".", ".."})
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# Unit ids are keys, not text: no control character at all (TAB, LF, CR and C1 too).
_UNIT_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The same rule for the OpenAPI document, so generated clients and fuzzers know it.
PRINTABLE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
IDENTIFIER_SCHEMA: dict[str, JsonValue] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": "^[A-Za-z0-9_.:-]{1,128}$",
    "not": {"enum": [".", ".."]},
}


class StrictModel(BaseModel):
    """Request bodies: unknown fields are a mistake worth reporting, not something to drop
    silently. Numbers and flags use the strict types below (no `true` or `"7"`)."""

    model_config = ConfigDict(extra="forbid")


def _check_identifier(value: Any) -> Any:
    if not isinstance(value, str):
        raise PydanticCustomError("identifier_type", "must be a string")
    if value in DOT_SEGMENTS:
        raise PydanticCustomError(
            "identifier_dots",
            "'{value}' cannot be an id: a URL path cannot name it; use letters or digits too",
            {"value": value},
        )
    if not ID_PATTERN.fullmatch(value):
        raise PydanticCustomError(
            "identifier",
            "must be 1-128 characters, each a letter, digit, '_', '.', ':' or '-' (got '{value}')",
            {"value": encodable(value[:140])},
        )
    return value


def _parse_iso_date(value: Any) -> Any:
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise PydanticCustomError(
            "date_format",
            "must be a date written YYYY-MM-DD (got '{value}')",
            {"value": encodable(value)},
        )
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError(
            "date_value", "'{value}' is not a real calendar date", {"value": value}
        ) from None


def reject_control_characters(value: str) -> str:
    if _CONTROL_CHARS.search(value):
        raise PydanticCustomError(
            "control_characters",
            "must not contain NUL, other control characters or unpaired surrogates",
        )
    return value


def reject_any_control_character(value: str) -> str:
    if _UNIT_FORBIDDEN.search(value):
        raise PydanticCustomError(
            "control_characters",
            "must not contain control characters (TAB, LF, CR, NUL, C1) or unpaired surrogates",
        )
    return value


Identifier = Annotated[str, BeforeValidator(_check_identifier), WithJsonSchema(IDENTIFIER_SCHEMA)]
IsoDate = Annotated[date, BeforeValidator(_parse_iso_date)]
Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]
Printable = Field(json_schema_extra={"pattern": PRINTABLE_PATTERN})
Name = Annotated[
    str, Field(min_length=1, max_length=200), Printable, AfterValidator(reject_control_characters)
]
Description = Annotated[
    str, Field(max_length=10_000), Printable, AfterValidator(reject_control_characters)
]


def require_changes(model: BaseModel, fields: str) -> None:
    """For PATCH bodies: at least one field sent, and none of them null."""
    if not model.model_fields_set:
        raise PydanticCustomError(
            "empty_patch", "send at least one of: {fields}", {"fields": fields}
        )
    for field in model.model_fields_set:
        if getattr(model, field) is None:
            raise PydanticCustomError("null_field", "{field} cannot be null", {"field": field})
