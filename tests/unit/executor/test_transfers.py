"""Downloads on the host (file:// URLs here; HTTP in the integration tests): archive formats,
checksums, the cache, and the download step streaming the result into the container."""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.executor.config import ExecutorConfig
from agents.executor.executor import Executor
from agents.executor.models import ContainerState
from agents.executor.transfers import TransferFailed, Transfers, to_plain_tar, verify_checksum
from control.models.actions import DownloadAction

from .fakes import FakeBackend
from .helpers import request, reserve, run, settled


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100755 << 16
            zf.writestr(info, data)
    return path


def members(path: Path) -> dict[str, tuple[bytes, int]]:
    with tarfile.open(path) as tf:
        return {m.name: (tf.extractfile(m).read(), m.mode) for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]


FILES = {"bin/run": b"#!/bin/sh\necho hi\n", "README": b"readme"}


@pytest.mark.parametrize("kind", ["tar", "tgz", "zip"])
def test_archives_become_plain_tars(tmp_path: Path, kind: str) -> None:
    tar = make_tar(tmp_path / "a.tar", FILES)
    src = {"tar": tar, "zip": make_zip(tmp_path / "a.zip", FILES)}.get(kind)
    if kind == "tgz":
        src = tmp_path / "a.tgz"
        src.write_bytes(gzip.compress(tar.read_bytes()))
    out = tmp_path / "out.tar"
    to_plain_tar(src, out)  # type: ignore[arg-type]
    got = members(out)
    assert {name: data for name, (data, _) in got.items()} == FILES
    if kind == "zip":
        assert got["bin/run"][1] == 0o755


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"just text" * 100)
    with pytest.raises(TransferFailed, match="not a tar, tgz or zip"):
        to_plain_tar(tmp_path / "x", tmp_path / "y")


def test_checksums() -> None:
    digests = {"md5": "a", "sha1": "b", "sha256": "c"}
    verify_checksum(digests, None, None)
    verify_checksum(digests, "sha256", "C ")
    with pytest.raises(TransferFailed, match="checksum mismatch: sha1 expected x, got b"):
        verify_checksum(digests, "sha1", "x")


def action(url: str, **extra: object) -> DownloadAction:
    return DownloadAction.model_validate({"from": url, "to": "/app", "user": "vcap", **extra})


async def test_cache_is_keyed_reused_and_trimmed(tmp_path: Path) -> None:
    transfers = Transfers(ExecutorConfig(state_dir=str(tmp_path / "state"), download_cache_max_bytes=25_000))
    transfers.setup()
    src = make_tar(tmp_path / "a.tar", {"f": b"1" * 5000})
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    async with transfers.download(action(src.as_uri(), cache_key="k1", checksum_algorithm="sha256",
                                         checksum_value=sha)) as tar:
        first = tar
        assert members(tar)["f"][0] == b"1" * 5000
    assert first.exists()  # cached
    with pytest.raises(TransferFailed, match="checksum mismatch"):
        async with transfers.download(action(src.as_uri(), cache_key="k1", checksum_algorithm="sha256",
                                             checksum_value="0" * 64)):
            pass
    for key in ("k2", "k3"):
        async with transfers.download(action(src.as_uri(), cache_key=key)):
            pass
    entries = [p for p in transfers.cache_dir.iterdir() if p.name != "tmp"]
    assert len(entries) == 2 and not first.exists()  # the least recently used one went
    async with transfers.download(action(src.as_uri())) as tar:  # no cache key: a temporary file
        temporary = tar
    assert not temporary.exists() and list((transfers.cache_dir / "tmp").iterdir()) == []


async def test_download_step_streams_into_the_container(make_executor: Callable[..., Executor],
                                                       backend: FakeBackend, tmp_path: Path) -> None:
    executor = make_executor()
    src = make_zip(tmp_path / "app.zip", FILES)
    download = {"download": {"from": src.as_uri(), "to": "/home/vcap", "user": "vcap", "artifact": "droplet"}}
    await reserve(executor, "a", lifecycle="task")
    await executor.run_container("a", request({"serial": {"actions": [download, run("exit", "0")]}}))
    result = (await settled(executor, "a")).run_result
    assert result is not None and not result.failed, result
    assert backend.containers["a"].streamed_in == [("/home/vcap", ["README", "bin/run"], "vcap")]
    lines = [line.line async for line in executor.logs("a")]
    assert lines[:2] == ["Downloading droplet...", "Downloaded droplet (10.0K)"]

    await reserve(executor, "b", lifecycle="task")
    bad = {"download": {**download["download"], "checksum_algorithm": "md5", "checksum_value": "0" * 32}}
    await executor.run_container("b", request({"serial": {"actions": [bad, run("exit", "0")]}}))
    result = (await settled(executor, "b")).run_result
    assert result is not None and result.failed and "checksum mismatch: md5" in result.failure_reason
    assert executor.get("b").state == ContainerState.COMPLETED and backend.containers["b"].streamed_in == []
