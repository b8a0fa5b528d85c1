"""A real OCI registry on loopback for tests, and tiny busybox images built with umoci.

    registry = RegistryServer(tmp_path / "registry").start()      # docker-registry serve, free port
    uri = registry.push_busybox_image("test/bb", "v1", env=("GREETING=hi",),
                                      files={"/etc/image-marker": "marker\\n"})
    # uri == "docker://127.0.0.1:<port>/test/bb#v1"
    registry.blob_requests("test/bb")  # GET .../blobs/<digest> answered so far, from the access log
    registry.stop()

Images are the busybox stack (agents.garden.stacks) as one layer, then one layer per `files`
mapping and one per `remove` path (a whiteout), with the given config; `build_busybox_layout`
makes the same as a local OCI layout (for `oci:` rootfs URIs) without a registry, and
`add_platform_index` tags a multi-platform index over images of a layout. Needs Debian's
docker-registry, skopeo and umoci (scripts/setup.sh installs them). With `users` the registry
asks for HTTP Basic auth (htpasswd, bcrypt).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx
import yaml

from agents.garden.stacks import build_busybox_stack
from tests.servers import free_port


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout


def build_busybox_layout(layout: Path, tag: str = "latest", *, stack: Path, env: Sequence[str] = (),
                         files: Mapping[str, str | bytes] | None = None, remove: Sequence[str] = (),
                         cmd: Sequence[str] = (), workdir: str = "", user: str = "") -> Path:
    """Create (or add `tag` to) the OCI layout at `layout`: busybox + files + whiteouts + config."""
    image = f"{layout}:{tag}"
    if not (layout / "index.json").exists():
        _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", image)
    _run("umoci", "insert", "--no-history", "--image", image, str(stack), "/")
    with tempfile.TemporaryDirectory() as staging:
        for path, content in (files or {}).items():
            target = Path(staging) / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else content)
        if files:
            _run("umoci", "insert", "--no-history", "--image", image, staging, "/")
    for path in remove:
        _run("umoci", "insert", "--no-history", "--image", image, "--whiteout", path)
    config = [f"--config.env={e}" for e in env] + [f"--config.cmd={c}" for c in cmd]
    config += [f"--config.workingdir={workdir}"] * bool(workdir) + [f"--config.user={user}"] * bool(user)
    if config:
        _run("umoci", "config", "--no-history", "--image", image, *config)
    _run("umoci", "gc", "--layout", str(layout))
    return layout


def add_platform_index(layout: Path, tag: str, platforms: Mapping[str, str]) -> Path:
    """Tag an OCI image index in `layout` whose linux/<arch> entries are existing tags: {"amd64": "v1-amd"}."""
    index = json.loads((layout / "index.json").read_text())
    by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    entries = [{**{k: v for k, v in by_tag[source].items() if k != "annotations"},
                "platform": {"os": "linux", "architecture": arch}} for arch, source in platforms.items()]
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": entries}).encode()
    digest = hashlib.sha256(body).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(body)
    index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": f"sha256:{digest}",
                               "size": len(body), "annotations": {"org.opencontainers.image.ref.name": tag}})
    (layout / "index.json").write_text(json.dumps(index))
    return layout


@dataclass
class RegistryServer:
    """`docker-registry serve` (distribution 2.8) on 127.0.0.1 with filesystem storage in `directory`."""

    directory: Path
    users: Mapping[str, str] = field(default_factory=dict)  # username -> password (Basic auth when set)
    port: int = 0
    proc: subprocess.Popen | None = None  # type: ignore[type-arg]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "registry.log"

    @property
    def storage(self) -> Path:
        return self.directory / "data"

    def start(self) -> RegistryServer:
        self.port = self.port or free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        config: dict[str, object] = {
            "version": 0.1, "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "pydiego-test"},
        }
        if self.users:
            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                                        for u, p in self.users.items()))
            config["auth"] = {"htpasswd": {"realm": "pydiego-test", "path": str(htpasswd)}}
        (self.directory / "config.yml").write_text(yaml.safe_dump(config))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([shutil.which("docker-registry") or "docker-registry", "serve",
                                          str(self.directory / "config.yml")], stdout=out, stderr=subprocess.STDOUT)
        self._wait_ready(10.0)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log.read_text()[-2000:]
                raise RuntimeError(f"docker-registry exited with {self.proc.returncode}:\n{log}")
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=1).status_code in (200, 401):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry not ready after {timeout}s:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def push_layout(self, layout: Path, tag: str, name: str) -> str:
        """skopeo copy oci:<layout>:<tag> to <name>:<tag> here; return the docker:// rootfs URI."""
        creds = [f"--dest-creds={u}:{p}" for u, p in list(self.users.items())[:1]]
        _run("skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false", *creds,
             f"oci:{layout}:{tag}", f"docker://{self.host}/{name}:{tag}")
        return f"docker://{self.host}/{name}#{tag}"

    def push_busybox_image(self, name: str, tag: str = "latest", *, env: Sequence[str] = (),
                           files: Mapping[str, str | bytes] | None = None, remove: Sequence[str] = (),
                           cmd: Sequence[str] = (), workdir: str = "", user: str = "") -> str:
        """Build a busybox image (see build_busybox_layout) and push it; return its docker:// URI."""
        stack = build_busybox_stack(self.directory / "stack-busybox")
        with tempfile.TemporaryDirectory(dir=self.directory) as work:
            layout = build_busybox_layout(Path(work) / "layout", tag, stack=stack, env=env, files=files,
                                          remove=remove, cmd=cmd, workdir=workdir, user=user)
            return self.push_layout(layout, tag, name)

    def blob_requests(self, name: str) -> dict[str, int]:
        """How many times each blob of repository `name` was served (GET, 200), from the access log."""
        pattern = re.compile(rf'"GET /v2/{re.escape(name)}/blobs/(sha256:[0-9a-f]{{64}}) HTTP/[0-9.]+" 200 ')
        counts: dict[str, int] = {}
        for match in pattern.finditer(self.log.read_text()):
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
        return counts

    def blob_file(self, digest: str) -> Path:
        """Where the registry stores a blob (to corrupt it in tests)."""
        hexdigest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def manifest(self, name: str, tag: str) -> dict[str, object]:
        return dict(json.loads(self._manifest_body(name, tag)))

    def manifest_digest(self, name: str, tag: str) -> str:
        return f"sha256:{hashlib.sha256(self._manifest_body(name, tag)).hexdigest()}"

    def _manifest_body(self, name: str, tag: str) -> bytes:
        auth = tuple(next(iter(self.users.items()))) if self.users else None
        response = httpx.get(f"http://{self.host}/v2/{name}/manifests/{tag}", auth=auth, timeout=5,  # type: ignore[arg-type]
                             headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        response.raise_for_status()
        return response.content
