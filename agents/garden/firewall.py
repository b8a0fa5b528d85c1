"""iptables (nft backend) rules of one backend, kept in its own chains and changed atomically.

Chains (`PD-<tag>-*`), each jumped to from the top of a built-in chain:
    nat    PREROUTING, OUTPUT (dst-type LOCAL) -> DNAT   one rule per mapped port:
                                                         host_port -> container_ip:container_port
           POSTROUTING -> POST                           MASQUERADE 127.0.0.0/8 sources (route_localnet
                                                         DNAT), DNAT'ed container->container hairpins,
                                                         and container traffic leaving the bridge (egress)
    filter FORWARD -> FWD                                into containers: only replies and DNAT'ed
                                                         (mapped port) traffic; out of containers:
                                                         replies; to the bridge subnet: rejected; then
                     FWD -> EGR                          per-container egress accepts (source IP match);
                                                         anything else: rejected
           INPUT (-i bridge) -> IN                       containers reach no host service

Egress rules can therefore never open another container (the bridge subnet is rejected first) or
the cell itself (traffic to the host's own addresses goes through INPUT, not FORWARD). Every DNAT
and EGR rule carries the container's handle in a comment, which is how `remove` finds them.

All changes go through `iptables-restore --noflush` (one process, one atomic commit). The DNAT
and EGR chains are rebuilt from the container records on setup, so they always match the depot.

Limits: IPv4 only (IPv6 destinations of a rule are skipped: containers have no IPv6). Egress
beyond the machine needs forwarding on the interface the replies come in on
(`net.ipv4.conf.<if>.forwarding=1`, or ip_forward): a deployment decision, not made here.
"""
from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from .commands import run_cmd
from .layout import Names
from .models import EgressRule, parse_destination

MULTIPORT_MAX = 15  # ports one `-m multiport` match takes


@dataclass(frozen=True)
class DnatRule:
    handle: str
    host_port: int
    container_ip: str
    container_port: int


@dataclass(frozen=True)
class EgressGrant:
    """The egress rules of one container, matched on its source address."""

    handle: str
    container_ip: str
    rules: tuple[EgressRule, ...]


class Firewall:
    def __init__(self, names: Names, network: ipaddress.IPv4Network, timeout: float) -> None:
        self._n = names
        self._network = network
        self._timeout = timeout

    def _dnat_line(self, rule: DnatRule, op: str = "-A") -> str:
        return (f"{op} {self._n.chain_dnat} -p tcp -m tcp --dport {rule.host_port} "
                f"-m comment --comment \"{self._n.rule_comment(rule.handle)}\" "
                f"-j DNAT --to-destination {rule.container_ip}:{rule.container_port}")

    def _egress_lines(self, grant: EgressGrant) -> list[str]:
        head = f"-A {self._n.chain_egress} -s {grant.container_ip}/32"
        tail = f"-m comment --comment \"{self._n.rule_comment(grant.handle)}\" -j ACCEPT"
        lines = []
        for rule in grant.rules:
            for dest in rule.destinations:
                dest_match = _destination_match(dest)
                if dest_match is None:
                    continue
                lines += [" ".join(filter(None, (head, dest_match, proto, tail))) for proto in _protocol_matches(rule)]
        return lines

    async def setup(self, rules: list[DnatRule], grants: Sequence[EgressGrant] = ()) -> None:
        """Create or rebuild every chain and jump (idempotent); DNAT and EGR get exactly these rules."""
        n, br, net = self._n, self._n.bridge, str(self._network)
        saved = await self._save()
        nat = [f":{n.chain_dnat} - [0:0]", f":{n.chain_post} - [0:0]",
               f"-A {n.chain_post} -s 127.0.0.0/8 -o {br} -j MASQUERADE",
               f"-A {n.chain_post} -s {net} -o {br} -m conntrack --ctstate DNAT -j MASQUERADE",
               f"-A {n.chain_post} -s {net} ! -o {br} -j MASQUERADE"]
        nat += [self._dnat_line(r) for r in rules]
        for builtin in ("PREROUTING", "OUTPUT"):
            if not _jumps(saved["nat"], builtin, n.chain_dnat):
                nat.append(f"-I {builtin} 1 -m addrtype --dst-type LOCAL -j {n.chain_dnat}")
        if not _jumps(saved["nat"], "POSTROUTING", n.chain_post):
            nat.append(f"-I POSTROUTING 1 -j {n.chain_post}")
        reject = "-j REJECT --reject-with icmp-port-unreachable"
        flt = [f":{n.chain_forward} - [0:0]", f":{n.chain_input} - [0:0]", f":{n.chain_egress} - [0:0]",
               f"-A {n.chain_forward} -i {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
               f"-A {n.chain_forward} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT",
               f"-A {n.chain_forward} -o {br} -j DROP",
               f"-A {n.chain_forward} -i {br} -d {net} {reject}",  # other containers: before any egress
               f"-A {n.chain_forward} -i {br} -j {n.chain_egress}",
               f"-A {n.chain_forward} -i {br} {reject}",
               f"-A {n.chain_input} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
               f"-A {n.chain_input} {reject}"]
        flt += [line for grant in grants for line in self._egress_lines(grant)]
        if not _jumps(saved["filter"], "FORWARD", n.chain_forward):
            flt.append(f"-I FORWARD 1 -j {n.chain_forward}")
        if not _jumps(saved["filter"], "INPUT", n.chain_input):
            flt.append(f"-I INPUT 1 -i {br} -j {n.chain_input}")
        await self._restore({"nat": nat, "filter": flt})

    async def add(self, rules: list[DnatRule], grants: Sequence[EgressGrant] = ()) -> None:
        """Add a container's rules, both tables in one commit."""
        script = {"nat": [self._dnat_line(r) for r in rules],
                  "filter": [line for grant in grants for line in self._egress_lines(grant)]}
        script = {table: lines for table, lines in script.items() if lines}
        if script:
            await self._restore(script)

    async def remove(self, handle: str) -> None:
        """Delete every DNAT and egress rule of `handle` that exists (idempotent)."""
        saved = await self._save()
        comment = self._n.rule_comment(handle)
        script: dict[str, list[str]] = {}
        for table, chain in (("nat", self._n.chain_dnat), ("filter", self._n.chain_egress)):
            lines = [_as_delete(line) for line in saved[table]
                     if line.startswith(f"-A {chain} ") and _comment(line) == comment]
            if lines:
                script[table] = lines
        if script:
            await self._restore(script)

    async def teardown(self) -> None:
        """Remove the jumps to and the chains of this backend (any `PD-<tag>-` chain)."""
        saved = await self._save()
        script: dict[str, list[str]] = {}
        for table, lines in saved.items():
            ours = [line[1:].split()[0] for line in lines
                    if line.startswith(":") and line[1:].startswith(self._n.chain_prefix)]
            jumps = [_as_delete(line) for line in lines if line.startswith("-A ")
                     and not line.split()[1].startswith(self._n.chain_prefix) and _target(line) in ours]
            body = jumps + [f"-F {c}" for c in ours] + [f"-X {c}" for c in ours]
            if body:
                script[table] = body
        if script:
            await self._restore(script)

    async def _save(self, tables: tuple[str, ...] = ("nat", "filter")) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for table in tables:
            result = await run_cmd(["iptables-save", "-t", table], timeout=self._timeout)
            out[table] = result.text.splitlines()
        return out

    async def _restore(self, tables: dict[str, list[str]]) -> None:
        script = "".join(f"*{t}\n" + "\n".join(lines) + "\nCOMMIT\n" for t, lines in tables.items())
        await run_cmd(["iptables-restore", "--noflush", "--wait"], input=script.encode(), timeout=self._timeout)


def _destination_match(dest: str) -> str | None:
    """iptables match of one destination; None for IPv6 (nothing to allow)."""
    parsed = parse_destination(dest)
    if isinstance(parsed, tuple):
        first, last = parsed
        return f"-m iprange --dst-range {first}-{last}" if first.version == 4 else None
    return f"-d {parsed}" if parsed.version == 4 else None


def _protocol_matches(rule: EgressRule) -> list[str]:
    """One match per iptables rule the EgressRule needs (multiport takes 15 ports at most)."""
    if rule.protocol == "all":
        return [""]
    if rule.protocol == "icmp":
        if rule.icmp_type is None:
            return ["-p icmp"]
        code = f"/{rule.icmp_code}" if rule.icmp_code is not None else ""
        return [f"-p icmp --icmp-type {rule.icmp_type}{code}"]
    proto = f"-p {rule.protocol}"
    if rule.port_range is not None:
        return [f"{proto} --dport {rule.port_range[0]}:{rule.port_range[1]}"]
    if not rule.ports:
        return [proto]
    chunks = [rule.ports[i:i + MULTIPORT_MAX] for i in range(0, len(rule.ports), MULTIPORT_MAX)]
    return [f"{proto} -m multiport --dports {','.join(map(str, chunk))}" for chunk in chunks]


def _jumps(lines: list[str], builtin: str, chain: str) -> bool:
    return any(line.startswith(f"-A {builtin} ") and line.split()[-2:] == ["-j", chain] for line in lines)


def _target(line: str) -> str | None:
    tokens = line.split()
    for i, token in enumerate(tokens[:-1]):
        if token in ("-j", "-g"):
            return tokens[i + 1]
    return None


def _as_delete(line: str) -> str:
    return "-D" + line[2:]


def _comment(line: str) -> str | None:
    tokens = shlex.split(line)
    for i, token in enumerate(tokens[:-1]):
        if token == "--comment":
            return tokens[i + 1]
    return None


def rules_mentioning(lines: list[str], text: str) -> list[str]:
    """Rules (`-A ...` lines) containing `text`: for tests and diagnostics."""
    return [line for line in lines if line.startswith("-A ") and text in line]
