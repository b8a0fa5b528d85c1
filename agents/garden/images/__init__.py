"""images: root filesystems for a cell's containers, from rootfs URIs (issue #4).

    store = ImageStore(cache_dir, {"busybox": "/var/lib/pydiego/stacks/busybox"})
    image = await store.resolve("docker://127.0.0.1:5000/apps/web#v1")   # or preloaded:busybox, oci:/path:tag
    ContainerSpec(handle="web-0", rootfs=str(image.path), env=image.env, ...)
    await store.aclose()

See store.py for the behaviour and its limits, and the "Images" section of agents/garden/README.md.
"""
from .errors import ImageFetchFailed, RootfsNotOffered
from .store import ImageStore, ResolvedImage
from .tarlayer import apply_layer

__all__ = ["ImageFetchFailed", "ImageStore", "ResolvedImage", "RootfsNotOffered", "apply_layer"]
