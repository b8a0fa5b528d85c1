"""EgressRule validation and the iptables rules the firewall makes of it (no iptables run)."""
from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from pydantic import ValidationError

from agents.garden.firewall import EgressGrant, Firewall
from agents.garden.layout import Names
from agents.garden.models import ContainerSpec, EgressRule

FIREWALL = Firewall(Names("u1"), ipaddress.IPv4Network("10.9.0.0/24"), timeout=1)


def lines(*rules: EgressRule) -> list[str]:
    return FIREWALL._egress_lines(EgressGrant("app-1", "10.9.0.5", rules))


@pytest.mark.parametrize("fields", [
    {"protocol": "tcp", "destinations": ()},
    {"protocol": "tcp", "destinations": ("10.0.0.300",)},
    {"protocol": "tcp", "destinations": ("10.0.0.9-10.0.0.1",)},
    {"protocol": "tcp", "destinations": ("10.0.0.1-::1",)},
    {"protocol": "tcp", "destinations": ("1.1.1.1",), "ports": (0,)},
    {"protocol": "tcp", "destinations": ("1.1.1.1",), "port_range": (90, 80)},
    {"protocol": "tcp", "destinations": ("1.1.1.1",), "port_range": (1, 70000)},
    {"protocol": "tcp", "destinations": ("1.1.1.1",), "ports": (80,), "port_range": (1, 2)},
    {"protocol": "icmp", "destinations": ("1.1.1.1",), "ports": (80,)},
    {"protocol": "all", "destinations": ("1.1.1.1",), "port_range": (1, 2)},
    {"protocol": "tcp", "destinations": ("1.1.1.1",), "icmp_type": 8},
    {"protocol": "icmp", "destinations": ("1.1.1.1",), "icmp_code": 0},
    {"protocol": "sctp", "destinations": ("1.1.1.1",)},
])
def test_invalid_rules_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EgressRule.model_validate(fields)


def test_a_spec_carries_its_rules() -> None:
    rule = EgressRule(protocol="udp", destinations=("8.8.8.8",), ports=(53,))
    spec = ContainerSpec(handle="h", rootfs="/stack", egress_rules=(rule,))
    assert ContainerSpec.model_validate_json(spec.model_dump_json()) == spec


def test_each_destination_and_port_group_becomes_one_accept() -> None:
    got = lines(EgressRule(protocol="tcp", destinations=("1.2.3.4", "10.1.2.3/8", "5.5.5.1-5.5.5.9"),
                           ports=tuple(range(1, 18))))
    assert len(got) == 6  # 3 destinations x 2 multiport groups (15 ports at most each)
    assert all(line.startswith("-A PD-u1-EGR -s 10.9.0.5/32 ") and line.endswith(
        '-m comment --comment "pdu1:app-1" -j ACCEPT') for line in got)
    assert "-d 1.2.3.4/32 -p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 " in got[0]
    assert "-d 10.0.0.0/8 -p tcp -m multiport --dports 16,17 " in got[3]
    assert "-m iprange --dst-range 5.5.5.1-5.5.5.9 -p tcp" in got[4]


def test_protocol_forms() -> None:
    assert lines(EgressRule(protocol="all", destinations=("0.0.0.0/0",))) == [
        '-A PD-u1-EGR -s 10.9.0.5/32 -d 0.0.0.0/0 -m comment --comment "pdu1:app-1" -j ACCEPT']
    assert "-p udp --dport 1000:2000 " in lines(
        EgressRule(protocol="udp", destinations=("1.1.1.1",), port_range=(1000, 2000)))[0]
    assert "-p icmp --icmp-type 8/0 " in lines(
        EgressRule(protocol="icmp", destinations=("1.1.1.1",), icmp_type=8, icmp_code=0))[0]
    assert "-p icmp -m comment" in lines(EgressRule(protocol="icmp", destinations=("1.1.1.1",)))[0]
    assert lines(EgressRule(protocol="tcp", destinations=("::/0", "2001:db8::1-2001:db8::9"))) == []
