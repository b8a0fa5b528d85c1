"""Bad input through the HTTP API of a real BBS over real etcd: every refusal is a 4xx with a
typed body `{"type", "message"}`, and nothing at all is written to etcd (the whole key range
under the test's prefix is unchanged, revisions included)."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from control.kit.etcd import Etcd
from tests.component.conftest import RunningBBS, running_bbs
from tests.factories import desired_lrp, start_body, task_request
from tests.servers import EtcdServer

LRP, TASK = "existing-lrp", "existing-task"


def _lrp(**overrides: Any) -> dict[str, Any]:
    return desired_lrp(**{"process_guid": "new-lrp", **overrides})


def _task(**definition: Any) -> dict[str, Any]:
    return task_request(task_guid="new-task", task_definition=definition)


def _nested_action(depth: int) -> str:
    text = '{"run": {"path": "/x", "user": "u"}}'
    for _ in range(depth):
        text = '{"try": {"action": ' + text + '}}'
    return text


@dataclass(frozen=True)
class Bad:
    id: str
    method: str
    path: str
    body: Any = None
    raw: bytes | None = None
    status: int = 422
    type: str = "InvalidRequest"
    names: str = ""  # text the error message must mention (the offending field)


CASES: dict[str, list[Bad]] = {
    "malformed-json": [
        Bad("truncated-lrp", "POST", "/v1/desired_lrps", raw=b'{"process_guid": ', status=400, type="InvalidJSON"),
        Bad("truncated-task", "POST", "/v1/tasks", raw=b"{", status=400, type="InvalidJSON"),
        Bad("truncated-update", "PATCH", f"/v1/desired_lrps/{LRP}", raw=b'{"instances": }', status=400, type="InvalidJSON"),
        Bad("form-encoded-domain", "PUT", "/v1/domains/d", raw=b"ttl=5", status=400, type="InvalidJSON"),
        Bad("text-claim", "POST", f"/v1/actual_lrps/{LRP}/1/claim", raw=b"claim it please", status=400, type="InvalidJSON"),
        Bad("not-utf8-start", "POST", f"/v1/tasks/{TASK}/start", raw=b'{"cell_id": "\xff\xfe"}', status=400, type="InvalidJSON"),
        Bad("lone-surrogate", "POST", "/v1/desired_lrps",
            raw=json.dumps(_lrp(routes={"x": "S"})).replace('"S"', '"\\ud800"').encode(), status=400, type="InvalidJSON"),
        Bad("json-bomb-depth", "POST", "/v1/desired_lrps", raw=b"[" * 50_000 + b"]" * 50_000),
        Bad("deep-action", "POST", "/v1/desired_lrps",
            raw=json.dumps(_lrp(action="A")).replace('"A"', _nested_action(200)).encode()),
        Bad("deep-routes", "PATCH", f"/v1/desired_lrps/{LRP}", raw=b'{"routes": {"x": ' + b"[" * 300 + b"]" * 300 + b"}}"),
        Bad("array-not-object", "POST", "/v1/desired_lrps", body=[_lrp()]),
        Bad("null-body", "POST", "/v1/tasks", raw=b"null"),
        Bad("empty-body", "POST", "/v1/desired_lrps", raw=b""),
    ],
    "unknown-fields": [
        Bad("unknown-lrp-field", "POST", "/v1/desired_lrps", body=_lrp(bogus=1), names="bogus"),
        Bad("unknown-action-field", "POST", "/v1/desired_lrps",
            body=_lrp(action={"run": {"path": "/x", "user": "u", "shell": True}}), names="shell"),
        Bad("unknown-action-kind", "POST", "/v1/desired_lrps", body=_lrp(action={"explode": {}})),
        Bad("two-action-kinds", "POST", "/v1/desired_lrps",
            body=_lrp(action={"run": {"path": "/x", "user": "u"}, "try": {"action": {"run": {"path": "/y", "user": "u"}}}})),
        Bad("unknown-task-definition-field", "POST", "/v1/tasks", body=_task(gpu=1), names="gpu"),
        Bad("client-sets-task-state", "POST", "/v1/tasks", body={**_task(), "state": "RUNNING"}, names="state"),
        Bad("update-of-a-restart-field", "PATCH", f"/v1/desired_lrps/{LRP}", body={"rootfs": "preloaded:x"}, names="rootfs"),
        Bad("unknown-claim-field", "POST", f"/v1/actual_lrps/{LRP}/1/claim",
            body={"instance_guid": "i", "cell_id": "c", "state": "RUNNING"}, names="state"),
        Bad("unknown-domain-field", "PUT", "/v1/domains/d", body={"ttl": 1, "forever": True}, names="forever"),
    ],
    "invalid-guids": [
        Bad("lrp-guid-space", "POST", "/v1/desired_lrps", body=_lrp(process_guid="has space"), names="process_guid"),
        Bad("lrp-guid-slash", "POST", "/v1/desired_lrps", body=_lrp(process_guid="a/b"), names="process_guid"),
        Bad("lrp-guid-empty", "POST", "/v1/desired_lrps", body=_lrp(process_guid=""), names="process_guid"),
        Bad("lrp-guid-unicode", "POST", "/v1/desired_lrps", body=_lrp(process_guid="ünï"), names="process_guid"),
        Bad("lrp-guid-too-long", "POST", "/v1/desired_lrps", body=_lrp(process_guid="g" * 256), names="process_guid"),
        Bad("task-guid-dot", "POST", "/v1/tasks", body={**_task(), "task_guid": "bad.guid"}, names="task_guid"),
        Bad("path-guid-get", "GET", "/v1/desired_lrps/bad%20guid"),
        Bad("path-guid-patch", "PATCH", "/v1/desired_lrps/bad!guid", body={"instances": 3}),
        Bad("path-guid-delete", "DELETE", "/v1/desired_lrps/bad%20guid"),
        Bad("path-guid-encoded-slash", "DELETE", "/v1/desired_lrps/bad%2Fguid", status=404, type="ResourceNotFound"),
        Bad("path-guid-claim", "POST", "/v1/actual_lrps/bad!guid/0/claim", body={"instance_guid": "i", "cell_id": "c"}),
        Bad("path-guid-retire", "POST", "/v1/actual_lrps/bad%20guid/0/retire"),
        Bad("path-guid-task-start", "POST", "/v1/tasks/bad!/start", body={"cell_id": "c"}),
        Bad("path-guid-task-delete", "DELETE", "/v1/tasks/bad%20guid"),
        Bad("path-guid-too-long", "GET", "/v1/tasks/" + "t" * 300),
        Bad("path-index-negative", "POST", f"/v1/actual_lrps/{LRP}/-1/claim", body={"instance_guid": "i", "cell_id": "c"}),
        Bad("path-index-word", "POST", f"/v1/actual_lrps/{LRP}/one/claim", body={"instance_guid": "i", "cell_id": "c"}),
        Bad("query-guid", "GET", "/v1/actual_lrps?process_guid=bad!guid"),
        Bad("query-index", "GET", "/v1/actual_lrps?index=-3"),
        Bad("domain-path-space", "PUT", "/v1/domains/a%20b", body={"ttl": 1}),
    ],
    "wrong-types": [
        Bad("instances-word", "POST", "/v1/desired_lrps", body=_lrp(instances="three"), names="instances"),
        Bad("memory-word", "POST", "/v1/desired_lrps", body=_lrp(memory_mb="lots"), names="memory_mb"),
        Bad("ports-string", "POST", "/v1/desired_lrps", body=_lrp(ports="8080"), names="ports"),
        Bad("action-string", "POST", "/v1/desired_lrps", body=_lrp(action="run /bin/sh")),
        Bad("env-dict", "POST", "/v1/desired_lrps", body=_lrp(env={"A": "1"}), names="env"),
        Bad("routes-list", "POST", "/v1/desired_lrps", body=_lrp(routes=[]), names="routes"),
        Bad("privileged-word", "POST", "/v1/desired_lrps", body=_lrp(privileged="perhaps"), names="privileged"),
        Bad("domain-null", "POST", "/v1/desired_lrps", body=_lrp(domain=None), names="domain"),
        Bad("task-definition-list", "POST", "/v1/tasks", body={**_task(), "task_definition": []}, names="task_definition"),
        Bad("ttl-words", "PUT", "/v1/domains/d", body={"ttl": "5 minutes"}, names="ttl"),
        Bad("ttl-float", "PUT", "/v1/domains/d", body={"ttl": 1.5}, names="ttl"),
        Bad("claim-cell-number", "POST", f"/v1/actual_lrps/{LRP}/1/claim", body={"instance_guid": "i", "cell_id": 42}, names="cell_id"),
        Bad("start-port-word", "POST", f"/v1/actual_lrps/{LRP}/1/start",
            body=start_body(ports=[{"container_port": "http", "host_port": 1}]), names="container_port"),
        Bad("complete-failed-word", "POST", f"/v1/tasks/{TASK}/complete", body={"cell_id": "c", "failed": "maybe"}, names="failed"),
        Bad("update-instances-word", "PATCH", f"/v1/desired_lrps/{LRP}", body={"instances": "many"}, names="instances"),
    ],
    "bounds": [
        Bad("negative-instances", "POST", "/v1/desired_lrps", body=_lrp(instances=-1), names="instances"),
        Bad("too-many-instances", "POST", "/v1/desired_lrps", body=_lrp(instances=2**31), names="instances"),
        Bad("update-negative-instances", "PATCH", f"/v1/desired_lrps/{LRP}", body={"instances": -1}, names="instances"),
        Bad("update-too-many-instances", "PATCH", f"/v1/desired_lrps/{LRP}", body={"instances": 10**9}, names="instances"),
        Bad("negative-memory", "POST", "/v1/desired_lrps", body=_lrp(memory_mb=-1), names="memory_mb"),
        Bad("cpu-weight-over-100", "POST", "/v1/desired_lrps", body=_lrp(cpu_weight=101), names="cpu_weight"),
        Bad("port-zero", "POST", "/v1/desired_lrps", body=_lrp(ports=[0]), names="ports"),
        Bad("port-too-big", "POST", "/v1/desired_lrps", body=_lrp(ports=[70000]), names="ports"),
        Bad("duplicate-ports", "POST", "/v1/desired_lrps", body=_lrp(ports=[8080, 8080]), names="ports"),
        Bad("annotation-over-10k", "POST", "/v1/desired_lrps", body=_lrp(annotation="a" * (10 * 1024 + 1)), names="annotation"),
        Bad("routes-over-128k", "POST", "/v1/desired_lrps", body=_lrp(routes={"other": "r" * (128 * 1024)}), names="routes"),
        Bad("cf-route-port-zero", "POST", "/v1/desired_lrps",
            body=_lrp(routes={"cf-router": [{"hostnames": ["a.example.com"], "port": 0}]}), names="routes"),
        Bad("negative-ttl", "PUT", "/v1/domains/d", body={"ttl": -1}, names="ttl"),
        Bad("task-result-over-50k", "POST", f"/v1/tasks/{TASK}/complete", body={"cell_id": "c", "result": "r" * (50 * 1024 + 1)},
            names="result"),
    ],
    "invalid-values": [
        Bad("rootfs-empty", "POST", "/v1/desired_lrps", body=_lrp(rootfs=""), names="rootfs"),
        Bad("rootfs-ftp", "POST", "/v1/desired_lrps", body=_lrp(rootfs="ftp://example.com/img"), names="rootfs"),
        Bad("rootfs-no-stack", "POST", "/v1/desired_lrps", body=_lrp(rootfs="preloaded:"), names="rootfs"),
        Bad("rootfs-no-image", "POST", "/v1/desired_lrps", body=_lrp(rootfs="docker://"), names="rootfs"),
        Bad("rootfs-bare-name", "POST", "/v1/desired_lrps", body=_lrp(rootfs="busybox"), names="rootfs"),
        Bad("task-rootfs", "POST", "/v1/tasks", body=_task(rootfs="http://x"), names="rootfs"),
        Bad("callback-not-http", "POST", "/v1/tasks", body=_task(completion_callback_url="ftp://cc"), names="completion_callback_url"),
        Bad("username-without-password", "POST", "/v1/desired_lrps", body=_lrp(image_username="u")),
        Bad("egress-bad-destination", "POST", "/v1/desired_lrps",
            body=_lrp(egress_rules=[{"protocol": "tcp", "destinations": ["not-an-ip"]}]), names="egress_rules"),
        Bad("metric-tag-both", "POST", "/v1/desired_lrps",
            body=_lrp(metric_tags={"t": {"static": "a", "dynamic": "INDEX"}}), names="metric_tags"),
    ],
    "missing-fields": [
        Bad("lrp-without-action", "POST", "/v1/desired_lrps",
            body={k: v for k, v in _lrp().items() if k != "action"}, names="action"),
        Bad("lrp-without-domain", "POST", "/v1/desired_lrps",
            body={k: v for k, v in _lrp().items() if k != "domain"}, names="domain"),
        Bad("task-without-definition", "POST", "/v1/tasks", body={"task_guid": "t", "domain": "d"}, names="task_definition"),
        Bad("claim-without-cell", "POST", f"/v1/actual_lrps/{LRP}/1/claim", body={"instance_guid": "i"}, names="cell_id"),
        Bad("claim-empty-cell", "POST", f"/v1/actual_lrps/{LRP}/1/claim", body={"instance_guid": "i", "cell_id": ""}, names="cell_id"),
        Bad("start-without-address", "POST", f"/v1/actual_lrps/{LRP}/1/start",
            body={"instance_guid": "i", "cell_id": "c"}, names="address"),
        Bad("fail-empty-message", "POST", f"/v1/actual_lrps/{LRP}/1/fail", body={"error_message": ""}, names="error_message"),
        Bad("crash-without-body", "POST", f"/v1/actual_lrps/{LRP}/0/crash"),
        Bad("reject-without-message", "POST", f"/v1/tasks/{TASK}/reject", body={}, names="error_message"),
        Bad("complete-without-cell", "POST", f"/v1/tasks/{TASK}/complete", body={"result": "x"}, names="cell_id"),
        Bad("task-start-without-cell", "POST", f"/v1/tasks/{TASK}/start", body={}, names="cell_id"),
    ],
}


@pytest.fixture
async def seeded(bbs: RunningBBS, etcd: Etcd) -> AsyncIterator[httpx.AsyncClient]:
    """An LRP (index 0 claimed) and a pending task already stored, so bad updates and verbs on
    them have something to damage."""
    await bbs.client.desire_lrp(desired_lrp(process_guid=LRP, instances=2))
    await bbs.client.claim(LRP, 0, "ig-0", "cell-1")
    body = task_request(task_guid=TASK)
    await bbs.client.desire_task(TASK, body["domain"], body["task_definition"])
    async with httpx.AsyncClient(base_url=bbs.url, timeout=10) as client:
        yield client


async def _snapshot(etcd: Etcd, key_prefix: str) -> dict[bytes, tuple[int, bytes]]:
    kvs, _ = await etcd.range(key_prefix.encode() + b"/")
    return {kv.key: (kv.mod_revision, kv.value) for kv in kvs}


async def _check(case: Bad, bbs: RunningBBS, http: httpx.AsyncClient, etcd: Etcd, key_prefix: str) -> None:
    before = await _snapshot(etcd, key_prefix)
    auctions = len(bbs.auctioneer.lrp_batches), len(bbs.auctioneer.task_batches)
    if case.raw is not None:
        resp = await http.request(case.method, case.path, content=case.raw,
                                  headers={"content-type": "application/json"})
    elif case.body is not None:
        resp = await http.request(case.method, case.path, json=case.body)
    else:
        resp = await http.request(case.method, case.path)

    assert resp.status_code == case.status, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["type"] == case.type, body
    assert isinstance(body["message"], str) and body["message"]
    if case.names:
        assert case.names in body["message"], body["message"][:500]
    assert len(resp.content) < 20_000  # the error does not echo a huge input back
    assert await _snapshot(etcd, key_prefix) == before, "etcd changed"
    assert (len(bbs.auctioneer.lrp_batches), len(bbs.auctioneer.task_batches)) == auctions, "auction requested"
    assert bbs.reps.stops == [] and bbs.reps.cancels == [], "a rep was called"


@pytest.mark.parametrize("category", list(CASES))
async def test_bad_input_is_a_typed_4xx_and_writes_nothing(category: str, bbs: RunningBBS, seeded: httpx.AsyncClient,
                                                           etcd: Etcd, key_prefix: str) -> None:
    """One BBS per category (starting one per case would triple the suite's time); every case
    is checked and all failures are reported together, by case id."""
    failures = []
    for case in CASES[category]:
        try:
            await _check(case, bbs, seeded, etcd, key_prefix)
        except AssertionError as exc:
            failures.append(f"{case.id}: {str(exc)[:400]}")
    assert not failures, "\n".join(failures)


def test_case_ids_are_unique() -> None:
    ids = [case.id for cases in CASES.values() for case in cases]
    assert len(ids) == len(set(ids)) and len(ids) >= 90


async def test_every_problem_is_reported_at_once(bbs: RunningBBS) -> None:
    async with httpx.AsyncClient(base_url=bbs.url) as http:
        resp = await http.post("/v1/desired_lrps", json=_lrp(process_guid="bad guid", instances=-1, rootfs="nope",
                                                             memory_mb=-5, surprise=True))
    assert resp.status_code == 422
    fields = {e["field"] for e in resp.json()["errors"]}
    assert {"process_guid", "instances", "rootfs", "memory_mb", "surprise"} <= fields


async def test_nesting_up_to_the_limit_is_accepted_and_reads_back(bbs: RunningBBS) -> None:
    """The depth limit is generous for real actions: 29 nested actions fit (~60 JSON levels),
    and the stored LRP can be read back and listed."""
    raw = json.dumps(_lrp(action="A", process_guid="deep-but-fine")).replace('"A"', _nested_action(29)).encode()
    async with httpx.AsyncClient(base_url=bbs.url) as http:
        resp = await http.post("/v1/desired_lrps", content=raw)
        assert resp.status_code == 201, resp.text[:300]
        assert (await http.get("/v1/desired_lrps/deep-but-fine")).status_code == 200
        assert [d["process_guid"] for d in (await http.get("/v1/desired_lrps")).json()] == ["deep-but-fine"]


async def test_a_surrogate_pair_is_valid_unicode_and_accepted(bbs: RunningBBS) -> None:
    raw = json.dumps(_lrp(annotation="S", process_guid="emoji")).replace('"S"', '"\\ud83d\\ude00"').encode()
    async with httpx.AsyncClient(base_url=bbs.url) as http:
        resp = await http.post("/v1/desired_lrps", content=raw)
    assert resp.status_code == 201
    assert (await bbs.client.desired_lrp("emoji")).annotation == "\U0001F600"


async def test_oversized_bodies_are_413_by_length_and_when_streamed(etcd_server: EtcdServer, key_prefix: str,
                                                                    etcd: Etcd) -> None:
    async with running_bbs(etcd_server, key_prefix, max_request_bytes=4096) as bbs:
        before = await _snapshot(etcd, key_prefix)
        big = _lrp(annotation="a" * 5000)
        async with httpx.AsyncClient(base_url=bbs.url) as http:
            resp = await http.post("/v1/desired_lrps", json=big)
            assert resp.status_code == 413
            assert resp.json()["type"] == "RequestTooLarge" and "4096" in resp.json()["message"]

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
                data = json.dumps(big).encode()
                for i in range(0, len(data), 1000):
                    yield data[i:i + 1000]
            resp = await http.post("/v1/desired_lrps", content=chunks())
            assert resp.status_code == 413 and resp.json()["type"] == "RequestTooLarge"
            assert await _snapshot(etcd, key_prefix) == before

            # just under the limit is fine
            resp = await http.post("/v1/desired_lrps", json=_lrp(annotation="a" * 3000))
            assert resp.status_code == 201
        assert bbs.auctioneer.lrp_indices("new-lrp") == [0]
