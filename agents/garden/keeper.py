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

Protocol: a SOCK_SEQPACKET socket inherited as fd argv[1], one JSON object per message.
  request  {"op": "exec", "id": ID, "argv": [...], "pid_file": PATH} + 3 fds (stdin, stdout, stderr)
  replies  {"event": "started", "id": ID, "pid": PID}
           {"event": "failed", "id": ID, "status": WAITSTATUS}     runc exited without starting it
           {"event": "exited", "id": ID, "status": WAITSTATUS}
The keeper exits when the socket closes; processes still running then are re-parented to init.
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

PR_SET_CHILD_SUBREAPER = 36
MAX_EARLY = 4096


class Keeper:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending: dict[int, tuple[str, str]] = {}   # runc pid -> (id, pid_file)
        self.running: dict[int, str] = {}               # process pid -> id
        self.early: dict[int, int] = {}                 # reaped before its runc exited: pid -> status

    def send(self, message: dict[str, object]) -> None:
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
            actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)]
            pid = os.posix_spawnp(argv[0], argv, os.environ,
                                  file_actions=actions, setsid=True)
            self.pending[pid] = (str(request["id"]), str(request["pid_file"]))
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
                break
            if pid == 0:
                break
            reaped.append((pid, status))
        for pid, status in reaped:
            if pid in self.pending:
                self.runc_exited(pid, status)
            elif pid in self.running:
                self.send({"event": "exited", "id": self.running.pop(pid), "status": status})
            else:
                self.early[pid] = status
                while len(self.early) > MAX_EARLY:
                    self.early.pop(next(iter(self.early)))

    def runc_exited(self, runc_pid: int, status: int) -> None:
        process_id, pid_file = self.pending.pop(runc_pid)
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            self.send({"event": "failed", "id": process_id, "status": status})
            return
        self.send({"event": "started", "id": process_id, "pid": pid})
        if pid in self.early:
            self.send({"event": "exited", "id": process_id, "status": self.early.pop(pid)})
        else:
            self.running[pid] = process_id


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"keeper: prctl: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    sock.set_inheritable(False)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C for the backend's terminal is not for us
    keeper = Keeper(sock)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "sock")
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
                return 0
        keeper.reap()


if __name__ == "__main__":
    sys.exit(main())
