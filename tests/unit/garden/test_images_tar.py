"""Applying layer tarballs: contents and metadata, path-traversal refusals, whiteouts, verification."""
from __future__ import annotations

import io
import os
import stat
import threading
from pathlib import Path

import pytest

from agents.garden.images.blobs import apply_blob
from agents.garden.images.errors import ImageProblem, UnsafeLayer
from agents.garden.images.tarlayer import apply_layer, member_parts

from .layers import chardev, digest, directory, file, gzipped, hardlink, symlink, tar_bytes


def apply(root: Path, *entries, **kwargs) -> int:  # type: ignore[no-untyped-def]
    return apply_layer(root, io.BytesIO(tar_bytes(*entries)), **kwargs)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


def test_files_dirs_links_and_metadata(root: Path) -> None:
    count = apply(root, directory("./"), directory("./etc/"), file("./etc/motd", "hello\n", mode=0o640, uid=7, gid=8),
                  file("bin/tool", b"\x7fELF", mode=0o4755), symlink("bin/alias", "tool"),
                  hardlink("bin/same", "./bin/tool"), directory("etc/conf.d", mode=0o700))
    assert count == 7
    assert (root / "etc/motd").read_text() == "hello\n"
    st = os.lstat(root / "etc/motd")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == (0o640, 7, 8, 1_700_000_000)
    assert stat.S_IMODE(os.stat(root / "bin/tool").st_mode) == 0o4755  # setuid survives the chown
    assert os.readlink(root / "bin/alias") == "tool"
    assert os.stat(root / "bin/same").st_ino == os.stat(root / "bin/tool").st_ino
    assert stat.S_IMODE(os.stat(root / "etc/conf.d").st_mode) == 0o700
    assert int(os.stat(root / "etc").st_mtime) == 1_700_000_000  # set after its children were written


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape", "a/../../escape", "./a/../b"])
def test_absolute_and_dotdot_names_are_refused(root: Path, name: str) -> None:
    with pytest.raises(UnsafeLayer):
        apply(root, file(name, "x"))
    assert not (root.parent / "escape").exists()


def test_member_parts_normalizes_dots_and_slashes() -> None:
    assert member_parts("./usr//bin/./sh") == ["usr", "bin", "sh"]
    assert member_parts("./") == []


def test_symlink_climbing_out_of_the_root_is_refused(root: Path) -> None:
    apply(root, symlink("evil", "../../.."))
    with pytest.raises(UnsafeLayer, match="climbs out"):
        apply(root, file("evil/planted", "x"))
    assert not (root.parent.parent.parent / "planted").exists()


def test_absolute_symlinks_resolve_inside_the_root(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    apply(root, directory("etc"), symlink("abs", str(outside)), symlink("etclink", "/etc"))
    apply(root, file("etclink/passwd", "inside"), file("abs/planted", "x"))
    assert (root / "etc/passwd").read_text() == "inside"
    assert (root / str(outside).lstrip("/") / "planted").read_text() == "x"  # created inside the root
    assert list(outside.iterdir()) == []


def test_an_existing_symlink_is_replaced_not_written_through(root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("original")
    apply(root, symlink("f", str(victim)))
    apply(root, file("f", "new", mode=0o600))
    assert victim.read_text() == "original" and stat.S_IMODE(victim.stat().st_mode) != 0o600
    assert not (root / "f").is_symlink() and (root / "f").read_text() == "new"


def test_hard_links_must_stay_inside_and_point_at_files(root: Path) -> None:
    with pytest.raises(UnsafeLayer):
        apply(root, hardlink("h", "../../etc/passwd"))
    with pytest.raises(UnsafeLayer):
        apply(root, hardlink("h", "/etc/passwd"))
    with pytest.raises(ImageProblem, match="not a file"):
        apply(root, directory("d"), hardlink("h", "d"))
    with pytest.raises(ImageProblem):
        apply(root, hardlink("h2", "missing"))


def test_whiteouts_and_opaque_directories(root: Path) -> None:
    apply(root, directory("a"), file("a/1", "1"), directory("a/sub"), file("a/sub/x", "x"), file("b", "b"),
          file("keep", "k"))
    apply(root, file(".wh.b", ""), file("a/3", "3"), file("a/.wh..wh..opq", ""), file("a/sub/y", "y"),
          file(".wh.never-existed", ""))
    assert sorted(p.name for p in root.iterdir()) == ["a", "keep"]
    assert sorted(str(p.relative_to(root)) for p in (root / "a").rglob("*")) == ["a/3", "a/sub", "a/sub/y"]
    assert not any(p.name.startswith(".wh.") for p in root.rglob("*"))


def test_a_whiteout_spares_what_the_same_layer_wrote(root: Path) -> None:
    apply(root, file("f", "mine"), file(".wh.f", ""))
    assert (root / "f").read_text() == "mine"


def test_a_layer_replaces_dirs_by_files_and_back(root: Path) -> None:
    apply(root, directory("x"), file("x/inner", "i"), file("y", "file"))
    apply(root, file("x", "now a file"), directory("y"), file("y/z", "z"))
    assert (root / "x").read_text() == "now a file"
    assert (root / "y/z").read_text() == "z"


def test_device_nodes_are_skipped(root: Path) -> None:
    apply(root, directory("dev"), chardev("dev/null"), file("dev/.keep", ""))
    assert sorted(p.name for p in (root / "dev").iterdir()) == [".keep"]


def test_extract_at_a_path_inside_the_root(root: Path) -> None:
    apply(root, file("app/run.sh", "#!/bin/sh\n", mode=0o755), at="/home/vcap")
    assert (root / "home/vcap/app/run.sh").read_text() == "#!/bin/sh\n"
    with pytest.raises(UnsafeLayer):
        apply(root, file("x", ""), at="/home/../../out")


def test_a_set_stop_event_ends_extraction(root: Path) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(ImageProblem, match="stopped"):
        apply(root, file("a", "a"), stop=stop)
    assert not (root / "a").exists()


def test_garbage_is_not_a_tar(root: Path) -> None:
    with pytest.raises(ImageProblem, match="not a valid tar"):
        apply_layer(root, io.BytesIO(b"this is not a tar archive" * 40))


def test_apply_blob_verifies_digest_and_diff_id(root: Path, tmp_path: Path) -> None:
    tar = tar_bytes(file("hello", "world"))
    blob = tmp_path / "layer.tgz"
    blob.write_bytes(gzipped(tar))
    apply_blob(root, blob, digest=digest(blob.read_bytes()), diff_id=digest(tar))
    assert (root / "hello").read_text() == "world"
    with pytest.raises(ImageProblem, match="has digest sha256:.*expected sha256:0000"):
        apply_blob(root, blob, digest="sha256:" + "0" * 64)
    with pytest.raises(ImageProblem, match="unpacks to .* but the image config says"):
        apply_blob(root, blob, diff_id="sha256:" + "1" * 64)
    plain = tmp_path / "layer.tar"
    plain.write_bytes(tar)
    apply_blob(root, plain, digest=digest(tar), diff_id=digest(tar))  # uncompressed layers too


def test_apply_blob_refuses_corrupt_gzip_and_zstd(root: Path, tmp_path: Path) -> None:
    blob = tmp_path / "bad.tgz"
    data = bytearray(gzipped(tar_bytes(file("a", "x" * 10000))))
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ImageProblem, match="corrupt|not a valid tar"):
        apply_blob(root, blob)
    blob.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 100)
    with pytest.raises(ImageProblem, match="zstd"):
        apply_blob(root, blob)


def test_a_layer_ending_right_after_the_last_data_is_complete(root: Path) -> None:
    """umoci writes layers without padding and end-of-archive blocks; registries' clients accept them."""
    whole = tar_bytes(file("etc/a", "first"), file("etc/marker", "hi\n"))
    cut = whole[:512 * 3 + 3]  # headers and data of both files, then nothing
    assert apply_layer(root, io.BytesIO(cut)) == 2
    assert (root / "etc/marker").read_text() == "hi\n"
    with pytest.raises(ImageProblem):
        apply_layer(root, io.BytesIO(whole[:512 * 3 + 1]))  # data of the last file cut short
