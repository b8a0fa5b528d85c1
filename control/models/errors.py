"""The typed error tree shared by the BBS, its client and every caller.

Each error has a stable `type` string (Diego's names, reference §3.2) and an HTTP status; the
server maps errors to statuses in one place and the client rebuilds the same class from the
body `{"type": ..., "message": ...}`. Callers branch on classes, never on message text.
"""
from __future__ import annotations

from typing import Any, ClassVar


class PydiegoError(Exception):
    """Base of every domain error."""

    type: ClassVar[str] = "UnknownError"
    status: ClassVar[int] = 500

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.type)
        self.message = message or self.type
        self.details = details

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "message": self.message}
        body.update(self.details)
        return body


class InvalidRequest(PydiegoError):
    type = "InvalidRequest"
    status = 422


class InvalidJSON(InvalidRequest):
    type = "InvalidJSON"
    status = 400


class RequestTooLarge(InvalidRequest):
    type = "RequestTooLarge"
    status = 413


class NotFound(PydiegoError):
    type = "ResourceNotFound"
    status = 404


class AlreadyExists(PydiegoError):
    type = "ResourceExists"
    status = 409


class ResourceConflict(PydiegoError):
    type = "ResourceConflict"
    status = 409


class InvalidTransition(PydiegoError):
    type = "InvalidStateTransition"
    status = 409


class CannotBeClaimed(InvalidTransition):
    type = "ActualLRPCannotBeClaimed"


class CannotBeStarted(InvalidTransition):
    type = "ActualLRPCannotBeStarted"


class CannotBeCrashed(InvalidTransition):
    type = "ActualLRPCannotBeCrashed"


class CannotBeFailed(InvalidTransition):
    type = "ActualLRPCannotBeFailed"


class CannotBeRemoved(InvalidTransition):
    type = "ActualLRPCannotBeRemoved"


class CannotBeUnclaimed(InvalidTransition):
    type = "ActualLRPCannotBeUnclaimed"


class RunningOnDifferentCell(PydiegoError):
    type = "RunningOnDifferentCell"
    status = 409


class Forbidden(PydiegoError):
    """The caller may not do this (e.g. an admin call from off the machine)."""

    type = "Forbidden"
    status = 403


class Unavailable(PydiegoError):
    """The service cannot answer now (no lock, store down); retry elsewhere or later."""

    type = "ServiceUnavailable"
    status = 503


class Timeout(Unavailable):
    type = "Timeout"
    status = 504


ERROR_TYPES: dict[str, type[PydiegoError]] = {}


def _register(cls: type[PydiegoError]) -> None:
    ERROR_TYPES[cls.type] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(PydiegoError)


def error_from_body(status: int, body: Any) -> PydiegoError:
    """Rebuild the typed error a server sent; unknown types fall back on the HTTP status."""
    if isinstance(body, dict) and isinstance(body.get("type"), str):
        cls = ERROR_TYPES.get(body["type"])
        message = str(body.get("message", ""))
        details = {k: v for k, v in body.items() if k not in ("type", "message")}
        if cls is not None:
            return cls(message, **details)
    fallback: type[PydiegoError] = {
        400: InvalidRequest, 404: NotFound, 409: ResourceConflict, 413: RequestTooLarge,
        422: InvalidRequest, 503: Unavailable, 504: Timeout,
    }.get(status, PydiegoError)
    return fallback(f"HTTP {status}: {str(body)[:500]}")
