"""The etcd key space (ARCHITECTURE §3), under a configurable prefix."""
from __future__ import annotations

from dataclasses import dataclass

from control.models.actual_lrp import Presence


@dataclass(frozen=True)
class Keys:
    prefix: str = "/pydiego/v1"

    def _k(self, *parts: object) -> bytes:
        return "/".join((self.prefix, *map(str, parts))).encode()

    # prefixes (with a trailing slash so "/a" does not match "/ab")
    @property
    def root(self) -> bytes:
        return self.prefix.encode() + b"/"

    @property
    def domains(self) -> bytes:
        return self._k("domains", "")

    @property
    def desired(self) -> bytes:
        return self._k("desired", "")

    @property
    def actual(self) -> bytes:
        return self._k("actual", "")

    @property
    def tasks(self) -> bytes:
        return self._k("tasks", "")

    @property
    def cells(self) -> bytes:
        return self._k("cells", "")

    def domain(self, name: str) -> bytes:
        return self._k("domains", name)

    def schedule(self, guid: str) -> bytes:
        return self._k("desired", guid, "schedule")

    def run(self, guid: str) -> bytes:
        return self._k("desired", guid, "run")

    def actual_guid(self, guid: str) -> bytes:
        return self._k("actual", guid, "")

    def actual_index(self, guid: str, index: int) -> bytes:
        return self._k("actual", guid, index, "")

    def actual_lrp(self, guid: str, index: int, presence: Presence) -> bytes:
        return self._k("actual", guid, index, presence.value.lower())

    def task(self, guid: str) -> bytes:
        return self._k("tasks", guid)

    def cell(self, cell_id: str) -> bytes:
        return self._k("cells", cell_id)

    def parse_actual(self, key: bytes) -> tuple[str, int, Presence]:
        guid, index, presence = key[len(self.actual):].decode().split("/")
        return guid, int(index), Presence(presence.upper())

    def parse_desired(self, key: bytes) -> tuple[str, str]:
        guid, part = key[len(self.desired):].decode().split("/")
        return guid, part
