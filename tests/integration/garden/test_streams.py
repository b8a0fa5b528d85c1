"""Files in and out of containers: tar (plain, gzip) in, one file out, in a rootfs with no tools."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from agents.garden import ContainerSpec, InvalidSpec, RuncBackend
from agents.garden.errors import FileMissing, FileTooLarge, StreamFailed

from .helpers import sh


def make_tar(path: Path, files: dict[str, bytes], gzip: bool = False, symlinks: dict[str, str] | None = None,
             owner: int = 0) -> Path:
    with tarfile.open(path, "w:gz" if gzip else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), 0o644, owner, owner
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


@pytest.fixture(scope="module")
def bare_stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rootfs with no binary at all: only users and empty directories."""
    root = tmp_path_factory.mktemp("bare") / "rootfs"
    for d in ("etc", "tmp", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    (root / "etc" / "passwd").write_text("root:x:0:0::/:/nope\nvcap:x:2000:2000::/home/vcap:/nope\n")
    (root / "etc" / "group").write_text("root:x:0:\nvcap:x:2000:\n")
    return root


async def test_stream_in_and_out_without_tools_in_the_rootfs(backend: RuncBackend, bare_stack: Path,
                                                             tmp_path: Path) -> None:
    await backend.create(ContainerSpec(handle="bare", rootfs=str(bare_stack)))
    plain = make_tar(tmp_path / "app.tar", {"app/run.sh": b"echo hi\n", "app/data/blob": bytes(range(256)) * 40})
    await backend.stream_in("bare", "/home/vcap", plain)
    assert await backend.stream_out("bare", "/home/vcap/app/run.sh", limit=100) == b"echo hi\n"
    assert await backend.stream_out("bare", "/home/vcap/app/data/blob", limit=10240) == bytes(range(256)) * 40

    zipped = make_tar(tmp_path / "more.tgz", {"result.json": b'{"ok": true}'}, gzip=True)
    await backend.stream_in("bare", "/deep/new/dir", zipped)
    assert await backend.stream_out("bare", "/deep/new/dir/result.json", limit=12) == b'{"ok": true}'
    with pytest.raises(FileTooLarge):
        await backend.stream_out("bare", "/deep/new/dir/result.json", limit=11)
    assert await backend.stream_out("bare", "/home/vcap/app/data/blob", limit=10240) != b""
    with pytest.raises(FileTooLarge):
        await backend.stream_out("bare", "/home/vcap/app/data/blob", limit=0)
    with pytest.raises(FileMissing):
        await backend.stream_out("bare", "/no/such/file", limit=10)
    with pytest.raises(FileMissing):
        await backend.stream_out("bare", "/home/vcap/app", limit=10)  # a directory
    assert await backend.stream_out("bare", "/etc/passwd", limit=1000) == (bare_stack / "etc/passwd").read_bytes()

    with pytest.raises(StreamFailed):
        await backend.stream_in("bare", "/x", _junk(tmp_path))
    with pytest.raises(InvalidSpec):
        await backend.stream_in("bare", "relative/dir", plain)
    with pytest.raises(InvalidSpec):
        await backend.stream_in("bare", "/x", tmp_path / "missing.tar")
    assert backend.process_ids("bare") == {}  # helpers leave nothing behind


def _junk(tmp_path: Path) -> Path:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive at all" * 100)
    return junk


async def test_stream_in_resolves_paths_and_owners_inside_the_container(backend: RuncBackend, stack: Path,
                                                                         tmp_path: Path) -> None:
    host_id = backend.config.unprivileged_host_id
    info = await backend.create(ContainerSpec(handle="owners", rootfs=str(stack)))
    rootfs = Path(info.bundle_path) / "rootfs"
    # A symlink in the container pointing at / must not lead to the host's root.
    status, _ = await sh(backend, "owners", "ln -s / /escape && mkdir -p /home/vcap && chown 2000:2000 /home/vcap")
    assert status.code == 0
    archive = make_tar(tmp_path / "a.tar", {"planted": b"x"}, owner=1234)
    await backend.stream_in("owners", "/escape/tmp/inside", archive)
    assert (rootfs / "tmp/inside/planted").read_bytes() == b"x"
    assert not Path("/tmp/inside").exists()
    # As root, archive owners are kept (through the uid mapping); as a user, files are the user's.
    assert (rootfs / "tmp/inside/planted").stat().st_uid == host_id + 1234
    await backend.stream_in("owners", "/home/vcap/app", archive, user="2000:2000")
    assert (rootfs / "home/vcap/app/planted").stat().st_uid == host_id + 2000
    assert (rootfs / "home/vcap/app").stat().st_uid == host_id + 2000
    with pytest.raises(StreamFailed):  # nobody may not write below /root
        await backend.stream_in("owners", "/root/forbidden", archive, user="nobody")
    # A file that is a symlink in the container is read as the container sees it.
    status, _ = await sh(backend, "owners", "echo inside > /tmp/target && ln -s /tmp/target /tmp/link")
    assert await backend.stream_out("owners", "/tmp/link", limit=100) == b"inside\n"
