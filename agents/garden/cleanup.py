"""cleanup_all(depot): remove everything one backend ever made on this machine.

For tests (a session fixture calls it even when tests fail) and for `cluster down`. It needs no
live backend: the depot's garden.json says which tag (hence which names, chains and cgroups) and
which runc to use. Order: runc containers (kills every process), cgroups, iptables chains,
conntrack entries of the bridge subnet, netns names and interfaces with the tag's prefix, mounts
below the depot (deepest first), loop devices backed by depot files, and finally the depot
directory itself. Everything is attempted; what could not be removed is reported in one
GardenError at the end. Keepers of the depot exit by themselves once their containers are gone.
"""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import structlog

from . import cgroups, conntrack
from .commands import run_cmd
from .config import GardenConfig
from .errors import GardenError
from .firewall import Firewall
from .layout import Depot, Names
from .network import remove_leftovers
from .rootfs import detach_loops, mountpoints

log = structlog.get_logger("garden")


async def cleanup_all(depot_dir: str | Path, timeout: float = 30.0) -> None:
    depot = Depot(Path(depot_dir))
    failures: list[str] = []

    async def attempt(name: str, coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except Exception as exc:
            failures.append(f"{name}: {exc}")
            log.error("cleanup-step-failed", step=name, error=str(exc))

    config = _read_config(depot)
    if config is not None:
        names = Names(config.tag, config.cgroup_parent)
        await attempt("runc-containers", _delete_runc_containers(config.runc_path, depot, timeout))
        await attempt("cgroups", cgroups.remove(names.cgroup_root))
        cgroups.remove_empty_parents(config.cgroup_parent, config.cgroup_parent)
        await attempt("iptables", Firewall(names, config.network, timeout).teardown())
        await attempt("conntrack", asyncio.to_thread(conntrack.forget, config.network))
        await attempt("network", remove_leftovers(names, timeout))
    await attempt("mounts", _unmount_below(depot.root, timeout))
    await attempt("loop-devices", detach_loops(depot.root, timeout))
    if not failures and depot.root.exists():
        await attempt("depot", asyncio.to_thread(shutil.rmtree, depot.root))
    if failures:
        raise GardenError(f"cleanup of {depot.root} incomplete: {'; '.join(failures)}")


def _read_config(depot: Depot) -> GardenConfig | None:
    try:
        return GardenConfig.model_validate_json(depot.config_file.read_bytes())
    except FileNotFoundError:
        return None


async def _delete_runc_containers(runc: str, depot: Depot, timeout: float) -> None:
    if not depot.runc_root.is_dir():
        return
    listing = await run_cmd([runc, "--root", str(depot.runc_root), "list", "--quiet"], check=False, timeout=timeout)
    for container_id in listing.text.split():
        await run_cmd([runc, "--root", str(depot.runc_root), "delete", "--force", container_id],
                      check=False, timeout=timeout)


async def _unmount_below(root: Path, timeout: float) -> None:
    prefix = str(root).rstrip("/") + "/"
    for point in reversed(mountpoints()):
        if point.startswith(prefix):
            result = await run_cmd(["umount", point], check=False, timeout=timeout)
            if result.returncode != 0:  # busy: detach it now, the kernel frees it when unused
                await run_cmd(["umount", "--lazy", point], timeout=timeout)
