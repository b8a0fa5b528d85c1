"""A docker:// image from a real registry on loopback runs as an LRP instance through the rep,
with the image's Env under the LRP's env (reference §1.7 layering)."""
from __future__ import annotations

from pathlib import Path

from tests.integration.garden.registry import RegistryServer

from .conftest import wait_for
from .helpers import http_get, httpd_lrp, lrp_work
from .test_rep_lrps import desire, running


def test_docker_image_from_the_loopback_registry_runs(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry = RegistryServer(tmp_path / "registry").start()
    try:
        rootfs = registry.push_busybox_image(
            "apps/web", "v1", env=["GREETING=from-image", "OVERRIDDEN=image"],
            files={"/www/index.html": "image-content\n"})
        rep = world.add_rep(insecure_registries=[registry.host]).start()
        script = "echo $GREETING $OVERRIDDEN $INSTANCE_INDEX > /www/env.txt; exec httpd -f -p 8080 -h /www"
        desire(world, httpd_lrp("img", rootfs=rootfs, setup=None,
                                env=[{"name": "OVERRIDDEN", "value": "lrp"}],
                                action={"run": {"path": "/bin/sh", "args": ["-c", script], "user": "root"}}))
        assert rep.post_work(lrps=[lrp_work("img", rootfs=rootfs)])["lrps"] == []
        row = wait_for(lambda: running(world, "img"), timeout=60, what="image instance RUNNING")
        port = row.ports[0].host_port
        assert "image-content" in http_get("127.0.0.1", port, "/index.html")
        assert "from-image lrp 0" in http_get("127.0.0.1", port, "/env.txt")
    finally:
        registry.stop()
