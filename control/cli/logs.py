"""`pydiego logs PROCESS_GUID [--index N] [--follow] [--tail K]`: an LRP's logs, read from its cells.

The BBS says where each instance runs (ActualLRP `cell_id`, `instance_guid`), the cell's
presence how to reach its rep (`rep_url`), and the rep streams the container's log as NDJSON
(`GET <rep_url>/v1/containers/<instance_guid>/logs?follow=&tail=`, one
`{timestamp, source, stream, line}` per line) over mutual TLS with the cluster's client
certificate. Lines print as `[<index>] <source> <line>` (`--json`: the objects, with `index`).

Without --follow the instances' lines are merged by timestamp; with it each instance's lines
print as they arrive, until every stream ends (its container is deleted) or Ctrl-C.
Limit: an instance that moves to another cell (evacuation, restart elsewhere) is not followed
there; run the command again.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import sys
from argparse import Namespace
from dataclasses import dataclass
from typing import Any

import httpx

from control.client.bbs_client import BBSClient
from control.models.actual_lrp import ActualLRP, Presence
from control.models.errors import NotFound, PydiegoError, Unavailable, error_from_body

# An ORDINARY row is where the instance lives; an EVACUATING one still runs on the old cell.
PRESENCE_ORDER = {Presence.ORDINARY: 0, Presence.EVACUATING: 1, Presence.SUSPECT: 2}


@dataclass(frozen=True)
class Target:
    index: int
    instance_guid: str
    cell_id: str
    rep_url: str


def _pick(actuals: list[ActualLRP]) -> dict[int, ActualLRP]:
    """One row per index: one on a cell first, ORDINARY before EVACUATING."""
    by_index: dict[int, ActualLRP] = {}
    for x in sorted(actuals, key=lambda x: (not x.cell_id, PRESENCE_ORDER.get(x.presence, 9))):
        by_index.setdefault(x.index, x)
    return by_index


async def targets(c: BBSClient, process_guid: str, index: int | None) -> tuple[list[Target], list[str]]:
    """Where to read from, and the instances that cannot be read (why). Raises NotFound for an
    unknown LRP or index, or when no instance at all can be read."""
    actuals = await c.actual_lrps(process_guid=process_guid)
    if not actuals:
        await c.desired_lrp(process_guid)  # NotFound when the LRP does not exist
        raise NotFound(f"LRP {process_guid} has no instances")
    by_index = _pick(actuals)
    if index is not None:
        if index not in by_index:
            known = ", ".join(str(i) for i in sorted(by_index))
            raise NotFound(f"LRP {process_guid} has no instance at index {index} (indexes: {known})")
        by_index = {index: by_index[index]}
    reps = {cell.cell_id: cell.rep_url or (f"http://{cell.rep_address}" if cell.rep_address else "")
            for cell in await c.cells()}
    found, problems = [], []
    for i, x in sorted(by_index.items()):
        if not x.cell_id or not x.instance_guid:
            problems.append(f"instance {process_guid}/{i} has no cell (state {x.state})")
        elif not reps.get(x.cell_id):
            problems.append(f"instance {process_guid}/{i} is on cell {x.cell_id}, which has no presence")
        else:
            found.append(Target(i, x.instance_guid, x.cell_id, reps[x.cell_id].rstrip("/")))
    if not found:
        raise NotFound("; ".join(problems))
    return found, problems


async def _stream(http: httpx.AsyncClient, t: Target, follow: bool, tail: int,
                  emit: Any) -> None:
    url = f"{t.rep_url}/v1/containers/{t.instance_guid}/logs"
    params = {"follow": "true" if follow else "false", "tail": str(tail)}
    try:
        async with http.stream("GET", url, params=params) as resp:
            if resp.status_code >= 400:
                body = await resp.aread()
                try:
                    payload: Any = json.loads(body)
                except ValueError:
                    payload = body.decode(errors="replace")
                raise error_from_body(resp.status_code, payload)
            async for line in resp.aiter_lines():
                if line.strip():
                    emit(t, json.loads(line))
    except httpx.HTTPError as exc:
        raise Unavailable(f"rep of {t.cell_id} at {t.rep_url} is unreachable: {exc!r}") from exc


def _print(t: Target, doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"index": t.index, **doc}), flush=True)
    else:
        print(f"[{t.index}] {doc.get('source', '')} {doc.get('line', '')}", flush=True)


async def logs(c: BBSClient, a: Namespace, tls: ssl.SSLContext | None) -> None:
    found, problems = await targets(c, a.process_guid, a.index)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    timeout = httpx.Timeout(10.0, read=None if a.follow else 30.0)
    buffered: list[tuple[float, int, Target, dict[str, Any]]] = []

    def emit(t: Target, doc: dict[str, Any]) -> None:
        if a.follow:
            _print(t, doc, a.json)
        else:
            buffered.append((float(doc.get("timestamp", 0)), len(buffered), t, doc))

    async with httpx.AsyncClient(verify=tls if tls is not None else True, timeout=timeout) as http:
        results = await asyncio.gather(*(_stream(http, t, a.follow, a.tail, emit) for t in found),
                                       return_exceptions=True)
    for _, _, t, doc in sorted(buffered, key=lambda b: (b[0], b[1])):
        _print(t, doc, a.json)
    errors = [(t, r) for t, r in zip(found, results) if isinstance(r, BaseException)]
    for t, err in errors[:-1]:
        print(f"error: instance {a.process_guid}/{t.index}: {err}", file=sys.stderr)
    if errors:
        t, err = errors[-1]
        if isinstance(err, PydiegoError):
            raise type(err)(f"instance {a.process_guid}/{t.index}: {err.message}")
        raise err
