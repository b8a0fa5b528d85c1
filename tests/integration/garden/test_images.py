"""Root filesystem images against a real registry on loopback, local OCI layouts and stacks.

Images are tiny busybox images built by the tests (umoci) and pushed with skopeo to
`docker-registry` on a free loopback port (tests/integration/garden/registry.py). The docker://
image is then run in a real container by the runc backend.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agents.garden import ContainerSpec, RuncBackend
from agents.garden.images import ImageFetchFailed, ImageStore, RootfsNotOffered
from agents.garden.images.manifest import host_architecture
from agents.garden.stacks import build_debian_stack
from tests.servers import free_port

from .helpers import assert_no_traces, sh
from .registry import RegistryServer, add_platform_index, build_busybox_layout

MARKER = "pulled from the loopback registry\n"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "registry").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def store(tmp_path: Path, stack: Path) -> AsyncIterator[ImageStore]:
    images = ImageStore(tmp_path / "cache", {"busybox": stack}, timeout=5)
    try:
        yield images
    finally:
        await images.aclose()


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0.05)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    assert not leaked, f"test leaked asyncio tasks: {leaked}"


def make_layer_tgz(path: Path, files: dict[str, str]) -> Path:
    """A gzipped tarball of `files` (relative path -> text), like a droplet or a DownloadAction tarball."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text.encode()), 0o755
            tar.addfile(info, io.BytesIO(text.encode()))
    return path


def cache_entries(cache: Path) -> dict[str, list[str]]:
    """What the cache holds besides refs: blobs, unpacked images, layered stacks, work in progress."""
    def names(sub: str) -> list[str]:
        return sorted(p.name for p in (cache / sub).iterdir()) if (cache / sub).is_dir() else []
    return {"blobs": names("blobs/sha256"), "images": names("images/sha256"), "layered": names("layered"),
            "tmp": names("tmp")}


async def test_a_docker_image_from_the_loopback_registry_runs(
        registry: RegistryServer, store: ImageStore, backend: RuncBackend) -> None:
    uri = registry.push_busybox_image("test/bb", "v1", env=("GREETING=hello", "PATH=/bin:/usr/bin"),
                                      files={"/etc/image-marker": MARKER}, cmd=("/bin/sh",), workdir="/tmp")
    image = await store.resolve(uri)
    assert (image.path / "etc/image-marker").read_text() == MARKER
    assert (image.env, image.working_dir, image.cmd) == (("GREETING=hello", "PATH=/bin:/usr/bin"), "/tmp", ("/bin/sh",))
    assert image.path.parent.name == registry.manifest_digest("test/bb", "v1").removeprefix("sha256:")

    await backend.create(ContainerSpec(handle="docker-img", rootfs=str(image.path), env=image.env))
    script = 'cat /etc/image-marker; echo "$GREETING"; echo new > /etc/image-marker'
    status, out = await sh(backend, "docker-img", script)
    assert (status.code, out.out) == (0, MARKER + "hello\n")
    assert (image.path / "etc/image-marker").read_text() == MARKER  # the shared image is never written
    await backend.destroy("docker-img")
    assert_no_traces(backend, "docker-img")


async def test_whiteouts_of_upper_layers_hide_lower_files(registry: RegistryServer, store: ImageStore) -> None:
    uri = registry.push_busybox_image("test/wh", "v1", files={"/etc/extra": "x"}, remove=("/etc/group", "/bin/vi"))
    image = await store.resolve(uri)
    assert (image.path / "etc/extra").read_text() == "x" and (image.path / "etc/passwd").is_file()
    assert not (image.path / "etc/group").exists() and not os.path.lexists(image.path / "bin/vi")
    assert not list(image.path.rglob(".wh.*"))


async def test_a_multi_platform_index_resolves_to_this_machine_s_image(
        registry: RegistryServer, store: ImageStore, stack: Path, tmp_path: Path) -> None:
    layout = tmp_path / "multi"
    for arch in ("amd64", "arm64"):
        build_busybox_layout(layout, f"only-{arch}", stack=stack, files={"/etc/arch": arch})
    add_platform_index(layout, "v1", {"arm64": "only-arm64", "amd64": "only-amd64"})
    uri = registry.push_layout(layout, "v1", "test/multi")
    image = await store.resolve(uri)
    assert (image.path / "etc/arch").read_text() == host_architecture()
    local = await store.resolve(f"oci:{layout}:v1")
    assert local.path == image.path  # same platform manifest digest: unpacked once


async def test_an_image_that_does_not_exist_fails_naming_it(registry: RegistryServer, store: ImageStore,
                                                            tmp_path: Path) -> None:
    uri = f"docker://{registry.host}/test/missing#v1"
    with pytest.raises(ImageFetchFailed) as caught:
        await store.resolve(uri)
    assert uri in caught.value.message and "manifest 'v1' not found" in caught.value.message
    assert "\n" not in caught.value.message and caught.value.details["rootfs"] == uri
    assert cache_entries(tmp_path / "cache") == {"blobs": [], "images": [], "layered": [], "tmp": []}


async def test_a_registry_that_is_down_fails_quickly(store: ImageStore, tmp_path: Path) -> None:
    uri = f"docker://127.0.0.1:{free_port()}/test/bb#v1"
    started = time.monotonic()
    with pytest.raises(ImageFetchFailed, match=r"unreachable") as caught:
        await store.resolve(uri)
    assert time.monotonic() - started < 1.0
    assert caught.value.message.startswith(f"cannot fetch rootfs {uri!r}: registry 127.0.0.1:")
    assert cache_entries(tmp_path / "cache")["images"] == []


async def test_a_corrupt_blob_is_refused_and_nothing_is_cached(registry: RegistryServer, store: ImageStore,
                                                               tmp_path: Path) -> None:
    uri = registry.push_busybox_image("test/corrupt", "v1", files={"/etc/image-marker": MARKER})
    layer = registry.manifest("test/corrupt", "v1")["layers"][-1]["digest"]  # type: ignore[index]
    data = bytearray(registry.blob_file(layer).read_bytes())
    data[-10] ^= 0xFF  # same size, other bytes: the registry serves it as it is
    registry.blob_file(layer).write_bytes(bytes(data))
    with pytest.raises(ImageFetchFailed, match=rf"blob {layer} from {registry.host} failed verification"):
        await store.resolve(uri)
    entries = cache_entries(tmp_path / "cache")
    assert layer.removeprefix("sha256:") not in entries["blobs"]
    assert (entries["images"], entries["tmp"]) == ([], [])


async def test_an_oci_layout_resolves(store: ImageStore, stack: Path, tmp_path: Path) -> None:
    layout = build_busybox_layout(tmp_path / "layout", "v2", stack=stack, env=("FROM=layout",),
                                  files={"/srv/hello.txt": "from a local layout\n"}, user="nobody")
    image = await store.resolve(f"oci:{layout}:v2")
    assert (image.path / "srv/hello.txt").read_text() == "from a local layout\n"
    assert (image.path / "bin/busybox").stat().st_size == stack.joinpath("bin/busybox").stat().st_size
    assert (image.env, image.user) == (("FROM=layout",), "nobody")
    assert await store.resolve(f"oci:{layout}") == image  # the only image of the layout
    with pytest.raises(ImageFetchFailed, match=r"tag 'v3' not in the layout \(it has: v2\)"):
        await store.resolve(f"oci:{layout}:v3")
    with pytest.raises(ImageFetchFailed, match="is not an OCI image layout"):
        await store.resolve(f"oci:{tmp_path}/nowhere")


async def test_preloaded_stacks_and_layers_on_top(registry: RegistryServer, store: ImageStore, stack: Path,
                                                  tmp_path: Path) -> None:
    assert (await store.resolve("preloaded:busybox")).path == stack
    tgz = make_layer_tgz(tmp_path / "droplet.tgz", {"app/start.sh": "#!/bin/sh\necho started\n"})
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    uri = f"preloaded+layer:busybox?layer=file://{tgz}&layer_path=/home/vcap&layer_digest={digest}"
    image = await store.resolve(uri)
    assert (image.path / "home/vcap/app/start.sh").read_text() == "#!/bin/sh\necho started\n"
    assert (image.path / "bin/busybox").is_file() and not (stack / "home/vcap").exists()
    assert (await store.resolve(uri)).path == image.path

    # Over http too: the registry's blob endpoint is a plain http URL of a tgz.
    blob_uri = registry.push_busybox_image("test/layer", "v1", files={"/etc/from-http": "yes"})
    layer = registry.manifest("test/layer", "v1")["layers"][-1]["digest"]  # type: ignore[index]
    url = f"http://{registry.host}/v2/test/layer/blobs/{layer}"
    over_http = await store.resolve(f"preloaded+layer:busybox?layer={url}&layer_path=/")
    assert (over_http.path / "etc/from-http").read_text() == "yes" and blob_uri

    bad = f"preloaded+layer:busybox?layer=file://{tgz}&layer_path=/home/vcap&layer_digest={'0' * 64}"
    with pytest.raises(ImageFetchFailed, match=f"has digest sha256:{digest}, expected sha256:0000"):
        await store.resolve(bad)
    assert len(cache_entries(tmp_path / "cache")["layered"]) == 2 and cache_entries(tmp_path / "cache")["tmp"] == []


async def test_rootfs_the_cell_does_not_offer(store: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(RootfsNotOffered, match="stack 'cflinuxfs4' is not offered by this cell"):
        await store.resolve("preloaded:cflinuxfs4")
    with pytest.raises(RootfsNotOffered, match="unknown scheme"):
        await store.resolve("ftp://host/image.tar")
    missing = ImageStore(tmp_path / "cache2", {"gone": tmp_path / "no-such-stack"})
    try:
        with pytest.raises(ImageFetchFailed, match="stack 'gone' is configured at .*, which is not a directory"):
            await missing.resolve("preloaded:gone")
    finally:
        await missing.aclose()


async def test_a_cached_image_resolves_with_the_registry_down(registry: RegistryServer, store: ImageStore) -> None:
    uri = registry.push_busybox_image("test/offline", "v1", files={"/etc/image-marker": MARKER})
    digest = registry.manifest_digest("test/offline", "v1")
    first = await store.resolve(uri)
    registry.stop()
    started = time.monotonic()
    again = await store.resolve(uri)
    by_digest = await store.resolve(f"docker://{registry.host}/test/offline#{digest}")
    assert again == first and by_digest.path == first.path
    assert time.monotonic() - started < 0.5
    assert (again.path / "etc/image-marker").read_text() == MARKER
    with pytest.raises(ImageFetchFailed, match="unreachable"):
        await store.resolve(f"docker://{registry.host}/test/offline#other-tag")


async def test_concurrent_resolves_download_once(registry: RegistryServer, store: ImageStore) -> None:
    uri = registry.push_busybox_image("test/twice", "v1", files={"/etc/image-marker": MARKER})
    layers = [d["digest"] for d in registry.manifest("test/twice", "v1")["layers"]]  # type: ignore[attr-defined]
    first, second = await asyncio.gather(store.resolve(uri), store.resolve(uri))
    assert first == second
    counts = registry.blob_requests("test/twice")
    assert {d: counts.get(d) for d in layers} == {d: 1 for d in layers}


async def test_a_cancelled_pull_leaves_nothing_half_made(registry: RegistryServer, stack: Path, tmp_path: Path) -> None:
    """Cancel resolves at ten points spread over a whole pull: each leaves only complete entries behind."""
    big = os.urandom(4 * 1024 * 1024)  # incompressible: download and unpack both take a while
    uri = registry.push_busybox_image("test/big", "v1", files={"/big.bin": big})

    async def resolve_into(cache: Path, cancel_after: float | None) -> bool:
        store = ImageStore(cache, {"busybox": stack}, timeout=5)
        try:
            task = asyncio.ensure_future(store.resolve(uri))
            if cancel_after is None:
                assert ((await task).path / "big.bin").read_bytes() == big
                return False
            await asyncio.sleep(cancel_after)
            task.cancel()
            try:
                image = await task
            except asyncio.CancelledError:
                entries = cache_entries(cache)
                assert entries["tmp"] == [], entries
                for name in entries["images"]:  # the cancel may land after the final rename: then it is whole
                    assert (cache / "images" / "sha256" / name / "rootfs" / "big.bin").read_bytes() == big
                return True
            assert (image.path / "big.bin").read_bytes() == big  # finished before the cancel landed
            return False
        finally:
            await store.aclose()

    started = time.monotonic()
    await resolve_into(tmp_path / "cache-whole", None)
    whole = time.monotonic() - started
    cancelled = [await resolve_into(tmp_path / f"cache-{i}", whole * i / 10) for i in range(10)]
    assert sum(cancelled) >= 5, (whole, cancelled)


async def test_registry_basic_auth(tmp_path: Path, store: ImageStore) -> None:
    registry = RegistryServer(tmp_path / "private", users={"alice": "secret"}).start()
    try:
        uri = registry.push_busybox_image("team/private", "v1", files={"/etc/image-marker": MARKER})
        with pytest.raises(ImageFetchFailed, match="requires credentials for team/private"):
            await store.resolve(uri)
        with pytest.raises(ImageFetchFailed, match="refused access to team/private as 'alice'"):
            await store.resolve(uri, "alice", "wrong")
        image = await store.resolve(uri, "alice", "secret")
        assert (image.path / "etc/image-marker").read_text() == MARKER
    finally:
        registry.stop()


@pytest.mark.skipif(not os.environ.get("PYDIEGO_DEBIAN_STACK"),
                    reason="debootstrap needs deb.debian.org and ~45 s: set PYDIEGO_DEBIAN_STACK=1")
async def test_debian_stack_runs(backend: RuncBackend, garden_root: Path) -> None:
    debian = await asyncio.to_thread(build_debian_stack, garden_root / "stack-debian")
    await backend.create(ContainerSpec(handle="debian", rootfs=str(debian)))
    status, out = await sh(backend, "debian", ". /etc/os-release; echo $VERSION_CODENAME")
    assert (status.code, out.out) == (0, "bookworm\n")
