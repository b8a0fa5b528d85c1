"""Factories returning valid objects; override any field with keyword arguments."""
from __future__ import annotations

import itertools
from typing import Any

_seq = itertools.count(1)


def desired_lrp(**overrides: Any) -> dict[str, Any]:
    n = next(_seq)
    body: dict[str, Any] = {
        "process_guid": f"lrp-{n}", "domain": "test-domain", "rootfs": "preloaded:busybox", "instances": 1,
        "action": {"run": {"path": "/bin/httpd", "args": ["-f", "-p", "8080"], "user": "root"}},
        "ports": [8080], "memory_mb": 64, "disk_mb": 64,
        "routes": {"cf-router": [{"hostnames": [f"app{n}.example.com"], "port": 8080}]},
    }
    body.update(overrides)
    return body


def task_request(**overrides: Any) -> dict[str, Any]:
    n = next(_seq)
    definition = {"rootfs": "preloaded:busybox", "action": {"run": {"path": "/bin/echo", "args": ["hi"], "user": "root"}},
                  "result_file": "/tmp/result"}
    definition.update(overrides.pop("task_definition", {}))
    body: dict[str, Any] = {"task_guid": f"task-{n}", "domain": "test-domain", "task_definition": definition}
    body.update(overrides)
    return body


def start_body(instance_guid: str = "ig-1", cell_id: str = "cell-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"instance_guid": instance_guid, "cell_id": cell_id, "address": "10.0.0.1",
                            "ports": [{"container_port": 8080, "host_port": 61001}], "instance_address": "10.255.0.2"}
    body.update(overrides)
    return body
