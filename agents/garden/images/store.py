"""The per-cell image store: rootfs URI in, unpacked read-only rootfs directory out.

    store = ImageStore("/var/lib/pydiego/images", {"busybox": "/var/lib/pydiego/stacks/busybox"},
                       insecure_registries=["registry.internal:5000"])
    image = await store.resolve("docker://registry.internal:5000/app/web#v3")
    ContainerSpec(handle=..., rootfs=str(image.path), env=image.env, ...)

- `preloaded:<stack>` is the configured stack directory itself.
- `preloaded+layer:` is a copy of the stack with the layer extracted at layer_path, cached by
  (stack, stack path, layer URL, digest).
- `docker://` is pulled over the distribution API; `oci:` is read from a local image layout.
  Both are unpacked once per platform manifest digest; blobs are cached by digest and shared
  between images. A tag is looked up at every resolve; when the registry cannot be reached, the
  image the tag last resolved to is used if it is cached.

Concurrent resolves of one image pull it once (keyed locks on reference, blob and image). A
failed or cancelled resolve leaves nothing in the cache but complete entries (see cache.py).
Limits: images are never evicted; the unpacked trees must not be modified by anyone (the garden
backend only uses them as the read-only overlay lower layer or copies them).
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import structlog

from ..commands import run_cmd
from ..errors import CommandFailed
from .blobs import apply_blob
from .cache import CacheLayout, KeyedLocks, in_thread, is_complete, read_config, remove_tree, write_config
from .errors import ImageFetchFailed, ImageProblem, RegistryUnreachable, RootfsNotOffered
from .manifest import (
    MAX_DOCUMENT,
    OCI_INDEX,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    load_json,
    parse_config,
    parse_document,
    select_platform,
    select_tag,
)
from .registry import Credentials, RegistryClient
from .uri import DockerRootfs, LayeredRootfs, OciLayoutRootfs, PreloadedRootfs, parse_rootfs

log = structlog.get_logger("garden.images")

_BAD_PATH_CHARS = set(",:\n\t ")  # ContainerSpec.rootfs refuses these (overlayfs option syntax)


@dataclass(frozen=True)
class ResolvedImage:
    """An unpacked rootfs (shared between containers, never modified) and its image config."""

    path: Path
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()


class ImageStore:
    """Turns rootfs URIs into unpacked directories, caching layers and images in cache_dir."""

    def __init__(self, cache_dir: str | Path, stacks: Mapping[str, str | Path], *,
                 insecure_registries: Sequence[str] = (), timeout: float = 60.0,
                 max_concurrent_downloads: int = 5) -> None:
        root = Path(cache_dir).absolute()
        if _BAD_PATH_CHARS & set(str(root)):
            raise ValueError(f"image cache dir {root} must not contain commas, colons or whitespace")
        self._cache = CacheLayout(root)
        self._stacks = {name: Path(path).absolute() for name, path in stacks.items()}
        self._registry = RegistryClient(timeout=timeout, insecure_registries=insecure_registries)
        self._downloads = asyncio.Semaphore(max_concurrent_downloads)
        self._locks = KeyedLocks()
        self._swept = False

    def providers(self) -> list[tuple[str, list[str]]]:
        """rootfs providers for the cell presence (Diego's RootFSProviders)."""
        names = sorted(self._stacks)
        return [("preloaded", names), ("preloaded+layer", list(names)), ("docker", []), ("oci", [])]

    def offers(self, rootfs: str) -> bool:
        """Cheap check, no I/O: the scheme is known and, for preloaded*, the stack is configured."""
        try:
            ref = parse_rootfs(rootfs)
        except RootfsNotOffered:
            return False
        return not isinstance(ref, (PreloadedRootfs, LayeredRootfs)) or ref.stack in self._stacks

    async def resolve(self, rootfs: str, username: str = "", password: str = "") -> ResolvedImage:
        """The unpacked rootfs for a URI, fetching and unpacking it if it is not cached yet."""
        ref = parse_rootfs(rootfs)
        if isinstance(ref, (PreloadedRootfs, LayeredRootfs)) and ref.stack not in self._stacks:
            raise RootfsNotOffered(f"rootfs {rootfs!r}: stack {ref.stack!r} is not offered by this cell "
                                   f"(stacks: {', '.join(sorted(self._stacks)) or 'none'})", rootfs=rootfs)
        self._sweep_once()
        try:
            if isinstance(ref, PreloadedRootfs):
                return ResolvedImage(self._stack_dir(ref.stack))
            if isinstance(ref, LayeredRootfs):
                return await self._layered(ref)
            if isinstance(ref, DockerRootfs):
                return await self._docker(ref, Credentials(username, password))
            return await self._oci(ref)
        except (ImageProblem, OSError, httpx.HTTPError) as exc:
            raise ImageFetchFailed(f"cannot fetch rootfs {rootfs!r}: {exc}", rootfs=rootfs) from exc

    async def aclose(self) -> None:
        await self._registry.aclose()

    # -- preloaded and preloaded+layer ------------------------------------------------------

    def _stack_dir(self, name: str) -> Path:
        path = self._stacks[name]
        if not path.is_dir():
            raise ImageProblem(f"stack {name!r} is configured at {path}, which is not a directory")
        return path

    async def _layered(self, ref: LayeredRootfs) -> ResolvedImage:
        stack = self._stack_dir(ref.stack)
        final = self._cache.layered_image(f"{ref.stack}|{stack}|{ref.layer_url}|{ref.layer_digest}")
        async with self._locks.hold(f"layered:{final.name}"):
            if not is_complete(final):
                await self._build(final, lambda tmp: self._build_layered(tmp, stack, ref))
        return _resolved(final)

    async def _build_layered(self, tmp: Path, stack: Path, ref: LayeredRootfs) -> ImageConfig:
        layer = await self._fetch_layer(ref.layer_url, tmp)
        try:
            await run_cmd(["cp", "-a", "--reflink=auto", f"{stack}/.", str(tmp / "rootfs")], timeout=600)
        except CommandFailed as exc:
            raise ImageProblem(f"cannot copy stack {ref.stack}: {exc.message}") from None
        await in_thread(lambda stop: apply_blob(tmp / "rootfs", layer, digest=ref.layer_digest, at=ref.layer_path,
                                                stop=stop, name=ref.layer_url))
        return ImageConfig()

    async def _fetch_layer(self, url: str, tmp: Path) -> Path:
        parts = urlsplit(url)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ImageProblem(f"file URL {url} names another host")
            path = Path(unquote(parts.path))
            if not path.is_file():
                raise ImageProblem(f"layer {url} does not exist")
            return path
        await self._registry.fetch_url(url, tmp / "layer")
        return tmp / "layer"

    # -- docker:// --------------------------------------------------------------------------

    async def _docker(self, ref: DockerRootfs, creds: Credentials) -> ResolvedImage:
        async with self._locks.hold(f"ref:{ref}"):
            started = time.monotonic()
            digest, manifest = await self._platform_manifest(ref, creds)
            final = self._cache.image(digest)
            if manifest is not None and not is_complete(final):
                config = parse_config(_verified(await self._blob(ref, manifest.config, creds), manifest.config))
                paths = await self._blobs(ref, manifest.layers, creds)
                await self._unpack(final, list(zip(paths, manifest.layers, strict=True)), config)
                log.info("image-pulled", image=str(ref), digest=digest, seconds=round(time.monotonic() - started, 3))
        return _resolved(final)

    async def _platform_manifest(self, ref: DockerRootfs, creds: Credentials) -> tuple[str, Manifest | None]:
        """(manifest digest, manifest) for this platform; manifest None when the image is cached."""
        known = self._cache.read_ref(str(ref))
        if ref.is_digest:  # a digest never changes what it names: an index's choice, or the image itself
            for digest in (known, ref.reference):
                if digest and is_complete(self._cache.image(digest)):
                    return digest, None
        try:
            digest, manifest = await self._fetch_manifest(ref, creds)
        except RegistryUnreachable as exc:
            if known and is_complete(self._cache.image(known)):
                log.warning("using-cached-image-offline", image=str(ref), digest=known, error=str(exc))
                return known, None
            raise
        self._cache.write_ref(str(ref), digest)
        return digest, manifest

    async def _fetch_manifest(self, ref: DockerRootfs, creds: Credentials) -> tuple[str, Manifest | None]:
        body, media_type = await self._registry.manifest(ref, ref.reference, creds)
        doc, digest = parse_document(body, media_type), _sha256(body)
        if isinstance(doc, Index):
            digest = select_platform(doc).digest
            if is_complete(self._cache.image(digest)):
                return digest, None
            body, media_type = await self._registry.manifest(ref, digest, creds)
            doc = parse_document(body, media_type)
        if not isinstance(doc, Manifest):
            raise ImageProblem("an index points at another index")
        return digest, doc

    async def _blobs(self, ref: DockerRootfs, descriptors: Sequence[Descriptor], creds: Credentials) -> list[Path]:
        """Fetch blobs in parallel (bounded by max_concurrent_downloads); first failure wins."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._blob(ref, d, creds)) for d in descriptors]
        except ExceptionGroup as failures:
            raise _first(failures) from None
        return [task.result() for task in tasks]

    async def _blob(self, ref: DockerRootfs, descriptor: Descriptor, creds: Credentials) -> Path:
        path = self._cache.blob(descriptor.digest)
        async with self._locks.hold(f"blob:{descriptor.digest}"):
            if path.is_file():
                return path
            async with self._downloads:
                tmp = self._cache.new_tmp()
                try:
                    await self._registry.download(ref, descriptor.digest, descriptor.size, tmp / "blob", creds)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(tmp / "blob", path)
                finally:
                    await remove_tree(tmp)
        return path

    # -- oci: -------------------------------------------------------------------------------

    async def _oci(self, ref: OciLayoutRootfs) -> ResolvedImage:
        index_file = ref.path / "index.json"
        if not index_file.is_file():
            raise ImageProblem(f"{ref.path} is not an OCI image layout (no index.json)")
        index = parse_document(index_file.read_bytes(), OCI_INDEX)
        if not isinstance(index, Index):
            raise ImageProblem(f"{index_file} is not an image index")
        descriptor = select_tag(index, ref.tag)
        doc = parse_document(self._layout_document(ref.path, descriptor), descriptor.media_type)
        if isinstance(doc, Index):
            descriptor = select_platform(doc)
            doc = parse_document(self._layout_document(ref.path, descriptor), descriptor.media_type)
        if not isinstance(doc, Manifest):
            raise ImageProblem("an index points at another index")
        final = self._cache.image(descriptor.digest)
        if not is_complete(final):
            config = parse_config(self._layout_document(ref.path, doc.config))
            layers = [(_layout_blob(ref.path, d), d) for d in doc.layers]
            await self._unpack(final, layers, config)
        return _resolved(final)

    def _layout_document(self, layout: Path, descriptor: Descriptor) -> bytes:
        return _verified(_layout_blob(layout, descriptor), descriptor)

    # -- unpacking --------------------------------------------------------------------------

    async def _unpack(self, final: Path, layers: list[tuple[Path, Descriptor]], config: ImageConfig) -> None:
        """Apply the layers in order into a scratch dir, verify them, and move it to final."""
        if len(config.diff_ids) != len(layers):
            raise ImageProblem(f"the image config lists {len(config.diff_ids)} diff_ids for {len(layers)} layers")

        def apply_all(tmp: Path, stop: threading.Event) -> None:
            for (path, descriptor), diff_id in zip(layers, config.diff_ids, strict=True):
                apply_blob(tmp / "rootfs", path, digest=descriptor.digest, diff_id=diff_id, stop=stop)

        async def build(tmp: Path) -> ImageConfig:
            (tmp / "rootfs").mkdir(mode=0o755)
            await in_thread(lambda stop: apply_all(tmp, stop))
            return config

        async with self._locks.hold(f"image:{final.name}"):
            if not is_complete(final):
                await self._build(final, build)

    async def _build(self, final: Path, build: Callable[[Path], Awaitable[ImageConfig]]) -> None:
        """Run build(tmp) -> ImageConfig in a scratch dir, then publish it as final; remove tmp always."""
        tmp = self._cache.new_tmp()
        try:
            config = await build(tmp)
            write_config(tmp, config)
            os.chmod(tmp, 0o755)
            self._cache.publish(tmp, final)
        finally:
            await remove_tree(tmp)

    def _sweep_once(self) -> None:
        if not self._swept:
            self._swept = True
            for entry in self._cache.sweep():
                log.info("removed-stale-image-tmp", path=str(entry))


def _resolved(directory: Path) -> ResolvedImage:
    config = read_config(directory)
    return ResolvedImage(directory / "rootfs", config.env, config.working_dir, config.user,
                         config.entrypoint, config.cmd)


def _sha256(body: bytes) -> str:
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


def _verified(path: Path, descriptor: Descriptor) -> bytes:
    """A small blob (manifest, config) read from disk and checked against its descriptor."""
    body = path.read_bytes() if path.stat().st_size <= MAX_DOCUMENT else b""
    if not body or _sha256(body) != descriptor.digest:
        raise ImageProblem(f"blob {descriptor.digest} is missing, too large or corrupt")
    load_json(body, f"blob {descriptor.digest}")
    return body


def _layout_blob(layout: Path, descriptor: Descriptor) -> Path:
    path = layout / "blobs" / "sha256" / descriptor.digest.removeprefix("sha256:")
    if not path.is_file():
        raise ImageProblem(f"blob {descriptor.digest} is missing from the layout {layout}")
    return path


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
