"""cell_bench.py's report: the printed tables, the comparison with raw runc, the verdicts."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from bench.cell_common import (  # noqa: E402
    Sizes, TARGETS)

# -- report ----------------------------------------------------------------------------------

STAGE_NAMES = {
    "resolve": "image resolve (preloaded:busybox)",
    "executor_before_create": "executor: run() -> backend.create()",
    "rootfs": "garden rootfs (disk image, overlay)",
    "runc": "garden runc (config, runc run, init up)",
    "network": "garden network (netns, veth, ports, rules)",
    "garden_other": "garden other (lock, record, info)",
    "executor_before_start": "executor: created -> runc exec of app",
    "process_start": "process start (runc exec via keeper)",
    "health_check": "health check until it passes",
    "total": "TOTAL run() -> RUNNING",
    "delete": "(delete: stop + destroy, not in total)",
}
RAW_NAMES = {
    "rootfs": "rootfs (overlay mount)",
    "runc": "runc run --detach (httpd is the init)",
    "network": "network (veth, address, route, port up)",
    "app_ready": "TCP connect to app succeeds",
    "total": "TOTAL",
    "connect_attempts": "(connect attempts: refused or 20 ms timeout)",
}


def verdicts(res: dict[str, Any]) -> dict[str, Any]:
    measured: dict[str, float] = {}
    if "executor" in res and "raw" in res:
        measured["overhead_p50_ms"] = res["comparison"]["overhead_p50_ms"]
    if "desired_running" in res.get("cluster", {}):
        measured["desired_running_p50_s"] = res["cluster"]["desired_running"]["stages"]["total"]["p50"] / 1000
    out = {}
    for name, value in measured.items():
        limit, unit, desc = TARGETS[name]
        out[name] = {"value": round(value, 3), "limit": limit, "unit": unit, "description": desc,
                     "result": "PASS" if value <= limit else "MISS"}
    return out


GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def reasons(by_index: dict[Any, str]) -> str:
    """Distinct failure reasons, instance guids blanked, each cut to its last 140 characters."""
    distinct = sorted({GUID.sub("<guid>", r) for r in by_index.values()})
    return "; ".join(f"[{r if len(r) <= 140 else '...' + r[-140:]}]" for r in distinct[:3])


def report(hw: dict[str, Any], res: dict[str, Any], tv: dict[str, Any], sz: Sizes, quick: bool, wall: float) -> str:
    L: list[str] = []
    a = L.append
    a("pydiego cell benchmark" + (" (--quick: small sizes, a smoke run)" if quick else ""))
    a(f"  CPU      {hw['cpu_model']}, {hw['logical_cpus']} logical CPUs ({hw['usable_cpus']} usable), RAM {hw['ram_gb']} GB")
    a(f"  software kernel {hw['kernel']} (Debian {hw['debian']}, cgroup {hw['cgroup']}), {hw['runc']}, Python {hw['python']}")
    a(f"  machine  busy {res['idle_busy_cores']:.2f} cores before the start (1 s sample), load {res['loadavg_start']:.2f}")
    for line in res["other_processes"][:6]:
        a(f"           also running: {line}")
    a("")
    if "executor" in res:
        e = res["executor"]
        a(f"1. Executor path, in process: run() -> RUNNING event, {sz.iterations} iterations (+1 warm-up), ms")
        a("   LRP: busybox httpd -f -p 8080, TCP check on 8080, 64 MB memory, 64 MB disk, unprivileged,")
        retry = (f"first retry after {e['check_first_retry_s'] * 1000:g} ms, doubling up to {e['check_interval_s']:g} s"
                 if e.get("check_first_retry_s") else f"retried every {e['check_interval_s']:g} s")
        a(f"   RunRequest built by the rep's conversion; startup TCP check probed at once, {retry}")
        a(f"   {'stage':<44} {'p50':>8} {'p99':>8} {'mean':>8} {'min':>8} {'max':>8}")
        for k, name in STAGE_NAMES.items():
            s = e["stages"][k]
            a(f"   {name:<44} {s['p50']:8.1f} {s['p99']:8.1f} {s['mean']:8.1f} {s['min']:8.1f} {s['max']:8.1f}")
        c = e["cold_first"]
        if c:
            a(f"   warm-up (first container: uid-shifted copy of the stack): total {c['total']:.0f} ms, rootfs {c['rootfs']:.0f} ms")
        a(f"   cpu: {e['cpu']['machine_busy_cores']:.2f} cores busy on average over {e['cpu']['seconds']:.0f} s")
        a("")
    if "raw" in res:
        r = res["raw"]
        a(f"2. Raw runc, same rootfs/limits/workload, {sz.iterations} iterations (+1 warm-up), ms")
        a("   overlay of the same uid-shifted busybox stack (upper in a plain dir, no disk image), user namespace,")
        a("   memory 64 MB, cpu.shares 1024, fresh netns + veth on a bridge; timed until a TCP connect to 8080 succeeds")
        a(f"   {'stage':<44} {'p50':>8} {'p99':>8} {'mean':>8} {'min':>8} {'max':>8}")
        for k, name in RAW_NAMES.items():
            s = r["stages"][k]
            a(f"   {name:<44} {s['p50']:8.1f} {s['p99']:8.1f} {s['mean']:8.1f} {s['min']:8.1f} {s['max']:8.1f}")
        a(f"   cpu: {r['cpu']['machine_busy_cores']:.2f} cores busy on average over {r['cpu']['seconds']:.0f} s")
        a("")
    if "comparison" in res:
        c = res["comparison"]
        a("3. Executor vs raw runc (p50)")
        a(f"   total {c['executor_p50_ms']:.1f} ms / {c['raw_p50_ms']:.1f} ms = {c['ratio_p50']:.2f}x;"
          f" overhead {c['overhead_p50_ms']:+.1f} ms")
        a(f"   split by stage (means: executor - raw; they add up to the mean overhead, {c['overhead_mean_ms']:+.1f} ms):")
        a(f"     rootfs {c['rootfs_diff_ms']:+.1f}, runc run {c['runc_diff_ms']:+.1f}, network {c['network_diff_ms']:+.1f},"
          f" runc exec of the app {c['exec_ms']:+.1f} (raw: httpd is the init), health check vs first connect"
          f" {c['check_diff_ms']:+.1f}, executor/garden bookkeeping {c['bookkeeping_ms']:+.1f} ms")
        a(f"   overhead p50 without the check stage (app started -> RUNNING) and the connect stage: {c['overhead_without_check_p50_ms']:+.1f} ms")
        a("")
    cl = res.get("cluster", {})
    if "desired_running" in cl:
        d = cl["desired_running"]
        a(f"4. Desired -> RUNNING through a real BBS (mTLS, etcd) and rep daemon, {sz.cluster_iterations} iterations, ms")
        a("   this script stands in for the auctioneer (next issue): desire the LRP, then POST /work to the rep at once;")
        a("   RUNNING = the ActualLRP's RUNNING event on the BBS event stream; rootfs cached")
        names = {"desire_rtt": "desire (POST /v1/desired_lrps) round trip", "work_rtt": "POST /work round trip",
                 "to_claimed": "/work answered -> CLAIMED event", "claimed_to_running": "CLAIMED -> RUNNING event",
                 "total": "TOTAL desire sent -> RUNNING event", "removal": "(remove LRP -> container gone, not in total)"}
        a(f"   {'stage':<44} {'p50':>8} {'p99':>8} {'mean':>8} {'min':>8} {'max':>8}")
        for k, name in names.items():
            s = d["stages"][k]
            a(f"   {name:<44} {s['p50']:8.1f} {s['p99']:8.1f} {s['mean']:8.1f} {s['min']:8.1f} {s['max']:8.1f}")
        a(f"   cpu: {d['cpu']['machine_busy_cores']:.2f} cores busy on average over {d['cpu']['seconds']:.0f} s")
        a("")
    if "capacity" in cl:
        c = cl["capacity"]
        f = c["first"]
        k0 = c["keys_idle"]
        a("5. Capacity of one cell (same rep; LRP of busybox httpd + TCP check, 16 MB memory, 16 MB disk per instance)")
        a(f"   kernel key quota per non-root uid: maxkeys {k0['maxkeys']}, maxbytes {k0['maxbytes']} (runc makes a session"
          f" keyring per container init and per exec, all owned by uid {k0['uid']})")
        a(f"   {f['requested']} instances in one /work: {f['running']} RUNNING after {f['seconds_to_all_running']:.1f} s"
          + (f"; refused {len(f['refused'])}: {reasons(f['refused'])}" if f["refused"] else "")
          + (f"; crashed {len(f['crashed'])}: {reasons(f['crashed'])}" if f["crashed"] else ""))
        for b in c["batches"]:
            a(f"   +{b['requested']}: {b['running']} RUNNING after {b['seconds_to_all_running']:.1f} s"
              + (f"; refused {len(b['refused'])}: {reasons(b['refused'])}" if b["refused"] else "")
              + (f"; crashed {len(b['crashed'])}: {reasons(b['crashed'])}" if b["crashed"] else "")
              + ("; TIMED OUT" if b["timed_out"] else ""))
        ke = c["keys_end"]
        a(f"   running at once: {c['running_at_once']} (cell: {c['cell_state']['total_resources']['containers']} containers max,"
          f" {c['cell_state']['available_resources']['containers']} left); keys of uid {ke['uid']}:"
          f" {ke['keys']}/{ke['maxkeys']}, {ke['bytes']}/{ke['maxbytes']} bytes")
        a(f"   {'memory':<24} {'rep VmRSS (VmHWM)':>18} {'keeper':>8} {'containers: working set = rss + kernel':>40} {'host MemAvailable':>18}")
        idle = c["memory_idle"]
        for label, key in (("idle (no container)", "memory_idle"), (f"first batch: {f['running']} running", "memory_first"),
                           (f"at the end: {c['running_at_once']} running", "memory_end")):
            m = c[key]
            cm = m["containers"]
            a(f"   {label:<24} {m['rep_vmrss_mb']:7.1f} ({m['rep_vmhwm_mb']:6.1f}) MB {m['keeper_vmrss_mb']:5.1f} MB"
              f" {cm['working_set_mb']:12.0f} MB = {cm['rss_mb']:.0f} + {cm['kernel_mb']:.0f} MB in {cm['containers']:<3}"
              f" {m['host_available_mb']:12.0f} MB")
        m1 = c["memory_first"]
        if f["running"]:
            a(f"   per container: rep +{(m1['rep_vmrss_mb'] - idle['rep_vmrss_mb']) * 1024 / f['running']:.0f} KB,"
              f" cgroups {m1['containers']['working_set_mb'] * 1024 / f['running']:.0f} KB,"
              f" host (MemAvailable drop, includes loop/ext4/overlay/netns kernel memory and other processes)"
              f" {(idle['host_available_mb'] - m1['host_available_mb']) * 1024 / f['running']:.0f} KB")
        a(f"   removing them all (DELETE the LRP; the BBS asks the rep to stop each instance): DELETE returned after"
          f" {c['remove_call_s']:.1f} s, cell empty after {c['removal_s']:.1f} s" + ("" if c["emptied"] else " (NOT all removed)"))
        a(f"   cpu: {c['cpu']['machine_busy_cores']:.2f} cores busy on average over {c['cpu']['seconds']:.0f} s")
        a("")
    a("Summary")
    rows: list[tuple[str, str]] = []
    if "executor" in res:
        rows.append(("executor run() -> RUNNING p50 / p99",
                     f"{res['executor']['stages']['total']['p50']:.0f} / {res['executor']['stages']['total']['p99']:.0f} ms"))
    if "raw" in res:
        rows.append(("raw runc -> app accepting p50 / p99",
                     f"{res['raw']['stages']['total']['p50']:.0f} / {res['raw']['stages']['total']['p99']:.0f} ms"))
    if "comparison" in res:
        rows.append(("ratio executor / raw (p50)", f"{res['comparison']['ratio_p50']:.2f}x"))
        rows.append(("overhead p50", f"{res['comparison']['overhead_p50_ms']:+.0f} ms"))
    if "desired_running" in cl:
        t = cl["desired_running"]["stages"]["total"]
        rows.append(("desired -> RUNNING p50 / p99 (BBS + rep)", f"{t['p50']:.0f} / {t['p99']:.0f} ms"))
    if "capacity" in cl:
        c = cl["capacity"]
        rows.append((f"{c['first']['requested']} containers: time to all RUNNING", f"{c['first']['seconds_to_all_running']:.1f} s"))
        rows.append((f"rep RSS with {c['first']['running']} containers (VmRSS / VmHWM)",
                     f"{c['memory_first']['rep_vmrss_mb']:.0f} / {c['memory_first']['rep_vmhwm_mb']:.0f} MB"))
        rows.append(("containers one cell ran at once", f"{c['running_at_once']} of {sz.max_containers} tried"))
    for k, v in rows:
        a(f"   {k:<52} {v}")
    a("")
    a("Targets" + (" (quick run: few samples)" if quick else ""))
    for t in tv.values():
        a(f"   {t['result']:<4}  {t['description']:<58} {t['value']:>9.3f} {t['unit']:<2} (target <= {t['limit']:g} {t['unit']})")
    a("")
    a(f"wall time {wall:.0f} s")
    return "\n".join(L)


def compare(e: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """The p50 overhead (the target's figure) and its split by stage. The split uses means:
    stage means add up to the total's mean, p50s do not."""
    es, rs = e["stages"], r["stages"]

    def mean(stages: dict[str, Any], *names: str) -> float:
        return sum(stages[n]["mean"] for n in names)

    return {
        "executor_p50_ms": es["total"]["p50"], "raw_p50_ms": rs["total"]["p50"],
        "ratio_p50": round(es["total"]["p50"] / rs["total"]["p50"], 2),
        "overhead_p50_ms": round(es["total"]["p50"] - rs["total"]["p50"], 1),
        "overhead_mean_ms": round(es["total"]["mean"] - rs["total"]["mean"], 1),
        "rootfs_diff_ms": round(mean(es, "rootfs") - mean(rs, "rootfs"), 1),
        "runc_diff_ms": round(mean(es, "runc") - mean(rs, "runc"), 1),
        "network_diff_ms": round(mean(es, "network") - mean(rs, "network"), 1),
        "exec_ms": round(mean(es, "process_start"), 1),
        "check_diff_ms": round(mean(es, "health_check") - mean(rs, "app_ready"), 1),
        "bookkeeping_ms": round(mean(es, "resolve", "executor_before_create", "garden_other", "executor_before_start"), 1),
        "overhead_without_check_p50_ms": round(es["total"]["p50"] - es["health_check"]["p50"]
                                               - (rs["total"]["p50"] - rs["app_ready"]["p50"]), 1),
    }
