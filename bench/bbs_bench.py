#!/usr/bin/env python3
"""BBS benchmark: a real etcd and a real BBS process (plain HTTP on loopback), driven over HTTP.

    .venv/bin/python bench/bbs_bench.py            # full run (10k / 100k instances), a few minutes
    .venv/bin/python bench/bbs_bench.py --quick    # smoke run (1k / 5k instances), < 60 s
    .venv/bin/python bench/bbs_bench.py --json     # machine-readable result on stdout

Figures: desires/s (sequential and concurrent), time to list every ActualLRP (client-parsed,
time to first byte, raw read), single-instance read latency while writers run, event delivery
latency (claim sent -> SSE event received), and the BBS's peak resident memory. See
bench/README.md. This is a script, never a test: nothing here asserts on timings.

Everything it starts (etcd, the BBS) runs in a temporary directory and is stopped and removed on
exit, on error, on Ctrl-C and on SIGTERM/SIGHUP.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import itertools
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402

from tests.factories import desired_lrp  # noqa: E402
from tests.servers import EtcdServer, free_port  # noqa: E402

DOMAIN = "bench"
TARGETS = {  # name -> (limit, unit, description)
    "list_100k_s": (2.0, "s", "list 100k ActualLRPs (client-parsed), median"),
    "read_p99_ms": (50.0, "ms", "single-instance read p99 under concurrent writes"),
    "event_p99_ms": (100.0, "ms", "event delivery p99 (claim -> SSE event)"),
    "rss_100k_mb": (500.0, "MB", "BBS peak RSS (VmHWM) with 100k instances stored"),
}


@dataclass(frozen=True)
class Sizes:
    desires_concurrent: int
    desires_sequential: int
    concurrency: int
    list_sizes: tuple[int, ...]
    list_runs: int
    lrp_instances: int          # instances per LRP used to fill the store
    reads: int
    baseline_reads: int
    writers: int
    event_samples: int


FULL = Sizes(desires_concurrent=2000, desires_sequential=200, concurrency=32, list_sizes=(10_000, 100_000),
             list_runs=5, lrp_instances=1000, reads=2000, baseline_reads=500, writers=8, event_samples=500)
QUICK = Sizes(desires_concurrent=300, desires_sequential=50, concurrency=32, list_sizes=(1_000, 5_000),
              list_runs=3, lrp_instances=500, reads=300, baseline_reads=100, writers=8, event_samples=100)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- statistics ------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    """Percentile by linear interpolation between closest ranks (p in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 3), "p90_ms": round(pct(ms, 90), 3),
            "p99_ms": round(pct(ms, 99), 3), "max_ms": round(max(ms), 3) if ms else float("nan"),
            "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan")}


# ---- machine description -----------------------------------------------------------------------
def hardware() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    try:
        etcd_version = subprocess.run([shutil.which("etcd") or "etcd", "--version"], capture_output=True,
                                      text=True, timeout=10).stdout.splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        etcd_version = "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    libs = {}
    for name in ("fastapi", "starlette", "uvicorn", "pydantic", "httpx", "aetcd", "grpcio"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            libs[name] = importlib.metadata.version(name)
    return {"cpu_model": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "ram_gb": round(mem_kb / 1024 / 1024, 1), "kernel": platform.release(),
            "python": platform.python_version(), "python_impl": platform.python_implementation(),
            "etcd": etcd_version, "libs": libs}


# ---- processes -------------------------------------------------------------------------------
class Harness:
    """A temporary directory with an etcd and a BBS process; `close()` is idempotent."""

    def __init__(self, log_level: str, keep: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pydiego-bench-"))
        self.keep = keep
        self.log_level = log_level
        self.etcd = EtcdServer(self.dir / "etcd")
        self.bbs: subprocess.Popen[bytes] | None = None
        self.bbs_log = self.dir / "bbs.log"
        self.port = 0
        self.closed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log(f"starting etcd in {self.dir}")
        self.etcd.start()
        self.port = free_port()
        config = self.dir / "bbs.yaml"
        doc: dict[str, Any] = {
            "listen_address": f"127.0.0.1:{self.port}", "etcd_endpoints": [self.etcd.endpoint],
            "key_prefix": "/bench/v1", "plain_http": True, "log_level": self.log_level}
        if "coordination" in bbs_config_fields():
            doc["coordination"] = {"backend": "etcd"}  # the `bbs` lock in our own etcd: no Consul needed
        config.write_text(yaml.safe_dump(doc))
        exe = ROOT / ".venv" / "bin" / "pydiego"
        cmd = [str(exe), "bbs", "--config", str(config)] if exe.exists() else \
            [sys.executable, "-m", "control.bbs", "--config", str(config)]
        log(f"starting BBS: {' '.join(cmd)}")
        with self.bbs_log.open("ab") as out:
            self.bbs = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # Ctrl-C reaches us only; we stop it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.bbs.poll() is not None:
                raise RuntimeError(f"BBS exited with {self.bbs.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/ping", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"BBS not ready after 30 s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.bbs_log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.bbs is not None
        return self.bbs.pid

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bbs is not None and self.bbs.poll() is None:
            self.bbs.terminate()
            try:
                self.bbs.wait(10)
            except subprocess.TimeoutExpired:
                self.bbs.kill()
                self.bbs.wait()
        self.etcd.stop()
        if self.keep:
            log(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def bbs_config_fields() -> set[str]:
    """Fields BBSConfig accepts (it forbids unknown ones), so the config fits this checkout."""
    try:
        from control.bbs.config import BBSConfig
    except Exception:  # noqa: BLE001 - an import error shows up again when the BBS starts
        return set()
    return set(BBSConfig.model_fields)


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS of a process in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            out[name] = int(rest.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def settle(pid: int, timeout: float = 300.0) -> float:
    """Wait until the BBS is idle (its event hub may still be translating a watch backlog);
    returns how long that took."""
    t0 = time.perf_counter()
    quiet, last = 0, cpu_seconds(pid)
    while time.perf_counter() - t0 < timeout:
        await asyncio.sleep(0.25)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - last < 0.02 else 0  # < 8 % of one core
        last = now
        if quiet >= 2:
            break
    return time.perf_counter() - t0


# ---- the benchmark ---------------------------------------------------------------------------
@dataclass
class State:
    url: str
    pid: int
    stored: int = 0                                    # ActualLRP rows written so far
    big: list[tuple[str, int]] = field(default_factory=list)  # guids of the fill LRPs and their sizes
    seq: itertools.count = field(default_factory=lambda: itertools.count(1))  # type: ignore[type-arg]


def client(url: str, connections: int = 64, timeout: float = 120.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=timeout,
                             limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))


class RawHTTP:
    """A minimal keep-alive HTTP/1.1 client used to generate load. httpx costs ~1-4 ms of CPU
    per request in this process (more with many pooled connections), which on a small machine
    steals the CPU the BBS needs and turns into client-side queueing; this costs ~0.1 ms, so
    the figures measure the BBS. Connections are pooled: one per concurrent request."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        hostport = url.split("://", 1)[1].rstrip("/")
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def __aenter__(self) -> "RawHTTP":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        while self._idle:
            _, w = self._idle.pop()
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        conn = self._idle.pop() if self._idle else await asyncio.open_connection(self.host, self.port)
        r, w = conn
        try:
            status, data, keep = await asyncio.wait_for(self._exchange(r, w, method, path, body), self.timeout)
        except BaseException:
            w.close()
            raise
        if keep:
            self._idle.append(conn)
        else:
            w.close()
        return status, data

    async def _exchange(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, method: str, path: str,
                        body: bytes) -> tuple[int, bytes, bool]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        w.write(head + body)
        raw = await r.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if "content-length" in headers:
            data = await r.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await r.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            data = b"".join(parts)
        else:
            data = b"" if status in (204, 304) else await r.read()
        return status, data, headers.get("connection", "").lower() != "close"

    async def get(self, path: str, params: dict[str, Any] | None = None) -> tuple[int, bytes]:
        if params:
            path += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        return await self.request("GET", path)


async def post_ok(c: RawHTTP, path: str, body: dict[str, Any], expect: int) -> None:
    status, data = await c.request("POST", path, json.dumps(body).encode())
    if status != expect:
        raise RuntimeError(f"POST {path} -> {status}: {data[:500]!r}")


async def run_pool(n_workers: int, jobs: list[Callable[[], Awaitable[None]]]) -> None:
    it = iter(jobs)

    async def worker() -> None:
        for job in it:
            await job()

    await asyncio.gather(*(worker() for _ in range(n_workers)))


async def bench_desires(st: State, sz: Sizes) -> dict[str, Any]:
    async with RawHTTP(st.url) as c:
        # warm up the connection and the code paths
        for _ in range(5):
            await post_ok(c, "/v1/desired_lrps", desired_lrp(process_guid=f"warm-{next(st.seq)}", domain=DOMAIN), 201)
            st.stored += 1
        log(f"desires: {sz.desires_sequential} sequential")
        t0 = time.perf_counter()
        for _ in range(sz.desires_sequential):
            await post_ok(c, "/v1/desired_lrps", desired_lrp(process_guid=f"seq-{next(st.seq)}", domain=DOMAIN), 201)
        seq_s = time.perf_counter() - t0
        st.stored += sz.desires_sequential

        log(f"desires: {sz.desires_concurrent} with concurrency {sz.concurrency}")
        lat: list[float] = []

        def job(guid: str) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                t = time.perf_counter()
                await post_ok(c, "/v1/desired_lrps", desired_lrp(process_guid=guid, domain=DOMAIN), 201)
                lat.append(time.perf_counter() - t)
            return run

        jobs = [job(f"conc-{next(st.seq)}") for _ in range(sz.desires_concurrent)]
        t0 = time.perf_counter()
        await run_pool(sz.concurrency, jobs)
        conc_s = time.perf_counter() - t0
        st.stored += sz.desires_concurrent
    seq_rate, conc_rate = sz.desires_sequential / seq_s, sz.desires_concurrent / conc_s
    return {"sequential": {"n": sz.desires_sequential, "seconds": round(seq_s, 3), "per_s": round(seq_rate, 1),
                           "mean_latency_ms": round(seq_s / sz.desires_sequential * 1000, 3)},
            "concurrent": {"n": sz.desires_concurrent, "concurrency": sz.concurrency, "seconds": round(conc_s, 3),
                           "per_s": round(conc_rate, 1), "latency": summary_ms(lat)},
            "speedup_concurrent_vs_sequential": round(conc_rate / seq_rate, 2)}


async def fill_to(st: State, sz: Sizes, target: int) -> dict[str, Any]:
    """Desire LRPs of `lrp_instances` instances until `target` ActualLRP rows are stored."""
    need = target - st.stored
    if need <= 0:
        return {"instances_added": 0}
    sizes = [sz.lrp_instances] * (need // sz.lrp_instances) + ([need % sz.lrp_instances] if need % sz.lrp_instances else [])
    log(f"filling to {target} instances: {len(sizes)} LRPs of up to {sz.lrp_instances} instances")
    async with RawHTTP(st.url) as c:
        def job(guid: str, n: int) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                await post_ok(c, "/v1/desired_lrps", desired_lrp(process_guid=guid, domain=DOMAIN, instances=n), 201)
                st.big.append((guid, n))
            return run
        t0 = time.perf_counter()
        await run_pool(4, [job(f"big-{next(st.seq)}", n) for n in sizes])
        write_s = time.perf_counter() - t0
    st.stored = target
    settle_s = await settle(st.pid)
    log(f"filled in {write_s:.1f} s, BBS idle {settle_s:.1f} s later")
    return {"instances_added": need, "lrps": len(sizes), "seconds": round(write_s, 3),
            "instances_per_s": round(need / write_s, 1), "settle_after_s": round(settle_s, 2)}


async def bench_list(st: State, runs: int) -> dict[str, Any]:
    parsed, models, ttfb, raw, nbytes = [], [], [], [], 0
    from control.client.bbs_client import BBSClient
    from control.models.actual_lrp import ActualLRP
    async with client(st.url, 2) as c:
        await c.get("/v1/ping")
        for _ in range(runs):
            # full: response read and JSON-parsed by the client
            t0 = time.perf_counter()
            resp = await c.get("/v1/actual_lrps")
            data = resp.json()
            parsed.append(time.perf_counter() - t0)
            if resp.status_code != 200 or len(data) != st.stored:
                raise RuntimeError(f"list returned {resp.status_code} with {len(data)} rows, expected {st.stored}")
            nbytes = len(resp.content)
            del data, resp
            # server: time to first byte (the server builds the whole body before sending it),
            # and every byte read without parsing
            t0 = time.perf_counter()
            async with c.stream("GET", "/v1/actual_lrps") as r:
                ttfb.append(time.perf_counter() - t0)
                async for _ in r.aiter_raw():
                    pass
            raw.append(time.perf_counter() - t0)
    # the project's typed client (JSON + one pydantic ActualLRP per row), for reference
    async with BBSClient(st.url, timeout_s=120) as bc:
        for _ in range(runs):
            t0 = time.perf_counter()
            lrps = await bc.actual_lrps()
            models.append(time.perf_counter() - t0)
            assert len(lrps) == st.stored and isinstance(lrps[0], ActualLRP)
            del lrps
    med = statistics.median
    out = {"instances": st.stored, "runs": runs, "response_mb": round(nbytes / 1e6, 2),
           "client_parsed_s": round(med(parsed), 4), "server_ttfb_s": round(med(ttfb), 4),
           "raw_read_s": round(med(raw), 4), "bbs_client_models_s": round(med(models), 4),
           "all_runs": {"client_parsed_s": [round(x, 4) for x in parsed], "server_ttfb_s": [round(x, 4) for x in ttfb],
                        "raw_read_s": [round(x, 4) for x in raw], "bbs_client_models_s": [round(x, 4) for x in models]}}
    out["per_1k_instances_ms"] = round(out["client_parsed_s"] / st.stored * 1e6, 3)
    return out


def instance_pool(st: State) -> list[tuple[str, int]]:
    """Every (guid, index) of the fill LRPs, shuffled deterministically: all UNCLAIMED so far."""
    pool = [(g, i) for g, n in st.big for i in range(n)]
    random.Random(42).shuffle(pool)
    return pool


async def read_one(c: RawHTTP, guid: str, index: int) -> float:
    t0 = time.perf_counter()
    status, body = await c.get("/v1/actual_lrps", {"process_guid": guid, "index": index})
    rows = json.loads(body)
    dt = time.perf_counter() - t0
    if status != 200 or len(rows) != 1:
        raise RuntimeError(f"read {guid}/{index} -> {status}: {body[:300]!r}")
    return dt


async def bench_reads(st: State, sz: Sizes, pool: list[tuple[str, int]]) -> dict[str, Any]:
    rng = random.Random(7)
    read_targets = [pool[rng.randrange(len(pool))] for _ in range(sz.reads + sz.baseline_reads)]
    async with RawHTTP(st.url) as reader:
        for g, i in read_targets[:20]:  # warm-up
            await read_one(reader, g, i)
        log(f"reads: {sz.baseline_reads} without writers")
        idle = [await read_one(reader, g, i) for g, i in read_targets[: sz.baseline_reads]]

        log(f"reads: {sz.reads} with {sz.writers} writers (claim + start)")
        stop = asyncio.Event()
        writes: list[float] = []
        work = iter(pool)
        taken = [0]
        n = itertools.count()

        async def writer(c: RawHTTP) -> None:
            while not stop.is_set():
                try:
                    guid, index = next(work)
                except StopIteration:
                    return
                taken[0] += 1
                ig, cell = f"ig-w-{next(n)}", f"cell-{index % 50}"
                t = time.perf_counter()
                await post_ok(c, f"/v1/actual_lrps/{guid}/{index}/claim", {"instance_guid": ig, "cell_id": cell}, 204)
                writes.append(time.perf_counter() - t)
                t = time.perf_counter()
                await post_ok(c, f"/v1/actual_lrps/{guid}/{index}/start", {
                    "instance_guid": ig, "cell_id": cell, "address": "10.0.0.1",
                    "ports": [{"container_port": 8080, "host_port": 61000 + index % 1000}]}, 204)
                writes.append(time.perf_counter() - t)

        loaded: list[float] = []
        async with RawHTTP(st.url) as wc:
            tasks = [asyncio.create_task(writer(wc)) for _ in range(sz.writers)]
            await asyncio.sleep(0.2)  # let the writers get going
            t0 = time.perf_counter()
            w0 = len(writes)
            try:
                for g, i in read_targets[sz.baseline_reads:]:
                    loaded.append(await read_one(reader, g, i))
            finally:
                elapsed = time.perf_counter() - t0
                w1 = len(writes)
                stop.set()
                await asyncio.gather(*tasks)
    used = taken[0]
    idle_s, loaded_s = summary_ms(idle), summary_ms(loaded)
    return {"idle": idle_s, "under_writes": loaded_s, "writers": sz.writers,
            "writes_during_reads": w1 - w0, "writes_per_s": round((w1 - w0) / elapsed, 1),
            "write_latency": summary_ms(writes), "reads_per_s": round(len(loaded) / elapsed, 1),
            "p99_ratio_loaded_vs_idle": round(loaded_s["p99_ms"] / idle_s["p99_ms"], 2),
            "_instances_used": used}


async def bench_events(st: State, sz: Sizes, pool: list[tuple[str, int]]) -> dict[str, Any]:
    waiters: dict[tuple[str, int], asyncio.Future[float]] = {}
    subscribed = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def consume(c: httpx.AsyncClient) -> None:
        async with c.stream("GET", "/v1/events", timeout=httpx.Timeout(10.0, read=None)) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"/v1/events -> {resp.status_code}")
            name, data = "", []
            async for line in resp.aiter_lines():
                if line.startswith(":"):
                    subscribed.set()
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and name:
                    now = time.perf_counter()
                    if name == "actual_lrp_instance_changed":
                        payload = json.loads("\n".join(data))
                        key = payload["actual_lrp_key"]
                        fut = waiters.get((key["process_guid"], key["index"]))
                        if fut is not None and not fut.done() and payload["after"]["state"] == "CLAIMED":
                            fut.set_result(now)
                    name, data = "", []

    lat: list[float] = []
    rtt: list[float] = []
    async with client(st.url, 2) as sse, RawHTTP(st.url) as c:
        consumer = asyncio.create_task(consume(sse))
        try:
            await asyncio.wait_for(subscribed.wait(), 10)
            log(f"events: {sz.event_samples} claims, one at a time")
            for k, (guid, index) in enumerate(pool[: sz.event_samples + 10]):
                fut: asyncio.Future[float] = loop.create_future()
                waiters[(guid, index)] = fut
                t0 = time.perf_counter()
                await post_ok(c, f"/v1/actual_lrps/{guid}/{index}/claim",
                              {"instance_guid": f"ig-e-{k}", "cell_id": "cell-events"}, 204)
                t_resp = time.perf_counter()
                t_event = await asyncio.wait_for(fut, 10)
                del waiters[(guid, index)]
                if k >= 10:  # the first 10 are warm-up
                    lat.append(t_event - t0)
                    rtt.append(t_resp - t0)
                if consumer.done():
                    consumer.result()
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await consumer
    ev, cl = summary_ms(lat), summary_ms(rtt)
    return {"event": ev, "claim_rtt": cl, "p50_event_minus_claim_rtt_ms": round(ev["p50_ms"] - cl["p50_ms"], 3)}


def memory(st: State) -> dict[str, float]:
    s = proc_status(st.pid)
    return {"vmhwm_mb": round(s["VmHWM"] / 1024, 1), "vmrss_mb": round(s["VmRSS"] / 1024, 1)}


class CPUMeter:
    """CPU used during a phase by the BBS, etcd, this process, and everything else on the
    machine (other users' processes compete for the same cores and skew the figures)."""

    def __init__(self, h: Harness) -> None:
        self.pids = {"bbs": h.pid, "etcd": h.etcd.proc.pid if h.etcd.proc else 0}
        self.t0, self.snap0 = time.perf_counter(), self._snap()

    def _snap(self) -> dict[str, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
        ru = os.times()
        out = {"machine": busy, "bench": ru.user + ru.system}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                out[name] = cpu_seconds(pid)
        return out

    def stop(self) -> dict[str, float]:
        snap, wall = self._snap(), time.perf_counter() - self.t0
        used = {k: snap.get(k, 0.0) - self.snap0.get(k, 0.0) for k in snap}
        ours = used["bbs"] + used.get("etcd", 0.0) + used["bench"]
        out = {f"{k}_cores": round(used[k] / wall, 2) for k in ("bbs", "etcd", "bench")}
        out["other_cores"] = round(max(0.0, used["machine"] - ours) / wall, 2)
        out["seconds"] = round(wall, 1)
        return out


async def run_all(h: Harness, sz: Sizes, quick: bool) -> dict[str, Any]:
    st = State(h.url, h.pid)
    res: dict[str, Any] = {"mode": "quick" if quick else "full", "sizes": sz.__dict__.copy(), "cpu": {}}
    res["sizes"]["list_sizes"] = list(sz.list_sizes)
    res["loadavg_start"] = os.getloadavg()[0]
    await settle(st.pid, 10)
    res["memory_start"] = memory(st)
    m = CPUMeter(h)
    res["desires"] = await bench_desires(st, sz)
    res["cpu"]["desires"] = m.stop()
    res["fill"], res["list"] = {}, {}
    for n in sz.list_sizes:
        res["fill"][str(n)] = await fill_to(st, sz, n)
        log(f"list: {n} instances x {sz.list_runs} runs")
        m = CPUMeter(h)
        res["list"][str(n)] = await bench_list(st, sz.list_runs)
        res["cpu"][f"list_{n}"] = m.stop()
        res[f"memory_after_list_{n}"] = memory(st)
    small, large = (res["list"][str(n)] for n in sz.list_sizes)
    res["list_ratio_large_vs_small"] = round(large["client_parsed_s"] / small["client_parsed_s"], 2)
    res["memory_largest"] = res[f"memory_after_list_{sz.list_sizes[-1]}"]
    pool = instance_pool(st)
    m = CPUMeter(h)
    res["reads"] = await bench_reads(st, sz, pool)
    res["cpu"]["reads"] = m.stop()
    used = res["reads"].pop("_instances_used")
    await settle(st.pid)
    m = CPUMeter(h)
    res["events"] = await bench_events(st, sz, pool[used + 16:])
    res["cpu"]["events"] = m.stop()
    res["memory_end"] = memory(st)
    res["loadavg_end"] = os.getloadavg()[0]
    return res


def verdicts(res: dict[str, Any], sz: Sizes) -> dict[str, Any]:
    largest = res["list"][str(sz.list_sizes[-1])]
    measured = {"list_100k_s": largest["client_parsed_s"], "read_p99_ms": res["reads"]["under_writes"]["p99_ms"],
                "event_p99_ms": res["events"]["event"]["p99_ms"], "rss_100k_mb": res["memory_largest"]["vmhwm_mb"]}
    out = {}
    for name, (limit, unit, desc) in TARGETS.items():
        value = measured[name]
        out[name] = {"value": value, "limit": limit, "unit": unit, "description": desc,
                     "result": "PASS" if value <= limit else "MISS",
                     "at_size": sz.list_sizes[-1] if name in ("list_100k_s", "rss_100k_mb") else None}
    return out


def report(hw: dict[str, Any], res: dict[str, Any], tv: dict[str, Any], sz: Sizes, wall: float) -> str:
    L: list[str] = []
    a = L.append
    a("pydiego BBS benchmark" + (" (--quick: sizes below the targets' sizes)" if res["mode"] == "quick" else ""))
    a(f"  CPU      {hw['cpu_model']}, {hw['logical_cpus']} logical CPUs ({hw['usable_cpus']} usable), RAM {hw['ram_gb']} GB")
    a(f"  software Python {hw['python']}, {hw['etcd']}, kernel {hw['kernel']}")
    a("           " + ", ".join(f"{k} {v}" for k, v in hw["libs"].items()))
    a("  setup    etcd, BBS and this client share the machine; plain HTTP on loopback; BBS log_level as given")
    a("")
    d = res["desires"]
    a("1. Desires (1-instance LRPs, POST /v1/desired_lrps)")
    a(f"   sequential  {d['sequential']['n']:>6} in {d['sequential']['seconds']:.2f} s  = {d['sequential']['per_s']:8.1f} /s"
      f"  (mean {d['sequential']['mean_latency_ms']:.2f} ms each)")
    cl = d["concurrent"]["latency"]
    a(f"   concurrent  {d['concurrent']['n']:>6} in {d['concurrent']['seconds']:.2f} s  = {d['concurrent']['per_s']:8.1f} /s"
      f"  (concurrency {d['concurrent']['concurrency']}; latency p50 {cl['p50_ms']:.1f} ms, p99 {cl['p99_ms']:.1f} ms)")
    a(f"   concurrent / sequential = {d['speedup_concurrent_vs_sequential']:.2f}x")
    for n, f in res["fill"].items():
        if f.get("instances_added"):
            a(f"   (fill to {int(n):,}: {f['instances_added']:,} instances in {f['lrps']} LRPs, {f['seconds']:.2f} s"
              f" = {f['instances_per_s']:,.0f} instances/s; BBS busy {f['settle_after_s']:.1f} s more after the last write)")
    a("")
    a(f"2. List all ActualLRPs (GET /v1/actual_lrps), median of {sz.list_runs} runs")
    a(f"   {'instances':>10} {'MB':>7} {'client-parsed':>14} {'server TTFB':>12} {'raw read':>10} {'BBSClient models':>17} {'per 1k':>8}")
    for n, r in res["list"].items():
        a(f"   {r['instances']:>10,} {r['response_mb']:>7.1f} {r['client_parsed_s']:>12.3f} s {r['server_ttfb_s']:>10.3f} s"
          f" {r['raw_read_s']:>8.3f} s {r['bbs_client_models_s']:>15.3f} s {r['per_1k_instances_ms']:>5.1f} ms")
    small, large = (res["list"][str(n)] for n in sz.list_sizes)
    a(f"   {large['instances']:,} / {small['instances']:,} = {large['instances'] / small['instances']:.0f}x rows ->"
      f" {res['list_ratio_large_vs_small']:.2f}x time (client-parsed),"
      f" {large['server_ttfb_s'] / small['server_ttfb_s']:.2f}x (server TTFB)")
    a("")
    r = res["reads"]
    a("3. Single-instance read (GET /v1/actual_lrps?process_guid=X&index=N), one reader, sequential")
    a(f"   idle           n={r['idle']['n']:<5} p50 {r['idle']['p50_ms']:7.2f} ms  p99 {r['idle']['p99_ms']:7.2f} ms  max {r['idle']['max_ms']:7.2f} ms")
    u = r["under_writes"]
    a(f"   under writes   n={u['n']:<5} p50 {u['p50_ms']:7.2f} ms  p99 {u['p99_ms']:7.2f} ms  max {u['max_ms']:7.2f} ms"
      f"  ({r['writers']} writers doing claim+start: {r['writes_per_s']:.0f} writes/s,"
      f" write p50 {r['write_latency']['p50_ms']:.1f} ms p99 {r['write_latency']['p99_ms']:.1f} ms)")
    a(f"   p99 under writes / idle = {r['p99_ratio_loaded_vs_idle']:.2f}x; {r['reads_per_s']:.0f} reads/s while loaded")
    a("")
    e = res["events"]
    a("4. Event delivery (claim POST sent -> actual_lrp_instance_changed read from /v1/events), one at a time")
    a(f"   event          n={e['event']['n']:<5} p50 {e['event']['p50_ms']:7.2f} ms  p99 {e['event']['p99_ms']:7.2f} ms  max {e['event']['max_ms']:7.2f} ms")
    a(f"   claim RTT      n={e['claim_rtt']['n']:<5} p50 {e['claim_rtt']['p50_ms']:7.2f} ms  p99 {e['claim_rtt']['p99_ms']:7.2f} ms"
      f"  (event p50 - claim RTT p50 = {e['p50_event_minus_claim_rtt_ms']:+.2f} ms)")
    a("")
    a("5. BBS memory (/proc/<pid>/status)")
    a(f"   at start                    VmHWM {res['memory_start']['vmhwm_mb']:7.1f} MB  VmRSS {res['memory_start']['vmrss_mb']:7.1f} MB")
    for n in sz.list_sizes:
        m = res[f"memory_after_list_{n}"]
        a(f"   after list runs at {n:>7,}  VmHWM {m['vmhwm_mb']:7.1f} MB  VmRSS {m['vmrss_mb']:7.1f} MB")
    a(f"   at end                      VmHWM {res['memory_end']['vmhwm_mb']:7.1f} MB  VmRSS {res['memory_end']['vmrss_mb']:7.1f} MB")
    a("")
    a("CPU use per phase, in cores busy on average (this machine has "
      f"{hw['logical_cpus']}; 'other' = processes outside this benchmark)")
    for phase, c in res["cpu"].items():
        a(f"   {phase:<14} {c['seconds']:6.1f} s   BBS {c['bbs_cores']:.2f}  etcd {c['etcd_cores']:.2f}"
          f"  bench client {c['bench_cores']:.2f}  other {c['other_cores']:.2f}")
    a(f"   load average (1 min) {res['loadavg_start']:.2f} at start, {res['loadavg_end']:.2f} at end")
    a("")
    a("Targets" + (" (quick run: measured at the quick sizes, not 100k)" if res["mode"] == "quick" else ""))
    for name, t in tv.items():
        size = f" [at {t['at_size']:,}]" if t["at_size"] else ""
        a(f"   {t['result']:<4}  {t['description']:<55} {t['value']:>9.3f} {t['unit']:<2} (target <= {t['limit']:g} {t['unit']}){size}")
    a("")
    a(f"wall time {wall:.0f} s")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (1k/5k instances) for a smoke run, < 60 s")
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of the text report")
    ap.add_argument("--log-level", default="info", help="BBS log_level (default info, as deployed)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (etcd data, bbs.log)")
    args = ap.parse_args(argv)
    sz = QUICK if args.quick else FULL

    harness = Harness(args.log_level, args.keep)

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally below

    for s in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(s) is not signal.SIG_IGN:  # keep nohup's ignored SIGHUP
            signal.signal(s, on_signal)
    t0 = time.perf_counter()
    try:
        hw = hardware()
        harness.start()
        res = asyncio.run(run_all(harness, sz, args.quick))
        tv = verdicts(res, sz)
        wall = time.perf_counter() - t0
        if args.json:
            print(json.dumps({"hardware": hw, "results": res, "targets": tv, "wall_s": round(wall, 1)}, indent=2))
        else:
            print(report(hw, res, tv, sz, wall))
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception:
        log("failed; last BBS log lines:\n" + harness.log_tail())
        raise
    finally:
        with contextlib.suppress(Exception):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        harness.close()
        log("stopped BBS and etcd, removed temporary files" if not args.keep else "stopped BBS and etcd")


if __name__ == "__main__":
    sys.exit(main())
