"""Errors of the container backend, rooted in pydiego's typed error tree.

Callers branch on the class: `ContainerNotFound` is a `NotFound`, `ContainerExists` an
`AlreadyExists`, `InvalidSpec` an `InvalidRequest`, `FileMissing` a `NotFound`, so the rep can map
them to HTTP statuses with the same table as the BBS. Every class is also a `GardenError`.
"""
from __future__ import annotations

from control.models.errors import AlreadyExists, InvalidRequest, NotFound, PydiegoError, ResourceConflict


class GardenError(PydiegoError):
    """Something the backend could not do on this machine."""

    type = "GardenError"
    status = 500


class ContainerNotFound(NotFound, GardenError):
    type = "ContainerNotFound"


class ContainerExists(AlreadyExists, GardenError):
    type = "ContainerExists"


class ProcessNotFound(NotFound, GardenError):
    type = "ProcessNotFound"


class InvalidSpec(InvalidRequest, GardenError):
    type = "InvalidContainerSpec"


class ContainerStopped(ResourceConflict, GardenError):
    """The container's init is gone: it can only be destroyed."""

    type = "ContainerStopped"


class InsufficientResources(GardenError):
    """No free container IP or host port left."""

    type = "InsufficientResources"
    status = 503


class CommandFailed(GardenError):
    """An external tool (runc, ip, iptables, mount, ...) failed or timed out."""

    type = "CommandFailed"


class ProcessStartFailed(GardenError):
    """`runc exec` could not start the process (missing executable, bad cwd or user, ...)."""

    type = "ProcessStartFailed"


class FileMissing(NotFound, GardenError):
    """stream_out: no such file in the container (or not a regular file)."""

    type = "FileMissing"


class FileTooLarge(GardenError):
    """stream_out: the file is bigger than the caller's limit (nothing of it is returned)."""

    type = "FileTooLarge"
    status = 413


class StreamFailed(GardenError):
    """stream_in/stream_out: the helper inside the container failed (bad archive, no space, permissions)."""

    type = "StreamFailed"
