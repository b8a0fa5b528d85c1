"""What outlives the backend's process: the keeper's exit_status files, process records, pruning;
how an exit is classified; how stream helpers' exits become results or typed errors."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from agents.garden import keeper, store, streams
from agents.garden.errors import FileMissing, FileTooLarge, InvalidSpec, StreamFailed
from agents.garden.layout import Bundle
from agents.garden.models import ExitStatus, ProcessSpec
from agents.garden.process import exit_status, lost_status

OK = ExitStatus(code=0)


def test_keeper_status_file_is_what_the_backend_reads(tmp_path: Path) -> None:
    pdir = Bundle(tmp_path).process("web")
    pdir.path.mkdir(parents=True)
    oom_control = tmp_path / "memory.oom_control"
    oom_control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    sent: list[bytes] = []

    class Sock:
        def send(self, data: bytes) -> None:
            sent.append(data)

    job = keeper.Job("c/web", str(pdir.pid), str(pdir.exit_status), str(oom_control))
    keeper.Keeper(Sock()).exited(job, signal.SIGKILL)  # type: ignore[arg-type]
    record = store.load_exit(pdir)
    assert record is not None and (record.wait_status, record.oom_kills) == (signal.SIGKILL, 3)
    assert json.loads(sent[0]) == {"event": "exited", "id": "c/web", "status": signal.SIGKILL, "oom_kills": 3}
    assert os.listdir(pdir.path) == ["exit_status"]  # no temporary file left
    # A destroyed bundle: the keeper shrugs.
    keeper._write_atomically(str(tmp_path / "gone" / "exit_status"), "{}")


def test_process_record_falls_back_on_runcs_pid_file(tmp_path: Path) -> None:
    pdir = Bundle(tmp_path).process("p")
    pdir.path.mkdir(parents=True)
    assert store.load_process(pdir) is None
    store.save_process(pdir, store.ProcessRecord(process_id="p", keeper_pid=10, created_at=1.0))
    pdir.pid.write_text("4242")
    record = store.load_process(pdir)
    assert record is not None and record.pid == 4242


def test_prune_keeps_the_newest_exited(tmp_path: Path) -> None:
    bundle = Bundle(tmp_path)
    for i in range(5):
        pdir = bundle.process(f"p{i}")
        pdir.path.mkdir(parents=True)
        if i != 4:  # p4 is still running
            pdir.exit_status.write_text("{}")
            os.utime(pdir.exit_status, (1000 + i, 1000 + i))
    store.prune_exited(bundle, keep=2, exclude={"p0"})
    assert sorted(d.id for d in store.process_dirs(bundle)) == ["p0", "p2", "p3", "p4"]
    store.remove_processes(bundle)
    assert store.process_dirs(bundle) == [] and list(tmp_path.iterdir()) == []


def test_exit_classification() -> None:
    assert exit_status(7 << 8, oom=True) == ExitStatus(code=7)
    killed = exit_status(signal.SIGKILL, oom=True)
    assert (killed.code, killed.signal, killed.oom_killed, killed.reason) == (137, 9, True, "out of memory")
    assert exit_status(signal.SIGTERM, oom=True).oom_killed is False
    assert lost_status() == ExitStatus(code=255, lost=True, reason="exit status lost")


def test_stream_specs_and_results(tmp_path: Path) -> None:
    tgz = tmp_path / "a.tgz"
    tgz.write_bytes(b"\x1f\x8b" + b"rest")
    spec = streams.stream_in_spec("/app", tgz, user="vcap")
    assert isinstance(spec, ProcessSpec) and spec.args[-2:] == ("/app", "-zo") and spec.stdin_path == str(tgz)
    assert spec.process_id is not None and spec.process_id.startswith(streams.HELPER_PREFIX)
    with pytest.raises(InvalidSpec):
        streams.stream_in_spec("app", tgz, "root")
    with pytest.raises(StreamFailed):
        streams.check_stream_in(ExitStatus(code=1), b"tar: invalid magic", "/app")

    assert streams.stream_out_result(OK, b"abc", b"", "/f", limit=3) == b"abc"
    with pytest.raises(FileTooLarge):
        streams.stream_out_result(OK, b"abcd", b"", "/f", limit=3)  # grew while being read
    with pytest.raises(FileTooLarge):
        streams.stream_out_result(ExitStatus(code=streams.TOO_LARGE), b"", b"99", "/f", limit=3)
    for code in (streams.MISSING, streams.NOT_REGULAR):
        with pytest.raises(FileMissing):
            streams.stream_out_result(ExitStatus(code=code), b"", b"", "/f", limit=3)
    with pytest.raises(StreamFailed):
        streams.stream_out_result(ExitStatus(code=137, signal=9), b"", b"", "/f", limit=3)
