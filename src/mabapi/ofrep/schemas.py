"""OFREP request and response bodies (the `open-feature/protocol` OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from mabapi.assignments.schemas import UnitId
from mabapi.schemas import Identifier

# The context attribute that names the unit's segment; the one that scopes a bulk
# evaluation to some flags. Other attributes are ignored.
SEGMENT_ATTRIBUTE = "segment"
FLAGS_ATTRIBUTE = "flags"
MAX_BULK_FLAGS = 100


# The flags of a bulk evaluation as one comma-separated string: at most 100 keys.
FlagList = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}(,[A-Za-z0-9_.:-]{1,128}){0,99}$")]


class Context(BaseModel):
    """The evaluation context: other attributes are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    targetingKey: UnitId = Field(description="The unit id: a user, session or device.")  # noqa: N815
    segment: Identifier | None = Field(
        default=None, description="The unit's segment (as `segment` of assign)."
    )
    flags: Annotated[list[Identifier], Field(max_length=MAX_BULK_FLAGS)] | FlagList | None = Field(
        default=None,
        description="Bulk evaluation only: the flags to evaluate (a list, or a comma-separated "
        "string), at most 100; absent: the experiments that opt in.",
    )


class EvaluationIn(BaseModel):
    """`{"context": {"targetingKey": "user-1", "segment": "mobile"}}`."""

    model_config = ConfigDict(extra="ignore")

    context: Context


Metadata = dict[str, bool | str | int | float]


class EvaluationOut(BaseModel):
    """A flag evaluated: its value (absent for DISABLED: use the code's default)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    reason: str = Field(description="SPLIT (a bandit draw), STATIC (concluded) or DISABLED.")
    variant: str | None = Field(description="The variant id; null when DISABLED.")
    metadata: Metadata = Field(default_factory=dict)
    value: Any = Field(default=None, description="The variant's value, or its id.")

    @model_serializer(mode="wrap")
    def _no_value_when_disabled(self, handler: SerializerFunctionWrapHandler) -> Any:
        body = handler(self)
        if self.reason == "DISABLED" and isinstance(body, dict):
            body.pop("value", None)  # no value: the code's default applies
        return body


class BulkFailureOut(BaseModel):
    errorCode: str  # noqa: N815 (the protocol's spelling)
    errorDetails: str  # noqa: N815


class EvaluationFailureOut(BaseModel):
    key: str
    errorCode: str  # noqa: N815 (the protocol's spelling)
    errorDetails: str  # noqa: N815


class BulkEvaluationOut(BaseModel):
    flags: list[dict[str, Any]]


def evaluation_json(answer: EvaluationOut) -> dict[str, Any]:
    """The answer as OFREP sends it: no `value` key when DISABLED (the code default)."""
    body: dict[str, Any] = answer.model_dump(mode="json")
    return body
