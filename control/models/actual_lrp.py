"""ActualLRP: one incarnation of one index of a DesiredLRP (reference §1.2, §2.1).

The wire form is flat, as cfdot prints it. `TRANSITIONS` is the declarative table of §2.1:
for each (from, to) state pair, which instance key a request must carry. The store evaluates it
inside its compare-and-swap; a test walks every pair.
"""
from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from .base import MAX_ERROR_CHARS, CellId, DomainName, InstanceGuid, Model, ProcessGuid
from .desired_lrp import ModificationTag


class ActualLRPState(StrEnum):
    UNCLAIMED = "UNCLAIMED"
    CLAIMED = "CLAIMED"
    RUNNING = "RUNNING"
    CRASHED = "CRASHED"


class Presence(StrEnum):
    ORDINARY = "ORDINARY"
    EVACUATING = "EVACUATING"
    SUSPECT = "SUSPECT"


class PortMapping(Model):
    container_port: int = Field(ge=0, le=65535)
    host_port: int = Field(ge=0, le=65535)
    container_tls_proxy_port: int = Field(default=0, ge=0, le=65535)
    host_tls_proxy_port: int = Field(default=0, ge=0, le=65535)


class InstanceKey(Model):
    """(instance_guid, cell_id): the identity of one incarnation; empty when unclaimed."""

    instance_guid: InstanceGuid = ""
    cell_id: CellId = ""

    @property
    def empty(self) -> bool:
        return not self.instance_guid and not self.cell_id


EMPTY_KEY = InstanceKey()


class Rule(StrEnum):
    """What the request's instance key `k` must be for a transition to be legal."""

    ANY = "any"              # any k
    SAME = "same"            # k == the stored key
    EMPTY = "empty"          # k is empty (a BBS-internal unclaim / restart)
    NEVER = "never"


S = ActualLRPState
TRANSITIONS: dict[tuple[ActualLRPState, ActualLRPState], Rule] = {
    # UNCLAIMED: anything may claim or start it; it cannot crash before it ran.
    (S.UNCLAIMED, S.UNCLAIMED): Rule.ANY,     # re-write (placement error, re-auction)
    (S.UNCLAIMED, S.CLAIMED): Rule.ANY,       # a cell claims it
    (S.UNCLAIMED, S.RUNNING): Rule.ANY,       # a cell reports it running directly
    (S.UNCLAIMED, S.CRASHED): Rule.NEVER,     # nothing ran, nothing crashed
    # CLAIMED
    (S.CLAIMED, S.UNCLAIMED): Rule.EMPTY,     # BBS-internal unclaim (evacuation, suspect)
    (S.CLAIMED, S.CLAIMED): Rule.SAME,        # idempotent re-claim by the same cell
    (S.CLAIMED, S.RUNNING): Rule.ANY,         # another cell may steal a claimed instance
    (S.CLAIMED, S.CRASHED): Rule.SAME,        # the claiming cell reports a crash
    # RUNNING
    (S.RUNNING, S.UNCLAIMED): Rule.EMPTY,     # BBS-internal unclaim
    (S.RUNNING, S.CLAIMED): Rule.SAME,        # the same cell re-claims (restart in place)
    (S.RUNNING, S.RUNNING): Rule.SAME,        # heartbeat / net info refresh
    (S.RUNNING, S.CRASHED): Rule.SAME,        # the running cell reports a crash
    # CRASHED (its stored key is empty, so SAME only matches an empty k)
    (S.CRASHED, S.UNCLAIMED): Rule.EMPTY,     # restart after backoff
    (S.CRASHED, S.CLAIMED): Rule.SAME,        # effectively never
    (S.CRASHED, S.RUNNING): Rule.SAME,        # effectively never
    (S.CRASHED, S.CRASHED): Rule.NEVER,
}


def allows_transition(current: ActualLRPState, current_key: InstanceKey,
                      to: ActualLRPState, key: InstanceKey) -> bool:
    rule = TRANSITIONS[(current, to)]
    if rule is Rule.ANY:
        return True
    if rule is Rule.SAME:
        return key == current_key
    if rule is Rule.EMPTY:
        return key.empty
    return False


class ActualLRP(Model):
    process_guid: ProcessGuid
    index: int = Field(ge=0)
    domain: DomainName
    instance_guid: InstanceGuid = ""
    cell_id: CellId = ""
    address: str = ""
    ports: list[PortMapping] = []
    instance_address: str = ""
    preferred_address: str = "UNKNOWN"
    state: ActualLRPState
    presence: Presence = Presence.ORDINARY
    crash_count: int = Field(default=0, ge=0)
    crash_reason: str = Field(default="", max_length=MAX_ERROR_CHARS)
    placement_error: str = Field(default="", max_length=MAX_ERROR_CHARS)
    since: int = 0
    modification_tag: ModificationTag = ModificationTag()
    routable: bool = False
    availability_zone: str = ""
    metric_tags: dict[str, str] = {}

    @property
    def instance_key(self) -> InstanceKey:
        return InstanceKey(instance_guid=self.instance_guid, cell_id=self.cell_id)

    @property
    def has_net_info(self) -> bool:
        return bool(self.address or self.ports or self.instance_address)

    @model_validator(mode="after")
    def _state_invariants(self) -> "ActualLRP":
        """Per-state invariants of Diego's ActualLRP.Validate()."""
        key_empty = self.instance_key.empty
        if self.state is S.UNCLAIMED:
            if not key_empty or self.has_net_info:
                raise ValueError("an UNCLAIMED instance has no instance key and no net info")
            if self.presence is not Presence.ORDINARY:
                raise ValueError("an UNCLAIMED instance is ORDINARY")
        elif self.state is S.CLAIMED:
            if not self.instance_guid or not self.cell_id:
                raise ValueError("a CLAIMED instance needs instance_guid and cell_id")
            if self.has_net_info or self.placement_error:
                raise ValueError("a CLAIMED instance has no net info and no placement_error")
        elif self.state is S.RUNNING:
            if not self.instance_guid or not self.cell_id or not self.address:
                raise ValueError("a RUNNING instance needs instance_guid, cell_id and address")
            if self.placement_error:
                raise ValueError("a RUNNING instance has no placement_error")
        elif self.state is S.CRASHED:
            if not key_empty or self.has_net_info:
                raise ValueError("a CRASHED instance has no instance key and no net info")
        return self


# ---- request bodies of the cell and auctioneer calls (flat instance key, as pinned) --------

class ClaimRequest(InstanceKey):
    instance_guid: InstanceGuid = Field(min_length=1)
    cell_id: CellId = Field(min_length=1)


class RemoveRequest(ClaimRequest):
    pass


class StartRequest(ClaimRequest):
    address: str = Field(min_length=1)
    ports: list[PortMapping] = []
    instance_address: str = ""
    preferred_address: str = "UNKNOWN"
    routable: bool | None = None
    availability_zone: str = ""
    metric_tags: dict[str, str] = {}


class CrashRequest(ClaimRequest):
    error_message: str = ""


class FailRequest(Model):
    error_message: str = Field(min_length=1)


class KeepContainer(Model):
    keep_container: bool
