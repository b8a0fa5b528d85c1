"""DownloadAction and UploadAction steps (reference §1.6); the transfers themselves: transfers.py.

Download: fetch (cached, checksum-verified) on the host, then stream the plain tar into the
container under `to`, owned by `user`. Upload: read one file out of the container (at most
max_upload_bytes) and POST it to `to`. With `artifact` set, progress lines go to the log as
Diego writes them ("Downloading X...", "Downloaded X (12.3K)", "Uploading X...").
"""
from __future__ import annotations

from agents.garden.errors import GardenError
from control.models.actions import DownloadAction, UploadAction

from ..transfers import TransferFailed
from .base import Role, StepContext, StepFailed


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"


class DownloadStep:
    leaves = 1

    def __init__(self, ctx: StepContext, action: DownloadAction, source: str, role: Role) -> None:
        self.ctx = ctx
        self.action = action
        self.source = source
        self.role = role

    async def perform(self) -> None:
        ctx, action = self.ctx, self.action
        ctx.tracker.leaf_started(self.role)
        if action.artifact:
            ctx.log.system(f"Downloading {action.artifact}...", source=self.source)
        try:
            async with ctx.transfers.download(action) as tar:
                size = tar.stat().st_size
                await ctx.backend.stream_in(ctx.handle, action.to, str(tar), user=action.user)
        except (TransferFailed, GardenError) as exc:
            if action.artifact:
                ctx.log.system(f"Downloading {action.artifact} failed", source=self.source, stream="stderr")
            raise StepFailed(f"Downloading failed: {exc.message}") from exc
        if action.artifact:
            ctx.log.system(f"Downloaded {action.artifact} ({human_bytes(size)})", source=self.source)


class UploadStep:
    leaves = 1

    def __init__(self, ctx: StepContext, action: UploadAction, source: str, role: Role) -> None:
        self.ctx = ctx
        self.action = action
        self.source = source
        self.role = role

    async def perform(self) -> None:
        ctx, action = self.ctx, self.action
        ctx.tracker.leaf_started(self.role)
        if action.artifact:
            ctx.log.system(f"Uploading {action.artifact}...", source=self.source)
        try:
            data = await ctx.backend.stream_out(ctx.handle, action.from_, ctx.config.max_upload_bytes)
            await ctx.transfers.upload(action.to, data)
        except (TransferFailed, GardenError) as exc:
            if action.artifact:
                ctx.log.system(f"Uploading {action.artifact} failed", source=self.source, stream="stderr")
            raise StepFailed(f"Uploading failed: {exc.message}") from exc
        if action.artifact:
            ctx.log.system(f"Uploaded {action.artifact} ({human_bytes(len(data))})", source=self.source)
