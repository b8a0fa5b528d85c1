"""Per-container logs: raw output files → retained lines, bounded, followable, restart-safe."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agents.executor.logs import MAX_MESSAGE, RELEASE_EVERY, ContainerLog, split_lines
from control.kit.clock import FakeClock


def make(path: Path, retention: int = 100_000) -> ContainerLog:
    log = ContainerLog(path, retention, FakeClock())
    log.open()
    return log


def append(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_split_lines() -> None:
    assert split_lines(b"a\nb\npartial", final=False) == ([b"a", b"b"], 4)
    assert split_lines(b"a\nb\npartial", final=True) == ([b"a", b"b", b"partial"], 11)
    long = b"x" * (MAX_MESSAGE + 10)
    assert split_lines(long + b"\n", final=False) == ([b"x" * MAX_MESSAGE, b"x" * 10], MAX_MESSAGE + 11)
    assert split_lines(long, final=False) == ([b"x" * MAX_MESSAGE], MAX_MESSAGE)


def test_output_files_become_lines_with_source_and_stream(tmp_path: Path) -> None:
    log = make(tmp_path)
    out, err = log.new_output("APP")
    append(out, b"one\ntw")
    append(err, b"oops\n")
    log.system("Starting health monitoring of container")
    assert log.collect() == 2
    append(out, b"o\nthree")
    log.collect()
    log.finish_output(out, err)
    assert [(l.source, l.stream, l.line) for l in log.tail(10)] == [
        ("CELL", "stdout", "Starting health monitoring of container"), ("APP", "stdout", "one"),
        ("APP", "stderr", "oops"), ("APP", "stdout", "two"), ("APP", "stdout", "three")]
    assert not Path(out).exists() and not Path(err).exists()  # finished and fully read: dropped
    assert log.tail(2)[0].line == "two" and log.tail(0) == []


def test_retention_is_bounded_in_memory_and_on_disk(tmp_path: Path) -> None:
    log = make(tmp_path, retention=8192)
    out, _ = log.new_output("APP")
    for i in range(2000):
        append(out, f"line {i:05d}\n".encode())
        if i % 100 == 0:
            log.collect()
    log.collect()
    assert log.retained_bytes <= 8192
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("lines*.jsonl"))
    assert on_disk <= 8192
    assert log.tail(1)[0].line == "line 01999"


def test_consumed_output_is_released_while_the_writer_keeps_appending(tmp_path: Path) -> None:
    log = make(tmp_path, retention=4096)
    out, _ = log.new_output("APP")
    chunk = b"y" * 1023 + b"\n"
    for _ in range(4 * RELEASE_EVERY // 1024):
        append(out, chunk)
    log.collect()
    append(out, b"after release\n")
    log.collect()
    st = os.stat(out)
    assert st.st_size > 4 * RELEASE_EVERY and st.st_blocks * 512 < RELEASE_EVERY + 8192
    assert log.tail(1)[0].line == "after release"


def test_a_reopened_log_continues_without_losing_or_repeating_lines(tmp_path: Path) -> None:
    log = make(tmp_path)
    out, _ = log.new_output("APP")
    append(out, b"before\n")
    log.collect()
    append(out, b"while nobody watched\n")  # the executor is down; the app keeps writing
    again = make(tmp_path)
    again.collect()
    assert [l.line for l in again.tail(10)] == ["before", "while nobody watched"]


async def test_follow_yields_the_tail_then_new_lines_until_closed(tmp_path: Path) -> None:
    log = make(tmp_path)
    log.system("old 1")
    log.system("old 2")
    seen: list[str] = []

    async def follow() -> None:
        async for line in log.follow(tail=1):
            seen.append(line.line)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.01)
    log.system("new")
    await asyncio.sleep(0.01)
    log.close()
    await asyncio.wait_for(task, 1)
    assert seen == ["old 2", "new"]
