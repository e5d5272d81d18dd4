"""Errors that carry their HTTP status; one handler in app.py renders them all."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of every error the API answers on purpose."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class UnauthorizedError(AppError):
    status_code = 401
    code = "unauthorized"


class ForbiddenError(AppError):
    status_code = 403
    code = "forbidden"


class RateLimitedError(AppError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFoundError(AppError):
    status_code = 404
    code = "not_found"


def no_such_experiment(experiment_id: str) -> NotFoundError:
    """The one 404 for an experiment: the same words whether it does not exist or belongs
    to another project, so a key learns nothing about other projects."""
    return NotFoundError(
        f"experiment {experiment_id!r} does not exist; create it with POST /experiments "
        "or post metrics for it"
    )


class ConflictError(AppError):
    status_code = 409
    code = "conflict"


class InvalidInputError(AppError):
    status_code = 422
    code = "invalid_request"


def error_body(
    code: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The one JSON error shape every 4xx/5xx uses. Text that came from the request may
    hold what UTF-8 cannot encode (a lone surrogate such as "\\ud800"): it is shown
    escaped, so describing bad input can never itself fail."""
    return {
        "error": {"code": code, "message": encodable(message), "details": encodable(details or [])}
    }


def encodable(value: Any) -> Any:
    """`value` with every string made encodable as UTF-8 (unpaired surrogates escaped)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, list):
        return [encodable(item) for item in value]
    if isinstance(value, dict):
        return {encodable(key): encodable(item) for key, item in value.items()}
    return value


Responses = dict[int | str, dict[str, Any]]


def documented_error(description: str) -> dict[str, Any]:
    """An OpenAPI `responses=` entry showing the error shape."""
    example = error_body("code", "what went wrong and how to fix it")
    return {"description": description, "content": {"application/json": {"example": example}}}
