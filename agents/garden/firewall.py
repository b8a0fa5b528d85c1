"""iptables (nft backend) rules of one backend, kept in its own chains and changed atomically.

Chains (`PD-<tag>-*`), each jumped to from the top of a built-in chain:
    nat    PREROUTING, OUTPUT (dst-type LOCAL) -> DNAT   one rule per mapped port:
                                                         host_port -> container_ip:container_port
           POSTROUTING -> POST                           MASQUERADE 127.0.0.0/8 sources (route_localnet
                                                         DNAT) and DNAT'ed container->container hairpins
    filter FORWARD -> FWD                                into containers: only replies and DNAT'ed
                                                         (mapped port) traffic; out of containers:
                                                         only replies (no egress rules yet)
           INPUT (-i bridge) -> IN                       containers reach no host service

All changes go through `iptables-restore --noflush` (one process, one atomic commit). The DNAT
chain is rebuilt from the container records on setup, so it always matches the depot.
"""
from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass

from .commands import run_cmd
from .layout import Names


@dataclass(frozen=True)
class DnatRule:
    handle: str
    host_port: int
    container_ip: str
    container_port: int


class Firewall:
    def __init__(self, names: Names, network: ipaddress.IPv4Network, timeout: float) -> None:
        self._n = names
        self._network = network
        self._timeout = timeout

    def _dnat_line(self, rule: DnatRule, op: str = "-A") -> str:
        return (f"{op} {self._n.chain_dnat} -p tcp -m tcp --dport {rule.host_port} "
                f"-m comment --comment \"{self._n.rule_comment(rule.handle)}\" "
                f"-j DNAT --to-destination {rule.container_ip}:{rule.container_port}")

    async def setup(self, rules: list[DnatRule]) -> None:
        """Create or rebuild every chain and jump (idempotent); the DNAT chain gets exactly `rules`."""
        n, br, net = self._n, self._n.bridge, str(self._network)
        saved = await self._save()
        nat = [f":{n.chain_dnat} - [0:0]", f":{n.chain_post} - [0:0]",
               f"-A {n.chain_post} -s 127.0.0.0/8 -o {br} -j MASQUERADE",
               f"-A {n.chain_post} -s {net} -o {br} -m conntrack --ctstate DNAT -j MASQUERADE"]
        nat += [self._dnat_line(r) for r in rules]
        for builtin in ("PREROUTING", "OUTPUT"):
            if not _jumps(saved["nat"], builtin, n.chain_dnat):
                nat.append(f"-I {builtin} 1 -m addrtype --dst-type LOCAL -j {n.chain_dnat}")
        if not _jumps(saved["nat"], "POSTROUTING", n.chain_post):
            nat.append(f"-I POSTROUTING 1 -j {n.chain_post}")
        flt = [f":{n.chain_forward} - [0:0]", f":{n.chain_input} - [0:0]",
               f"-A {n.chain_forward} -i {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
               f"-A {n.chain_forward} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT",
               f"-A {n.chain_forward} -o {br} -j DROP",
               f"-A {n.chain_forward} -i {br} -j REJECT --reject-with icmp-port-unreachable",
               f"-A {n.chain_input} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
               f"-A {n.chain_input} -j REJECT --reject-with icmp-port-unreachable"]
        if not _jumps(saved["filter"], "FORWARD", n.chain_forward):
            flt.append(f"-I FORWARD 1 -j {n.chain_forward}")
        if not _jumps(saved["filter"], "INPUT", n.chain_input):
            flt.append(f"-I INPUT 1 -i {br} -j {n.chain_input}")
        await self._restore({"nat": nat, "filter": flt})

    async def add(self, rules: list[DnatRule]) -> None:
        if rules:
            await self._restore({"nat": [self._dnat_line(r) for r in rules]})

    async def remove(self, handle: str) -> None:
        """Delete every DNAT rule of `handle` that exists (idempotent)."""
        saved = await self._save(tables=("nat",))
        comment = self._n.rule_comment(handle)
        lines = [_as_delete(line) for line in saved["nat"]
                 if line.startswith(f"-A {self._n.chain_dnat} ") and _comment(line) == comment]
        if lines:
            await self._restore({"nat": lines})

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
