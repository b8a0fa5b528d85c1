"""Validation of the wire models (reference §1): DesiredLRP, Task, actions, checks, routes and
DesiredLRPUpdate. Every rejection is asserted by the field it names, not by message text."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from control.models.actions import Action
from control.models.base import MAX_ANNOTATION_BYTES, MAX_ROUTES_BYTES
from control.models.checks import Check, CheckDefinition
from control.models.desired_lrp import DesiredLRP, DesiredLRPUpdate, RunInfo, SchedulingInfo
from control.models.task import MAX_RESULT_BYTES, CompleteTaskRequest, DesireTaskRequest, TaskDefinition
from tests.factories import desired_lrp, task_request

ACTION = TypeAdapter(Action)
RUN = {"run": {"path": "/bin/true", "user": "vcap"}}


def problems(exc: pytest.ExceptionInfo[ValidationError]) -> set[tuple[str, ...]]:
    """The locations (as string tuples) of every error in one ValidationError."""
    return {tuple(str(p) for p in err["loc"]) for err in exc.value.errors()}


def error_types(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {err["type"] for err in exc.value.errors()}


# ---- process and task guids ------------------------------------------------------------------

VALID_GUID = st.from_regex(r"\A[a-zA-Z0-9_-]{1,255}\Z")
INVALID_GUID = st.text(min_size=1, max_size=40).filter(lambda s: re.fullmatch(r"[a-zA-Z0-9_-]+", s) is None)


@given(VALID_GUID)
def test_any_guid_of_letters_digits_dash_and_underscore_is_accepted(guid: str) -> None:
    assert DesiredLRP.model_validate(desired_lrp(process_guid=guid)).process_guid == guid
    assert DesireTaskRequest.model_validate(task_request(task_guid=guid)).task_guid == guid


@given(INVALID_GUID)
def test_a_guid_with_any_other_character_is_rejected(guid: str) -> None:
    with pytest.raises(ValidationError) as lrp_exc:
        DesiredLRP.model_validate(desired_lrp(process_guid=guid))
    assert problems(lrp_exc) == {("process_guid",)}
    with pytest.raises(ValidationError) as task_exc:
        DesireTaskRequest.model_validate(task_request(task_guid=guid))
    assert problems(task_exc) == {("task_guid",)}


@pytest.mark.parametrize("guid", ["", "a b", "a/b", "a.b", "abc\n", "ünïcode", "x" * 256])
def test_guid_edge_cases_are_rejected(guid: str) -> None:
    with pytest.raises(ValidationError) as exc:
        DesiredLRP.model_validate(desired_lrp(process_guid=guid))
    assert problems(exc) == {("process_guid",)}


# ---- rootfs ------------------------------------------------------------------------------------

GOOD_ROOTFS = [
    "preloaded:cflinuxfs3",
    "preloaded+layer:cflinuxfs3?layer=https://blobs.example.com/layer.tgz&layer_digest=abc",
    "docker:///cloudfoundry/grace#latest",
    "docker://registry.example.com:5000/org/img#v1",
    "oci:/var/oci/layouts/app:tag",
]
BAD_ROOTFS = [
    "", "cflinuxfs3", "http://example.com/rootfs.tgz", "https://x/y", "file:///rootfs", "docker:img",
    "docker:", "docker://", "docker:///", "preloaded:", "preloaded+layer:", "preloaded:a/b", "oci:",
    "PRELOADED:cflinuxfs3", " preloaded:cflinuxfs3",
]


@pytest.mark.parametrize("rootfs", GOOD_ROOTFS)
def test_rootfs_schemes_that_are_accepted(rootfs: str) -> None:
    assert DesiredLRP.model_validate(desired_lrp(rootfs=rootfs)).rootfs == rootfs
    assert TaskDefinition.model_validate(task_request(task_definition={"rootfs": rootfs})["task_definition"]).rootfs == rootfs


@pytest.mark.parametrize("rootfs", BAD_ROOTFS)
def test_every_other_rootfs_is_rejected(rootfs: str) -> None:
    with pytest.raises(ValidationError) as lrp_exc:
        DesiredLRP.model_validate(desired_lrp(rootfs=rootfs))
    assert problems(lrp_exc) == {("rootfs",)}
    with pytest.raises(ValidationError) as task_exc:
        TaskDefinition.model_validate(task_request(task_definition={"rootfs": rootfs})["task_definition"])
    assert problems(task_exc) == {("rootfs",)}


# ---- size limits -------------------------------------------------------------------------------

def test_annotation_of_exactly_10_kib_is_accepted_and_one_byte_more_is_not() -> None:
    at_limit = "a" * MAX_ANNOTATION_BYTES
    assert MAX_ANNOTATION_BYTES == 10 * 1024
    assert DesiredLRP.model_validate(desired_lrp(annotation=at_limit)).annotation == at_limit
    assert DesiredLRPUpdate(annotation=at_limit).annotation == at_limit
    assert TaskDefinition.model_validate(
        task_request(task_definition={"annotation": at_limit})["task_definition"]).annotation == at_limit
    over = at_limit + "a"
    for build in (lambda: DesiredLRP.model_validate(desired_lrp(annotation=over)),
                  lambda: DesiredLRPUpdate(annotation=over),
                  lambda: TaskDefinition.model_validate(task_request(task_definition={"annotation": over})["task_definition"])):
        with pytest.raises(ValidationError) as exc:
            build()
        assert problems(exc) == {("annotation",)}


def test_annotation_limit_counts_utf8_bytes_not_characters() -> None:
    two_byte = "é" * (MAX_ANNOTATION_BYTES // 2 + 1)  # 5121 characters, 10242 bytes
    assert len(two_byte) < MAX_ANNOTATION_BYTES
    with pytest.raises(ValidationError) as exc:
        DesiredLRP.model_validate(desired_lrp(annotation=two_byte))
    assert problems(exc) == {("annotation",)}


def _routes_of_size(size: int) -> dict[str, Any]:
    """Routes whose compact JSON is exactly `size` bytes (an opaque key other routers own)."""
    envelope = len(json.dumps({"other-router": ""}, separators=(",", ":")))
    routes = {"other-router": "x" * (size - envelope)}
    assert len(json.dumps(routes, separators=(",", ":")).encode()) == size
    return routes


def test_routes_of_exactly_128_kib_are_accepted_and_one_byte_more_are_not() -> None:
    assert MAX_ROUTES_BYTES == 128 * 1024
    at_limit = _routes_of_size(MAX_ROUTES_BYTES)
    assert DesiredLRP.model_validate(desired_lrp(routes=at_limit)).routes == at_limit
    assert DesiredLRPUpdate(routes=at_limit).routes == at_limit
    over = _routes_of_size(MAX_ROUTES_BYTES + 1)
    with pytest.raises(ValidationError) as exc:
        DesiredLRP.model_validate(desired_lrp(routes=over))
    assert problems(exc) == {("routes",)}
    with pytest.raises(ValidationError) as update_exc:
        DesiredLRPUpdate(routes=over)
    assert problems(update_exc) == {("routes",)}


@pytest.mark.parametrize("routes", [
    {"cf-router": [{"hostnames": [], "port": 8080}]},                   # no hostname
    {"cf-router": [{"hostnames": ["a.example.com"], "port": 0}]},       # port out of range
    {"cf-router": [{"hostnames": ["a.example.com"], "port": 8080, "weight": 1}]},  # unknown field
    {"tcp-router": [{"external_port": 70000, "container_port": 8080}]},
    {"tcp-router": {"external_port": 61000, "container_port": 8080}},   # must be a list
    {"diego-ssh": {"private_key": "k"}},                                 # container_port required
])
def test_routes_our_routers_read_are_validated(routes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as exc:
        DesiredLRP.model_validate(desired_lrp(routes=routes))
    assert problems(exc) == {("routes",)}


def test_a_route_problem_names_the_router_key_it_is_under() -> None:
    routes = {"cf-router": [{"hostnames": ["a.example.com"], "port": 8080}],
              "tcp-router": [{"external_port": 61000, "container_port": 0}]}
    with pytest.raises(ValidationError) as exc:
        DesiredLRP.model_validate(desired_lrp(routes=routes))
    (error,) = exc.value.errors()
    assert error["loc"] == ("routes",)
    assert "tcp-router.0.container_port" in error["msg"]


def test_routes_under_other_keys_are_kept_untouched() -> None:
    routes = {"internal-router": [{"hostname": "app.apps.internal"}], "custom": {"anything": [1, None, "x"]},
              "cf-router": [{"hostnames": ["a.example.com"], "port": 8080}]}
    assert DesiredLRP.model_validate(desired_lrp(routes=routes)).routes == routes


# ---- image credentials -----------------------------------------------------------------------

@pytest.mark.parametrize(("username", "password", "ok"), [
    ("", "", True), ("user", "secret", True), ("user", "", False), ("", "secret", False),
])
def test_image_credentials_are_both_set_or_neither(username: str, password: str, ok: bool) -> None:
    lrp = desired_lrp(image_username=username, image_password=password, rootfs="docker:///org/img")
    task = task_request(task_definition={"image_username": username, "image_password": password})
    if ok:
        assert DesiredLRP.model_validate(lrp).image_username == username
        assert TaskDefinition.model_validate(task["task_definition"]).image_password == password
        return
    with pytest.raises(ValidationError) as lrp_exc:
        DesiredLRP.model_validate(lrp)
    assert error_types(lrp_exc) == {"value_error"} and problems(lrp_exc) == {()}
    with pytest.raises(ValidationError) as task_exc:
        TaskDefinition.model_validate(task["task_definition"])
    assert error_types(task_exc) == {"value_error"} and problems(task_exc) == {()}


@pytest.mark.parametrize(("fields", "ok"), [
    ({}, True),
    ({"image_username": "u", "image_password": "p"}, True),
    ({"image_username": "", "image_password": ""}, True),      # clearing both
    ({"image_username": "u"}, False),
    ({"image_password": "p"}, False),
    ({"image_username": "u", "image_password": ""}, False),
])
def test_update_changes_image_credentials_together(fields: dict[str, str], ok: bool) -> None:
    if ok:
        assert DesiredLRPUpdate.model_validate(fields).model_dump(exclude_none=True) == fields
    else:
        with pytest.raises(ValidationError):
            DesiredLRPUpdate.model_validate(fields)


def test_task_result_is_limited_to_50_kib_in_bytes() -> None:
    assert MAX_RESULT_BYTES == 50 * 1024
    at_limit = "r" * MAX_RESULT_BYTES
    assert CompleteTaskRequest(cell_id="cell-1", result=at_limit).result == at_limit
    for over in (at_limit + "r", "é" * (MAX_RESULT_BYTES // 2 + 1)):  # the second: fewer characters, more bytes
        with pytest.raises(ValidationError) as exc:
            CompleteTaskRequest(cell_id="cell-1", result=over)
        assert problems(exc) == {("result",)}


# ---- unknown fields ----------------------------------------------------------------------------

@pytest.mark.parametrize(("build", "where"), [
    (lambda: DesiredLRP.model_validate(desired_lrp(bogus=1)), ("bogus",)),
    (lambda: DesiredLRP.model_validate(desired_lrp(action={"run": {"path": "/x", "user": "u", "shell": True}})),
     ("action", "run", "run", "shell")),
    (lambda: DesiredLRP.model_validate(desired_lrp(check_definition={"checks": [{"tcp_check": {"port": 8080, "host": "x"}}]})),
     ("check_definition", "checks", "0", "tcp_check", "host")),
    (lambda: DesireTaskRequest.model_validate(task_request(state="RUNNING")), ("state",)),
    (lambda: DesireTaskRequest.model_validate(task_request(task_definition={"bogus": 1})), ("task_definition", "bogus")),
    (lambda: DesiredLRPUpdate.model_validate({"instances": 2, "bogus": 1}), ("bogus",)),
])
def test_unknown_fields_are_rejected_at_every_level(build: Any, where: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as exc:
        build()
    assert problems(exc) == {where}
    assert error_types(exc) == {"extra_forbidden"}


# ---- every problem at once ---------------------------------------------------------------------

def test_an_invalid_desired_lrp_reports_every_field_problem_at_once() -> None:
    body = desired_lrp(
        process_guid="not a guid", domain="", rootfs="http://nope", instances=-1, memory_mb=-5,
        annotation="a" * (MAX_ANNOTATION_BYTES + 1), ports=[0], bogus=True,
        action={"run": {"path": "/x", "user": "u"}, "try": {"action": RUN}},
        check_definition={"checks": [{}]},
    )
    with pytest.raises(ValidationError) as exc:
        DesiredLRP.model_validate(body)
    assert problems(exc) >= {
        ("process_guid",), ("domain",), ("rootfs",), ("instances",), ("memory_mb",), ("annotation",),
        ("ports",), ("bogus",), ("action",), ("check_definition", "checks", "0"),
    }
    assert exc.value.error_count() >= 10


def test_an_invalid_task_reports_every_field_problem_at_once() -> None:
    body = task_request(task_guid="bad/guid", domain="", task_definition={
        "rootfs": "nope", "memory_mb": -1, "completion_callback_url": "ftp://x", "action": {}})
    with pytest.raises(ValidationError) as exc:
        DesireTaskRequest.model_validate(body)
    assert problems(exc) >= {("task_guid",), ("domain",), ("task_definition", "rootfs"),
                             ("task_definition", "memory_mb"), ("task_definition", "completion_callback_url"),
                             ("task_definition", "action")}


# ---- actions -----------------------------------------------------------------------------------

NESTED = {"serial": {"log_source": "STG", "actions": [
    {"download": {"from": "https://blobs.example.com/droplet.tgz", "to": "/home/vcap", "user": "vcap",
                  "cache_key": "droplet", "checksum_algorithm": "sha256", "checksum_value": "abc123"}},
    {"emit_progress": {"start_message": "starting", "success_message": "ok", "failure_message_prefix": "failed",
                       "action": {"timeout": {"timeout_ms": 5000, "action": {"try": {"action": RUN}}}}}},
    {"parallel": {"actions": [
        {"upload": {"from": "/tmp/out", "to": "https://uploads.example.com/x", "user": "vcap"}},
        {"codependent": {"actions": [
            {"run": {"path": "/bin/app", "args": ["-p", "8080"], "dir": "/app", "user": "vcap",
                     "env": [{"name": "PORT", "value": "8080"}], "resource_limits": {"nofile": 1024},
                     "suppress_log_output": True}},
            {"run": {"path": "/bin/healthcheck", "user": "vcap", "log_source": "HEALTH"}},
        ]}},
    ]}},
]}}


def test_nested_actions_round_trip_through_json_unchanged() -> None:
    action = ACTION.validate_python(NESTED)
    assert ACTION.dump_python(action, mode="json", by_alias=True, exclude_defaults=True) == NESTED
    assert ACTION.validate_json(ACTION.dump_json(action, by_alias=True)) == action
    lrp = DesiredLRP.model_validate(desired_lrp(setup=NESTED))
    assert DesiredLRP.model_validate_json(lrp.to_json()) == lrp


@pytest.mark.parametrize("action", [
    {"run": RUN["run"], "try": {"action": RUN}},   # two keys
    {"exec": {"path": "/bin/true"}},               # unknown name
    {"Run": RUN["run"]},                           # names are exact
    {},                                            # no key
    "run",                                         # not an object
    [RUN],                                         # not an object
    {"serial": {"actions": [RUN, {"run": RUN["run"], "download": {}}]}},  # nested two keys
])
def test_an_action_is_an_object_with_exactly_one_known_key(action: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        ACTION.validate_python(action)
    assert "invalid_action" in error_types(exc)


@pytest.mark.parametrize(("timeout_ms", "ok"), [(-1, False), (0, False), (1, True), (600_000, True)])
def test_timeout_ms_must_be_positive(timeout_ms: int, ok: bool) -> None:
    doc = {"timeout": {"action": RUN, "timeout_ms": timeout_ms}}
    if ok:
        assert ACTION.validate_python(doc).timeout.timeout_ms == timeout_ms  # type: ignore[union-attr]
    else:
        with pytest.raises(ValidationError) as exc:
            ACTION.validate_python(doc)
        assert problems(exc) == {("timeout", "timeout", "timeout_ms")}


@pytest.mark.parametrize("doc", [
    {"timeout": {"action": RUN}},                                  # timeout_ms required
    {"serial": {"actions": []}},                                   # empty list
    {"parallel": {"actions": []}},
    {"codependent": {"actions": []}},
    {"try": {}},                                                   # wrapped action required
    {"run": {"path": "/bin/true"}},                                # user required
    {"run": {"path": "", "user": "u"}},                            # path required
    {"download": {"from": "ftp://x", "to": "/a", "user": "u"}},    # http(s) or file URL
    {"download": {"from": "https://x", "to": "/a", "user": "u", "checksum_algorithm": "md5"}},  # pair
    {"download": {"from": "https://x", "to": "/a", "user": "u", "checksum_algorithm": "crc32", "checksum_value": "1"}},
])
def test_invalid_action_bodies_are_rejected(doc: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ACTION.validate_python(doc)


# ---- checks ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("check", "ok"), [
    ({"tcp_check": {"port": 8080}}, True),
    ({"http_check": {"port": 8080, "path": "/health", "request_timeout_ms": 1000}}, True),
    ({}, False),
    ({"tcp_check": {"port": 8080}, "http_check": {"port": 8080}}, False),
    ({"tcp_check": {"port": 0}}, False),
    ({"http_check": {"port": 65536}}, False),
    ({"udp_check": {"port": 53}}, False),
])
def test_a_check_has_exactly_one_of_tcp_check_or_http_check(check: dict[str, Any], ok: bool) -> None:
    if ok:
        assert Check.model_validate(check).model_dump(exclude_defaults=True) == check
        assert CheckDefinition.model_validate({"checks": [check], "readiness_checks": [check]})
    else:
        with pytest.raises(ValidationError):
            Check.model_validate(check)
        with pytest.raises(ValidationError):
            DesiredLRP.model_validate(desired_lrp(check_definition={"readiness_checks": [check]}))


# ---- storage split -----------------------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-1000, 1000) | TEXT,
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                       max_leaves=8)


@st.composite
def desired_lrps(draw: st.DrawFn) -> DesiredLRP:
    creds = draw(st.sampled_from([("", ""), ("user", "secret")]))
    body = desired_lrp(
        process_guid=draw(VALID_GUID.filter(lambda g: len(g) <= 40)),
        domain=draw(st.from_regex(r"\A[a-z][a-z0-9-]{0,15}\Z")),
        rootfs=draw(st.sampled_from(GOOD_ROOTFS)),
        instances=draw(st.integers(0, 100)),
        memory_mb=draw(st.integers(0, 4096)), disk_mb=draw(st.integers(0, 4096)), max_pids=draw(st.integers(0, 1024)),
        cpu_weight=draw(st.integers(0, 100)),
        annotation=draw(TEXT),
        placement_tags=draw(st.lists(TEXT, max_size=3)),
        ports=draw(st.lists(st.integers(1, 65535), unique=True, max_size=4)),
        env=[{"name": n, "value": v} for n, v in draw(st.lists(st.tuples(TEXT.filter(bool), TEXT), max_size=3))],
        routes=draw(st.none() | st.dictionaries(st.sampled_from(["custom", "internal-router"]), JSONISH, max_size=2)),
        metric_tags=draw(st.none() | st.dictionaries(TEXT, st.sampled_from(
            [{"static": "s"}, {"dynamic": "INDEX"}, {"dynamic": "INSTANCE_GUID"}]), max_size=2)),
        volume_mounts=draw(st.lists(st.builds(lambda d, c: {"driver": d, "container_dir": c},
                                              st.sampled_from(["nfs", "smb"]), st.just("/data")), max_size=2)),
        image_username=creds[0], image_password=creds[1],
        update_strategy=draw(st.sampled_from(["ROLLING", "RECREATE"])),
        modification_tag=draw(st.none() | st.builds(lambda e, i: {"epoch": e, "index": i},
                                                    st.uuids().map(str), st.integers(0, 1000))),
        privileged=draw(st.booleans()),
        log_guid=draw(TEXT),
    )
    if draw(st.booleans()):
        body["setup"] = NESTED
    if draw(st.booleans()):
        body["check_definition"] = {"checks": [{"tcp_check": {"port": 8080}}]}
    return DesiredLRP.model_validate(body)


@given(desired_lrps())
def test_split_then_join_gives_back_the_same_desired_lrp(lrp: DesiredLRP) -> None:
    sched, run = lrp.split()
    assert DesiredLRP.join(sched, run) == lrp
    # and through the stored JSON form, as the store does it
    stored = DesiredLRP.join(SchedulingInfo.model_validate_json(sched.to_json()),
                             RunInfo.model_validate_json(run.to_json()))
    assert stored == lrp


@given(desired_lrps())
def test_scheduling_info_holds_what_auctions_need_and_run_info_does_not_repeat_it(lrp: DesiredLRP) -> None:
    sched, run = lrp.split()
    assert (sched.process_guid, sched.domain, sched.rootfs, sched.instances) == \
        (lrp.process_guid, lrp.domain, lrp.rootfs, lrp.instances)
    assert (sched.memory_mb, sched.disk_mb, sched.max_pids) == (lrp.memory_mb, lrp.disk_mb, lrp.max_pids)
    assert sched.volume_placement == sorted({m.driver for m in lrp.volume_mounts})
    run_fields = set(run.model_dump())
    assert not run_fields & {"instances", "annotation", "routes", "modification_tag", "update_strategy"}
    assert "action" in run_fields


# ---- DesiredLRPUpdate --------------------------------------------------------------------------

def test_desired_lrp_update_has_exactly_the_six_updatable_fields() -> None:
    assert set(DesiredLRPUpdate.model_fields) == {
        "instances", "routes", "annotation", "metric_tags", "image_username", "image_password"}


@pytest.mark.parametrize("field", ["process_guid", "domain", "rootfs", "action", "memory_mb", "ports",
                                   "env", "placement_tags", "update_strategy", "modification_tag"])
def test_desired_lrp_update_rejects_every_other_field(field: str) -> None:
    value = desired_lrp().get(field, "x")
    with pytest.raises(ValidationError) as exc:
        DesiredLRPUpdate.model_validate({"instances": 3, field: value})
    assert problems(exc) == {(field,)}
    assert error_types(exc) == {"extra_forbidden"}


def test_desired_lrp_update_validates_its_fields() -> None:
    with pytest.raises(ValidationError) as exc:
        DesiredLRPUpdate.model_validate({"instances": -1, "metric_tags": {"x": {"static": "a", "dynamic": "INDEX"}},
                                         "routes": {"cf-router": [{"hostnames": [], "port": 1}]}})
    assert problems(exc) >= {("instances",), ("routes",)}
    assert any(loc[0] == "metric_tags" for loc in problems(exc))
