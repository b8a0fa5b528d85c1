"""The process keeper: a small helper process that starts container processes and reaps them.

It also starts each container's init (`runc run --detach`), so a dead init is reaped at once
(runc treats an unreaped zombie as still running and makes `delete` wait for it).

Why it exists: `runc exec` in the foreground only exits once nobody holds the process's output
pipes any more, so a backgrounded child (`daemon &`) would hide the exit status until it exits
too. `runc exec --detach` returns at once, but then the process is re-parented and its status
goes to whoever reaps it. The keeper is a child subreaper (PR_SET_CHILD_SUBREAPER): it runs
`runc exec --detach` with the caller's stdio fds, inherits the started process when runc exits,
and reports the wait status. Garden has the same piece (dadoo); here one keeper serves a whole
backend, and the backend's own process never changes its reaping behaviour.

Restart safety: the keeper detaches from the backend at start (double fork, own session), so a
backend that dies, even by SIGKILL, leaves it running. Every exit is also written to the
process's `status_file` (JSON {"wait_status", "oom_kills", "exited_at"}, tmp file + rename):
that file is the durable truth a later backend reads. Once the socket closes the keeper keeps
reaping and recording, and exits when it has no child left (container inits are children too,
so it lives as long as the containers it started). A keeper that is itself killed loses the
statuses of its remaining processes (they are re-parented to PID 1).

Protocol: a SOCK_SEQPACKET socket inherited as fd argv[1], one JSON object per message.
  first    {"event": "ready", "pid": PID}                      from the detached keeper
  request  {"op": "exec", "id": ID, "argv": [...], "pid_file": PATH,
            "status_file": PATH|null, "oom_file": PATH|null} + 3 fds (stdin, stdout, stderr)
  replies  {"event": "started", "id": ID, "pid": PID}
           {"event": "failed", "id": ID, "status": WAITSTATUS}     runc exited without starting it
           {"event": "exited", "id": ID, "status": WAITSTATUS, "oom_kills": N|null}
`oom_file` is the container's memory.oom_control: its oom_kill counter is read at reap time.
Standard library only: it is run by path with `python -I`, without the pydiego package.
"""
from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass

PR_SET_CHILD_SUBREAPER = 36
MAX_EARLY = 4096
# Python ignores SIGPIPE and SIGXFSZ, the keeper SIGINT and SIGHUP: runc must not inherit that.
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True)
class Job:
    id: str
    pid_file: str
    status_file: str | None
    oom_file: str | None


class Keeper:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.connected = True
        self.childless = False
        self.pending: dict[int, Job] = {}   # runc pid -> job
        self.running: dict[int, Job] = {}   # process pid -> job
        self.early: dict[int, int] = {}     # reaped before its runc exited: pid -> status

    def send(self, message: dict[str, object]) -> None:
        if not self.connected:
            return
        try:
            self.sock.send(json.dumps(message).encode())
        except OSError:
            pass  # the backend is gone; keep reaping until the socket read sees EOF

    def handle_request(self) -> bool:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 3)
        except OSError:
            return False
        if not data:
            return False
        request: dict[str, object] = {}
        try:
            for fd in fds:
                os.set_inheritable(fd, False)  # only the dup2'ed 0, 1, 2 reach runc
            request = json.loads(data)
            if request.get("op") != "exec" or len(fds) != 3:
                raise ValueError("bad request")
            argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
            job = Job(str(request["id"]), str(request["pid_file"]),
                      _opt(request.get("status_file")), _opt(request.get("oom_file")))
            actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)]
            pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions, setsid=True,
                                  setsigdef=RESET_SIGNALS)
            self.pending[pid] = job
            self.childless = False
        except (ValueError, KeyError, OSError) as exc:
            self.send({"event": "failed", "id": str(request.get("id", "")), "status": 255 << 8, "error": str(exc)})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def reap(self) -> None:
        reaped: list[tuple[int, int]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.childless = True
                break
            if pid == 0:
                break
            reaped.append((pid, status))
        for pid, status in reaped:
            if pid in self.pending:
                self.runc_exited(pid, status)
            elif pid in self.running:
                self.exited(self.running.pop(pid), status)
            else:
                self.early[pid] = status
                while len(self.early) > MAX_EARLY:
                    self.early.pop(next(iter(self.early)))

    def runc_exited(self, runc_pid: int, status: int) -> None:
        job = self.pending.pop(runc_pid)
        try:
            with open(job.pid_file) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            self.send({"event": "failed", "id": job.id, "status": status})
            return
        self.send({"event": "started", "id": job.id, "pid": pid})
        if pid in self.early:
            self.exited(job, self.early.pop(pid))
        else:
            self.running[pid] = job

    def exited(self, job: Job, status: int) -> None:
        oom_kills = _oom_kills(job.oom_file) if job.oom_file else None
        if job.status_file:
            record = {"wait_status": status, "oom_kills": oom_kills, "exited_at": time.time()}
            _write_atomically(job.status_file, json.dumps(record))
        self.send({"event": "exited", "id": job.id, "status": status, "oom_kills": oom_kills})


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _oom_kills(path: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return None


def _write_atomically(path: str, text: str) -> None:
    """Best effort: the bundle may be gone already (the container was destroyed)."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def detach() -> None:
    """Leave the backend: the starter's child exits at once; the grandchild, in its own session, stays."""
    if os.fork() != 0:
        os._exit(0)
    os.setsid()
    os.chdir("/")


def serve(keeper: Keeper, wake_r: int) -> int:
    """Serve requests while connected; then reap until no child is left."""
    selector = selectors.DefaultSelector()
    selector.register(keeper.sock, selectors.EVENT_READ, "sock")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    while True:
        for key, _ in selector.select():
            if key.data == "wake":
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            elif not keeper.handle_request():
                keeper.connected = False
                selector.unregister(keeper.sock)
                keeper.sock.close()
        keeper.reap()
        if not keeper.connected and keeper.childless:
            return 0


def main() -> int:
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    sock.set_inheritable(False)
    detach()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sock.send(json.dumps({"event": "fatal", "error": f"prctl: {os.strerror(ctypes.get_errno())}"}).encode())
        return 1
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C for the backend's terminal is not for us
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    keeper = Keeper(sock)
    keeper.send({"event": "ready", "pid": os.getpid()})
    return serve(keeper, wake_r)


if __name__ == "__main__":
    sys.exit(main())
