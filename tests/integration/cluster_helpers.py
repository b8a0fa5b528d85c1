"""Driving a real local cluster (`pydiego cluster up --cells N`) from end-to-end tests.

An operator's view first: the `pydiego` CLI through subprocess for what a user would type, the
BBS API and the reps' `GET /state` over mutual TLS with the cluster's client certificate for
what a test must observe precisely. Background watchers (threads, so tests read top to
bottom) sample an LRP's instance rows every ~100 ms and record a BBS event stream; a tiny HTTP
server on the cells bridge counts the requests containers make to the host.

Every wait has a timeout that only means "it never happened" (no timed assertions), and its
failure message carries `pydiego actual-lrps` and the tails of the relevant logs.

Limits: one cluster per `Cluster`; the BBS URL is the one active when the cluster came up (these
tests never fail the BBS over); cgroup v1 paths (`/sys/fs/cgroup/pids/...`), as on this machine.
"""
from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from control.kit import tls

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "e2e"
T = TypeVar("T")

# busybox httpd answering "hello from <index>" on 8080; RUNNING only once it listens
HTTPD = "mkdir -p /www && echo hello from $INSTANCE_INDEX > /www/index.html && exec httpd -f -p 8080 -h /www"


def run_cli(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`pydiego ARGS` as a user runs it; a failure shows its output."""
    proc = subprocess.run([sys.executable, "-m", "control.cli.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"pydiego {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def lrp_doc(guid: str, instances: int, memory_mb: int = 32, disk_mb: int = 32) -> dict[str, Any]:
    return {"process_guid": guid, "domain": DOMAIN, "rootfs": "preloaded:busybox", "instances": instances,
            "memory_mb": memory_mb, "disk_mb": disk_mb, "ports": [8080],
            "action": {"run": {"path": "/bin/sh", "args": ["-c", HTTPD], "user": "root"}},
            "check_definition": {"checks": [{"tcp_check": {"port": 8080}}]}}


def serving_indices(rows: list[dict[str, Any]]) -> set[int]:
    """Indices with at least one RUNNING row, whatever its presence."""
    return {r["index"] for r in rows if r["state"] == "RUNNING"}


def http_get(address: str, port: int) -> str:
    return httpx.get(f"http://{address}:{port}/", timeout=5).text


class Cluster:
    """A local cluster brought up for a test module, and what the tests ask of it."""

    def __init__(self, directory: Path, status: dict[str, Any]) -> None:
        self.dir = directory
        self.network: dict[str, Any] = status["network"]
        self.cells: list[dict[str, Any]] = status["cells"]
        self.bbs_url: str = status["bbs_url"]
        self.ctx = tls.client_context(status["ca_cert"], status["client_cert"], status["client_key"])
        self.http = httpx.Client(verify=self.ctx, timeout=10)
        self.lrps: set[str] = set()  # desired by the current test, removed by cleanup()
        self.tasks: set[str] = set()

    @classmethod
    def up(cls, directory: Path, cells: int) -> "Cluster":
        run_cli("cluster", "up", "--cells", str(cells), "--dir", str(directory), timeout=300)
        return cls(directory, json.loads(run_cli("cluster", "status", "--json", "--dir", str(directory)).stdout))

    def close(self) -> None:
        self.http.close()

    # ---- the CLI and the cluster's own records ----------------------------------------------
    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--dir", str(self.dir), check=check, timeout=timeout)

    def state_file(self) -> dict[str, Any]:
        """cluster.json as the keeper last wrote it (current pids and restart counts)."""
        return json.loads((self.dir / "cluster.json").read_text())

    def process(self, name: str) -> dict[str, Any]:
        return next(p for p in self.state_file()["processes"] if p["name"] == name)

    def status(self) -> dict[str, Any]:
        """`pydiego cluster status --json` (exits 1 while something is down: still a status)."""
        return json.loads(self.cli("cluster", "status", "--json", check=False).stdout)

    def active(self, component: str) -> dict[str, Any] | None:
        """The process of `component` that holds its lock, per `cluster status`."""
        return next((p for p in self.status()["processes"] if p["component"] == component and p["active"]), None)

    @contextmanager
    def keeper_paused(self) -> Iterator[None]:
        """Nothing is restarted while inside (the keeper is SIGSTOPped); always resumed after."""
        pid = self.state_file()["keeper_pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    # ---- the BBS and the cells ---------------------------------------------------------------
    def actual_lrps(self, guid: str) -> list[dict[str, Any]]:
        resp = self.http.get(f"{self.bbs_url}/v1/actual_lrps", params={"process_guid": guid})
        resp.raise_for_status()
        return sorted(resp.json(), key=lambda r: (r["index"], r["presence"]))

    def running(self, guid: str) -> list[dict[str, Any]]:
        return [r for r in self.actual_lrps(guid) if r["state"] == "RUNNING" and r["presence"] == "ORDINARY"]

    def task(self, guid: str) -> dict[str, Any]:
        resp = self.http.get(f"{self.bbs_url}/v1/tasks/{guid}")
        resp.raise_for_status()
        return resp.json()  # type: ignore[no-any-return]

    def present_cells(self) -> set[str]:
        resp = self.http.get(f"{self.bbs_url}/v1/cells")
        resp.raise_for_status()
        return {c["cell_id"] for c in resp.json()}

    def cell(self, cell_id: str) -> dict[str, Any]:
        return next(c for c in self.cells if c["cell_id"] == cell_id)

    def cell_state(self, cell_id: str) -> dict[str, Any]:
        resp = self.http.get(f"{self.cell(cell_id)['rep_url']}/state", timeout=5)
        resp.raise_for_status()
        return resp.json()  # type: ignore[no-any-return]

    def containers(self, guid: str) -> dict[str, set[str]]:
        """Instance guids of `guid`'s containers on each cell, from every rep's /state."""
        return {c["cell_id"]: {x["instance_guid"] for x in self.cell_state(c["cell_id"])["lrps"]
                               if x["process_guid"] == guid} for c in self.cells}

    def app_pids(self, cell_id: str, instance_guid: str, command: str) -> list[int]:
        """Processes running `command` in an instance's container: its pids cgroup is
        <cgroup_parent>/<garden tag>/<container handle = instance guid>, the tag from rep.yml."""
        garden = yaml.safe_load(Path(self.cell(cell_id)["config"]).read_text())["garden"]
        procs = Path("/sys/fs/cgroup/pids") / garden.get("cgroup_parent", "/pydiego").strip("/") / garden["tag"] \
            / instance_guid / "cgroup.procs"
        found = []
        for pid in procs.read_text().split():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].decode(errors="replace") == command:
                found.append(int(pid))
        return found

    def metrics(self, process: dict[str, Any]) -> str:
        resp = self.http.get(f"{process['address']}/metrics", timeout=5)
        resp.raise_for_status()
        return resp.text

    # ---- desiring and cleaning up --------------------------------------------------------------
    def desire(self, guid: str, instances: int, *, memory_mb: int = 32, disk_mb: int = 32,
               wait: float = 0) -> None:
        """`pydiego desire FILE [--wait S]`; the LRP is removed by cleanup()."""
        path = self.dir / "specs" / f"{guid}.yml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(lrp_doc(guid, instances, memory_mb, disk_mb)))
        self.lrps.add(guid)
        self.cli("desire", str(path), *(["--wait", str(wait)] if wait else []), timeout=wait + 60)

    def run_task(self, guid: str, definition: dict[str, Any]) -> None:
        path = self.dir / "specs" / f"task-{guid}.yml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump({"task_guid": guid, "domain": DOMAIN, "task_definition": definition}))
        self.tasks.add(guid)
        self.cli("run-task", str(path))

    def wait_running(self, guid: str, instances: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Until indices 0..instances-1 each have an ORDINARY RUNNING row and no other index has
        a row; returns those rows by index."""
        def check() -> list[dict[str, Any]] | None:
            rows = self.actual_lrps(guid)
            ordinary = [r for r in rows if r["presence"] == "ORDINARY"]
            ok = sorted(r["index"] for r in ordinary if r["state"] == "RUNNING") == list(range(instances)) \
                and {r["index"] for r in rows} == set(range(instances))
            return sorted(ordinary, key=lambda r: r["index"]) if ok else None
        return self.wait_for(check, timeout, f"{guid}: {instances} instance(s) RUNNING")

    def wait_healthy(self, timeout: float = 60) -> None:
        """Every process alive, one active BBS, auctioneer and converger, every cell present in
        the BBS with a rep that answers /state and is not evacuating."""
        def check() -> bool:
            status = self.status()
            if not status.get("running"):
                return False
            active = {p["component"] for p in status["processes"] if p["active"]}
            if not {"bbs", "auctioneer", "converger"} <= active:
                return False
            if self.present_cells() != {c["cell_id"] for c in self.cells}:
                return False
            return not any(self.cell_state(c["cell_id"])["evacuating"] for c in self.cells)
        self.wait_for(check, timeout, "a healthy cluster (processes, lock holders, cells)", interval=0.5)

    def wait_rep_back(self, cell_id: str, old_pid: int, timeout: float = 60) -> None:
        """Until the keeper restarted the rep (a new pid) and the cell is present and serving."""
        def check() -> bool:
            pid = self.process(cell_id)["pid"]
            if pid == old_pid or cell_id not in self.present_cells():
                return False
            return not self.cell_state(cell_id)["evacuating"]
        self.wait_for(check, timeout, f"the rep of {cell_id} restarted, present and serving", logs=[cell_id, "keeper"])

    def cleanup(self) -> None:
        """Remove the test's LRPs and tasks; wait until their rows and containers are gone."""
        lrps, tasks = sorted(self.lrps), sorted(self.tasks)
        self.lrps.clear()
        self.tasks.clear()
        for guid in lrps:
            self.cli("remove", guid, check=False)
        for guid in tasks:  # COMPLETED → RESOLVING → deleted, as a client resolves a task
            self.http.post(f"{self.bbs_url}/v1/tasks/{guid}/resolving")
            self.http.delete(f"{self.bbs_url}/v1/tasks/{guid}")

        def gone() -> bool:
            if any(self.actual_lrps(g) for g in lrps):
                return False
            states = [self.cell_state(c["cell_id"]) for c in self.cells]
            return not any(x["process_guid"] in lrps for s in states for x in s["lrps"]) \
                and not any(t["task_guid"] in tasks for s in states for t in s["tasks"])
        self.wait_for(gone, 60, f"the rows and containers of {', '.join(lrps + tasks)} removed")

    # ---- waiting and explaining ----------------------------------------------------------------
    def wait_for(self, check: Callable[[], T | None], timeout: float, what: str, *,
                 logs: list[str] | None = None, interval: float = 0.2) -> T:
        """Poll `check` until it returns something truthy; HTTP errors count as "not yet"."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                result = check()
                if result:
                    return result
                last = result
            except (httpx.HTTPError, OSError, ValueError, KeyError, StopIteration) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})\n"
                                     + self.diagnostics(logs))
            time.sleep(interval)

    def diagnostics(self, logs: list[str] | None = None, lines: int = 20) -> str:
        """`pydiego actual-lrps` and the tails of the named logs (default: cells, auctioneers,
        convergers, keeper), for assertion messages."""
        out = ["pydiego actual-lrps:"]
        try:
            proc = self.cli("actual-lrps", check=False, timeout=30)
            out.append(proc.stdout + proc.stderr)
        except subprocess.TimeoutExpired:
            out.append("(timed out)")
        names = logs or ([c["cell_id"] for c in self.cells] + ["auctioneer-0", "auctioneer-1",
                                                                "converger-0", "converger-1", "keeper"])
        for name in names:
            log = self.dir / "logs" / f"{name}.log"
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- logs/{name}.log\n" + "\n".join(line[:400] for line in tail))
        return "\n".join(out)


class InstanceSampler(threading.Thread):
    """Samples an LRP's instance rows from the BBS every `interval` seconds, in a thread, with
    its own HTTP client. Each sample is one list request (one etcd read). Use as a context
    manager; `samples` holds (monotonic time, rows)."""

    def __init__(self, cluster: Cluster, guid: str, interval: float = 0.1) -> None:
        super().__init__(name=f"sampler-{guid}", daemon=True)
        self.cluster, self.guid, self.interval = cluster, guid, interval
        self.samples: list[tuple[float, list[dict[str, Any]]]] = []
        self.failed_requests = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(verify=self.cluster.ctx, timeout=5) as client:
            while not self._stop_event.is_set():
                try:
                    resp = client.get(f"{self.cluster.bbs_url}/v1/actual_lrps", params={"process_guid": self.guid})
                    resp.raise_for_status()
                    self.samples.append((time.monotonic(), resp.json()))
                except Exception:  # noqa: BLE001 — a missed sample is counted, never fatal
                    self.failed_requests += 1
                self._stop_event.wait(self.interval)

    def between(self, start: float, end: float) -> list[tuple[float, list[dict[str, Any]]]]:
        return [(t, rows) for t, rows in self.samples if start <= t <= end]

    def __enter__(self) -> "InstanceSampler":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join(10)


class EventStream(threading.Thread):
    """Records a BBS server-sent event stream (`/v1/events`, `/v1/events/tasks`) in a thread.
    Entering waits until the BBS confirms the subscription (its `: subscribed` comment), so
    everything that happens afterwards is seen; leaving shuts the socket down, and fails if the
    stream broke meanwhile (the record would be incomplete)."""

    def __init__(self, cluster: Cluster, path: str = "/v1/events") -> None:
        super().__init__(name=f"events{path}", daemon=True)
        self.cluster, self.path = cluster, path
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.error: BaseException | None = None
        self.live = threading.Event()  # set once subscribed, or once the thread ends
        self.subscribed = False
        self._sock: socket.socket | None = None
        self._closing = False

    def run(self) -> None:
        try:
            with httpx.Client(verify=self.cluster.ctx, timeout=httpx.Timeout(10, read=None)) as client:
                with client.stream("GET", f"{self.cluster.bbs_url}{self.path}") as resp:
                    resp.raise_for_status()
                    self._sock = resp.extensions["network_stream"].get_extra_info("socket")
                    name, data = "", []
                    for line in resp.iter_lines():
                        if line.startswith(": subscribed"):
                            self.subscribed = True
                            self.live.set()
                        elif line.startswith("event:"):
                            name = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line == "" and name:
                            self.events.append((name, json.loads("\n".join(data))))
                            name, data = "", []
                    if not self._closing:  # dropped as a slow consumer, or the BBS stopped
                        self.error = EOFError("the BBS ended the stream")
        except Exception as exc:  # noqa: BLE001 — reported through .error, checked by the test
            if not self._closing:
                self.error = exc
        finally:
            self.live.set()

    def __enter__(self) -> "EventStream":
        self.start()
        self.live.wait(15)
        if not self.subscribed:
            self.__exit__(AssertionError)
            raise AssertionError(f"could not subscribe to {self.path}: {self.error!r}")
        return self

    def __exit__(self, exc_type: object = None, *exc: object) -> None:
        self._closing = True
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.join(10)
        if exc_type is None and self.error is not None:
            raise AssertionError(f"the event stream {self.path} broke: {self.error!r}")


class HitCounter:
    """A plain HTTP server on a host address (the cells bridge's gateway) that counts the paths
    requested: what containers reach with an egress rule, the only channel from a container back
    to the test (cells share no file system with it)."""

    def __init__(self, host: str) -> None:
        hits: Counter[str] = Counter()
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 — the stdlib's name
                with lock:
                    hits[self.path] += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.hits = hits
        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.host, self.port = host, self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="hit-counter", daemon=True)

    def __enter__(self) -> "HitCounter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)
