"""Schemathesis against the BBS's own OpenAPI document, on a real BBS process over real etcd:
valid and invalid requests generated for every operation (SSE streams excluded) must never
get a 5xx. Bounded: a few dozen examples per operation, well under a minute and a half.

The BBS runs as a subprocess (`pydiego bbs --config FILE`, plain HTTP): Schemathesis' pytest
integration is synchronous and calls the API through `requests`, so the server must not live
on the test's event loop. The schema is the BBS app's own OpenAPI document, built in-process at
import (Schemathesis parametrizes at collection; its lazy `from_fixture` loader does not work
with pytest 9), and a test checks the running BBS serves exactly that document. Some
well-known guids are seeded so generated requests reach the lifecycle code, not only the 404
path.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from control.bbs.api.app import create_app
from control.bbs.api.deps import Services
from tests.factories import desired_lrp, task_request
from tests.servers import EtcdServer, free_port

MAX_EXAMPLES = int(os.environ.get("PYDIEGO_FUZZ_EXAMPLES", "25"))  # raise it for a deeper local hunt


class BBSProcess:
    def __init__(self, etcd_server: EtcdServer, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "bbs.log"
        self.config = directory / "bbs.yaml"
        self.config.write_text(yaml.safe_dump({
            "listen_address": f"127.0.0.1:{self.port}", "etcd_endpoints": [etcd_server.endpoint],
            "key_prefix": f"/fuzz-{uuid.uuid4().hex[:8]}/v1", "plain_http": True, "log_level": "warning",
            "coordination": {"backend": "etcd"}}))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "BBSProcess":
        pydiego = Path(sys.executable).with_name("pydiego")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([str(pydiego), "bbs", "--config", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, f"the BBS exited:\n{self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/v1/ping", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the BBS did not start:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def bbs_process(etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BBSProcess]:
    bbs = BBSProcess(etcd_server, tmp_path_factory.mktemp("fuzz-bbs")).start()
    with httpx.Client(base_url=bbs.url, timeout=10) as http:
        for guid in ("a", "lrp-1", "0"):
            assert http.post("/v1/desired_lrps", json=desired_lrp(process_guid=guid, instances=2)).status_code == 201
        assert http.post("/v1/actual_lrps/a/0/claim", json={"instance_guid": "i", "cell_id": "c"}).status_code == 204
        for guid in ("a", "task-1", "0"):
            assert http.post("/v1/tasks", json=task_request(task_guid=guid)).status_code == 201
    yield bbs
    bbs.stop()
    assert bbs.proc is not None and bbs.proc.returncode == 0, bbs.log.read_text()[-3000:]


def _openapi() -> dict[str, object]:
    """The document the BBS serves at /openapi.json (routes only: no service is called)."""
    _, app = create_app(Services(lrps=None, tasks=None, domains=None, cells=None, hub=None, clock=None),  # type: ignore[arg-type]
                        max_request_bytes=4 * 1024 * 1024)
    return app.openapi()  # type: ignore[no-any-return]


OPENAPI = _openapi()
schema = schemathesis.openapi.from_dict(OPENAPI, config=schemathesis.Config.from_dict({
    "generation": {"max-examples": MAX_EXAMPLES, "mode": "all", "database": "none"},
    "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": False}},
})).exclude(path_regex=r"^/v1/events")  # endless SSE streams


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=MAX_EXAMPLES)
def test_no_request_gets_a_server_error(case: schemathesis.Case, bbs_process: BBSProcess) -> None:
    response = case.call(base_url=bbs_process.url, timeout=10)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:  # every refusal is typed
        body = response.json()
        assert isinstance(body.get("type"), str) and isinstance(body.get("message"), str), response.text[:300]


def test_the_fuzzed_schema_is_the_one_the_bbs_serves_and_covers_every_pinned_route(bbs_process: BBSProcess) -> None:
    doc = httpx.get(f"{bbs_process.url}/openapi.json", timeout=10).json()
    assert doc == OPENAPI
    routes = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert {
        ("GET", "/v1/ping"), ("PUT", "/v1/domains/{domain}"), ("GET", "/v1/domains"),
        ("POST", "/v1/desired_lrps"), ("GET", "/v1/desired_lrps"), ("GET", "/v1/desired_lrps/{process_guid}"),
        ("PATCH", "/v1/desired_lrps/{process_guid}"), ("DELETE", "/v1/desired_lrps/{process_guid}"),
        ("GET", "/v1/scheduling_infos"), ("GET", "/v1/actual_lrps"),
        ("POST", "/v1/actual_lrps/{process_guid}/{index}/claim"), ("POST", "/v1/tasks"), ("GET", "/v1/tasks"),
        ("GET", "/v1/tasks/{task_guid}"), ("POST", "/v1/tasks/{task_guid}/complete"),
        ("DELETE", "/v1/tasks/{task_guid}"), ("GET", "/v1/cells"), ("GET", "/v1/events"),
    } <= routes
    verbs = {p.rsplit("/", 1)[1] for _, p in routes if p.startswith("/v1/actual_lrps/{process_guid}/{index}/")}
    assert verbs == {"retire", "claim", "start", "crash", "fail", "remove", "evacuate_claimed", "evacuate_running",
                     "evacuate_stopped", "evacuate_crashed", "remove_evacuating"}


def test_the_fuzzer_reached_the_bbs_and_no_answer_was_a_5xx(bbs_process: BBSProcess) -> None:
    """Runs after the fuzzing above (file order): the BBS's own request counters show the
    generated requests arrived, were both accepted and refused, and none was a server error."""
    text = httpx.get(f"{bbs_process.url}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r'bbs_requests_total\{method="(\w+)",route="([^"]*)",status="(\d+)"\} ([0-9.e+]+)', line)
        if match:
            status = match.group(3)
            counts[status[0] + "xx"] = counts.get(status[0] + "xx", 0) + float(match.group(4))
    assert counts.get("5xx", 0) == 0, counts
    assert counts.get("2xx", 0) >= 50 and counts.get("4xx", 0) >= 200, counts
