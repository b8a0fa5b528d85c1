"""Operator verbs over the BBS API: each takes parsed args and returns an exit code."""
from __future__ import annotations

import asyncio
import json
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

import yaml

from control.client.bbs_client import BBSClient
from control.models.errors import PydiegoError

from control.coordination.factory import build
from control.kit.etcd import Etcd

from .connection import client_from_args, coordination_from_args, tls_from_args
from .output import print_json, table


class UsageError(Exception):
    pass


def _load_document(path: str) -> Any:
    try:
        text = Path(path).read_text() if path != "-" else __import__("sys").stdin.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid JSON or YAML: {exc}") from exc


def _age(since_ns: int) -> str:
    if not since_ns:
        return ""
    s = max(0, int(time.time() - since_ns / 1e9))
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


async def domains(c: BBSClient, a: Namespace) -> None:
    if a.action == "upsert":
        if not a.name:
            raise UsageError("domains upsert needs a domain name")
        d = await c.upsert_domain(a.name, a.ttl)
        print_json(d) if a.json else print(f"domain {d.domain} upserted (ttl {d.ttl}s)")
        return
    items = await c.domains()
    if a.json:
        return print_json(items)
    table(["DOMAIN", "TTL", "EXPIRES IN"], [(d.domain, d.ttl, f"{max(0, int(d.expires_at / 1e9 - time.time()))}s" if d.expires_at else "never") for d in items])


async def desire(c: BBSClient, a: Namespace) -> None:
    doc = _load_document(a.file)
    if not isinstance(doc, dict):
        raise UsageError(f"{a.file} must hold one DesiredLRP object")
    d = await c.desire_lrp(doc)
    print_json(d) if a.json else print(f"desired LRP {d.process_guid} created with {d.instances} instance(s)")
    if getattr(a, "wait", 0):
        await wait_running(c, d.process_guid, d.instances, a.wait, quiet=a.json)


async def wait_running(c: BBSClient, guid: str, instances: int, timeout: float, quiet: bool = False) -> None:
    """Wait until `instances` ORDINARY instances are RUNNING; show progress and their addresses."""
    loop = asyncio.get_running_loop()
    deadline, last = loop.time() + timeout, -1
    while True:
        rows = [r for r in await c.actual_lrps(process_guid=guid) if r.presence == "ORDINARY"]
        running = sorted((r for r in rows if r.state == "RUNNING"), key=lambda r: r.index)
        if len(running) != last and not quiet:
            print(f"  {len(running)}/{instances} running", file=sys.stderr)
            last = len(running)
        if len(running) >= instances:
            break
        if loop.time() > deadline:
            problems = sorted({r.placement_error or r.crash_reason for r in rows if r.placement_error or r.crash_reason})
            raise UsageError(f"{guid}: {len(running)}/{instances} running after {timeout:g}s"
                             + (f" ({'; '.join(problems)})" if problems else ""))
        await asyncio.sleep(0.2)
    if not quiet:
        for r in running:
            ports = ", ".join(f"{r.address}:{p.host_port}" for p in r.ports) or r.address
            print(f"  [{r.index}] {r.cell_id}  {ports}")


async def desired_lrps(c: BBSClient, a: Namespace) -> None:
    if a.process_guid:
        return print_json(await c.desired_lrp(a.process_guid))
    items = await c.desired_lrps(a.domain)
    if a.json:
        return print_json(items)
    table(["PROCESS GUID", "DOMAIN", "INSTANCES", "ROOTFS", "MEMORY", "DISK"],
          [(d.process_guid, d.domain, d.instances, d.rootfs, d.memory_mb, d.disk_mb) for d in items])


async def actual_lrps(c: BBSClient, a: Namespace) -> None:
    items = await c.actual_lrps(domain=a.domain, cell_id=a.cell_id, process_guid=a.process_guid, index=a.index)
    if a.json:
        return print_json(items)
    items.sort(key=lambda x: (x.process_guid, x.index, x.presence))
    table(["PROCESS GUID", "INDEX", "STATE", "PRESENCE", "CELL", "ADDRESS", "PORTS", "CRASHES", "SINCE", "ERROR"],
          [(x.process_guid, x.index, x.state, x.presence, x.cell_id, x.address,
            ",".join(f"{p.host_port}->{p.container_port}" for p in x.ports), x.crash_count, _age(x.since),
            (x.placement_error or x.crash_reason)[:60]) for x in items])


async def scale(c: BBSClient, a: Namespace) -> None:
    if a.instances < 0:
        raise UsageError("instances must be 0 or more")
    d = await c.update_desired_lrp(a.process_guid, {"instances": a.instances})
    print_json(d) if a.json else print(f"desired LRP {d.process_guid} scaled to {d.instances}")


async def retire(c: BBSClient, a: Namespace) -> None:
    await c.retire_actual_lrp(a.process_guid, a.index)
    print(f"instance {a.process_guid}/{a.index} retired")


async def remove(c: BBSClient, a: Namespace) -> None:
    await c.remove_desired_lrp(a.process_guid)
    print(f"desired LRP {a.process_guid} removed")


async def tasks(c: BBSClient, a: Namespace) -> None:
    if a.task_guid:
        return print_json(await c.task(a.task_guid))
    items = await c.tasks(domain=a.domain, cell_id=a.cell_id)
    if a.json:
        return print_json(items)
    table(["TASK GUID", "DOMAIN", "STATE", "CELL", "FAILED", "REASON / RESULT"],
          [(t.task_guid, t.domain, t.state, t.cell_id, t.failed if t.state in ("COMPLETED", "RESOLVING") else "",
            (t.failure_reason or t.result)[:60]) for t in items])


async def run_task(c: BBSClient, a: Namespace) -> None:
    doc = _load_document(a.file)
    if not isinstance(doc, dict) or "task_definition" not in doc:
        raise UsageError(f"{a.file} must hold {{task_guid, domain, task_definition}}")
    t = await c.desire_task(doc.get("task_guid", ""), doc.get("domain", ""), doc["task_definition"])
    print_json(t) if a.json else print(f"task {t.task_guid} created ({t.state})")


async def cancel_task(c: BBSClient, a: Namespace) -> None:
    t = await c.cancel_task(a.task_guid)
    print_json(t) if a.json else print(f"task {t.task_guid} cancelled")


async def cells(c: BBSClient, a: Namespace) -> None:
    items = await c.cells()
    if a.json:
        return print_json(items)
    table(["CELL", "ZONE", "REP", "MEMORY MB", "DISK MB", "CONTAINERS"],
          [(x.cell_id, x.zone, x.rep_url or x.rep_address, x.capacity.memory_mb, x.capacity.disk_mb, x.capacity.containers) for x in items])


async def events(c: BBSClient, a: Namespace) -> None:
    stream = "tasks" if a.tasks else ("instances" if a.cell_id else "lrp")
    count = 0
    async for name, payload in c.events(stream, a.cell_id):
        if a.json:
            print(json.dumps({"event": name, "data": payload}), flush=True)
        else:
            print(f"{time.strftime('%H:%M:%S')} {name} {json.dumps(payload)[:200]}", flush=True)
        count += 1
        if a.count and count >= a.count:
            return


async def locks(a: Namespace) -> None:
    cfg = coordination_from_args(a)
    etcd = Etcd(cfg.etcd_endpoints)
    coordinator = build(cfg, etcd)
    await coordinator.open()
    try:
        items = await coordinator.locks()
    finally:
        await coordinator.close()
        await etcd.close()
    if a.json:
        return print_json([{"name": i.name, "token": i.token, **i.doc} for i in items])
    table(["LOCK", "HOLDER", "ADDRESS", "PID", "TOKEN"],
          [(i.name, i.doc.get("owner", ""), i.doc.get("address", ""), i.doc.get("pid", ""), i.token) for i in items])


VERBS = {"domains": domains, "desire": desire, "desired-lrps": desired_lrps, "actual-lrps": actual_lrps,
         "scale": scale, "retire": retire, "remove": remove, "tasks": tasks, "run-task": run_task,
         "cancel-task": cancel_task, "cells": cells, "events": events}


def run_verb(args: Namespace) -> int:
    import sys

    async def go() -> None:
        if args.command == "locks":
            await locks(args)
            return
        client = client_from_args(args)
        try:
            if args.command == "logs":
                from .logs import logs
                if args.tail < 0:
                    raise UsageError("--tail must be 0 or more")
                await logs(client, args, tls_from_args(args))
                return
            await VERBS[args.command](client, args)
        finally:
            await client.close()
    try:
        asyncio.run(go())
    except PydiegoError as exc:
        print(f"error: {exc.type}: {exc.message}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and friends
        sys.stderr.close()
        return 0
    except Exception as exc:
        from .connection import ConnectionError_
        if isinstance(exc, ConnectionError_):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    return 0
