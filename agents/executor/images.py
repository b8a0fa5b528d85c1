"""What the executor needs from an image store: turn a rootfs URI into an unpacked directory.

Declared here, next to its consumer (CONVENTIONS: Protocols). agents/garden's ImageStore
implements it (raising its RootfsNotOffered / ImageFetchFailed, both GardenErrors); tests use a
stack-only resolver. `env` entries are "KEY=VALUE" strings: they come first in the container
environment (reference §1.7). `working_dir` is the default directory of run actions without one.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class ResolvedImage(Protocol):
    @property
    def path(self) -> str | Path: ...

    @property
    def env(self) -> Sequence[str]: ...

    @property
    def working_dir(self) -> str: ...

    @property
    def user(self) -> str: ...


class ImageResolver(Protocol):
    async def resolve(self, rootfs: str, username: str = "", password: str = "") -> ResolvedImage:
        """The unpacked root filesystem for `rootfs` (fetched first if needed)."""
        ...

    def offers(self, rootfs: str) -> bool:
        """Whether this cell can provide `rootfs` at all (used for placement)."""
        ...
