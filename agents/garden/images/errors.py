"""Errors of the image store.

The two public classes are what callers branch on: `RootfsNotOffered` (the cell cannot serve this
rootfs URI at all: unknown scheme, malformed URI, stack not configured here — placing the work
on another cell may help) and `ImageFetchFailed` (the URI is fine but the image could not be
produced now: registry unreachable, not found, auth refused, bad digest, corrupt or unsafe
layer). Both name the URI in their one-line message and carry it as `rootfs` in the details.

`ImageProblem` is internal: the modules below the store raise it with a reason, and the store
turns it into `ImageFetchFailed` with the URI in front.
"""
from __future__ import annotations

from control.models.errors import InvalidRequest

from ..errors import GardenError


class RootfsNotOffered(InvalidRequest, GardenError):
    """The rootfs URI names something this cell does not offer."""

    type = "RootfsNotOffered"


class ImageFetchFailed(GardenError):
    """The image exists in principle (the URI is valid) but could not be fetched or unpacked."""

    type = "ImageFetchFailed"


class ImageProblem(Exception):
    """Why an image cannot be produced (internal; wrapped into ImageFetchFailed by the store)."""


class RegistryUnreachable(ImageProblem):
    """No answer from the registry (connection refused, DNS, timeout, 5xx): a cached copy may do."""


class UnsafeLayer(ImageProblem):
    """A layer tries to write outside its root (absolute path, `..`, symlink climbing out)."""
