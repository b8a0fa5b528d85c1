"""Rootfs URIs: every accepted form, refusals naming the URI, and the store's cheap offers()."""
from __future__ import annotations

from pathlib import Path

import pytest

from agents.garden.images import ImageStore, RootfsNotOffered
from agents.garden.images.uri import DockerRootfs, LayeredRootfs, OciLayoutRootfs, PreloadedRootfs, parse_rootfs

HEX = "ab" * 32


@pytest.mark.parametrize(("uri", "expected"), [
    ("preloaded:busybox", PreloadedRootfs("busybox")),
    ("docker://127.0.0.1:5000/test/bb#v1", DockerRootfs("127.0.0.1:5000", "test/bb", "v1")),
    ("docker://registry.example.com/a/b/c", DockerRootfs("registry.example.com", "a/b/c", "latest")),
    ("docker:///busybox", DockerRootfs("registry-1.docker.io", "library/busybox", "latest")),
    ("docker:///cloudfoundry/grace#v2", DockerRootfs("registry-1.docker.io", "cloudfoundry/grace", "v2")),
    ("docker://localhost:5000/x:1.0", DockerRootfs("localhost:5000", "x", "1.0")),
    (f"docker://h:1/x#sha256:{HEX}", DockerRootfs("h:1", "x", f"sha256:{HEX}")),
    (f"docker://h:1/x@sha256:{HEX}", DockerRootfs("h:1", "x", f"sha256:{HEX}")),
    ("oci:/srv/layouts/bb:v1", OciLayoutRootfs(Path("/srv/layouts/bb"), "v1")),
    ("oci:/srv/layouts/bb", OciLayoutRootfs(Path("/srv/layouts/bb"), "")),
    (f"preloaded+layer:busybox?layer=https%3A%2F%2Fblobs%2Fd.tgz%3Fsig%3D1&layer_path=/home/vcap&layer_digest={HEX}",
     LayeredRootfs("busybox", "https://blobs/d.tgz?sig=1", "/home/vcap", f"sha256:{HEX}")),
    ("preloaded+layer:busybox?layer=file:///tmp/a.tar&layer_path=/app/",
     LayeredRootfs("busybox", "file:///tmp/a.tar", "/app", "")),
])
def test_accepted_forms(uri: str, expected: object) -> None:
    assert parse_rootfs(uri) == expected


@pytest.mark.parametrize(("uri", "reason"), [
    ("ftp://x/y", "unknown scheme"),
    ("/just/a/path", "unknown scheme"),
    ("preloaded:", "bad stack name"),
    ("preloaded:../etc", "bad stack name"),
    ("docker:x/y", "expected docker://"),
    ("docker://host/UPPER#v1", "bad repository"),
    ("docker://host/x#bad tag", "bad tag"),
    ("docker://host/x#sha256:123", "not a sha256 digest"),
    ("docker://ho st/x", "bad registry host"),
    ("oci:relative/path", "absolute"),
    ("preloaded+layer:busybox?layer_path=/a", "exactly one non-empty layer="),
    ("preloaded+layer:busybox?layer=ftp://x/y.tgz&layer_path=/a", "http, https or file"),
    ("preloaded+layer:busybox?layer=http://x/y.tgz&layer_path=rel", "layer_path must be an absolute"),
    ("preloaded+layer:busybox?layer=http://x/y.tgz&layer_path=/a&layer_digest=zz", "not a sha256 digest"),
    ("preloaded+layer:busybox?layer=http://x/y.tgz&layer_path=/a&other=1", "unknown parameters"),
])
def test_refused_forms_name_the_uri(uri: str, reason: str) -> None:
    with pytest.raises(RootfsNotOffered, match=reason) as caught:
        parse_rootfs(uri)
    assert repr(uri) in caught.value.message and caught.value.details["rootfs"] == uri


async def test_offers_and_providers_without_io(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "cache", {"busybox": "/nonexistent/stack", "cflinuxfs4": "/x"})
    try:
        assert store.offers("preloaded:busybox") and store.offers("preloaded+layer:busybox?layer=file:///a&layer_path=/")
        assert not store.offers("preloaded:debian")
        assert store.offers("docker://127.0.0.1:1/x#y") and store.offers("oci:/some/layout")
        assert not store.offers("docker://bad host/x") and not store.offers("nonsense")
        stacks = ["busybox", "cflinuxfs4"]
        assert store.providers() == [("preloaded", stacks), ("preloaded+layer", stacks), ("docker", []), ("oci", [])]
        assert not (tmp_path / "cache").exists()
        with pytest.raises(RootfsNotOffered, match="stack 'debian' is not offered by this cell"):
            await store.resolve("preloaded:debian")
    finally:
        await store.aclose()


def test_cache_dir_must_be_usable_as_a_rootfs_prefix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="colons"):
        ImageStore(tmp_path / "a:b", {})
