"""Container networking: one bridge per backend, one veth per container, address and port pools.

    host                                   container netns (made by runc, attached as pd<tag>-<id>)
    pd<tag>-br 10.254.0.1/22 ── pd<tag>-<id> ══ eth0 10.254.0.N/22, default via 10.254.0.1
       (bridge port isolated: containers on the bridge cannot talk to each other at layer 2)

Only the bridge gets `forwarding` and `route_localnet` (both per interface) and loses IPv6: DNAT
of 127.0.0.1 and of the bridge address to containers works, nothing arriving on eth0 is ever
forwarded, and the host's global ip_forward is left alone. Reaching mapped ports from other
machines would need forwarding on the external interface as well; that is a deployment
decision, not made here.

Limit: a container cannot reach another container's mapped port through the bridge address.
With br_netfilter active (bridge-nf-call-iptables=1, as on this machine) the kernel delivers a
DNAT'ed packet whose new destination sits on the same bridge as a bridged frame, and port
isolation drops it. Diego does not need it (routers and proxies come from other machines).
"""
from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from .commands import run_cmd
from .errors import InsufficientResources
from .layout import Names

SYSCTL = Path("/proc/sys/net/ipv4/conf")


def link_exists(name: str) -> bool:
    """In this process's network namespace (/sys/class/net shows the namespace sysfs was
    mounted in, which differs under `nsenter --net`)."""
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def link_names() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


class AddressPool:
    """Container addresses of the bridge subnet (the first host address is the bridge's)."""

    def __init__(self, network: ipaddress.IPv4Network) -> None:
        hosts = list(network.hosts())
        self.gateway = hosts[0]
        self._free = hosts[1:]
        self._used: set[ipaddress.IPv4Address] = set()

    def acquire(self) -> ipaddress.IPv4Address:
        for addr in self._free:
            if addr not in self._used:
                self._used.add(addr)
                return addr
        raise InsufficientResources("no free container address in the bridge subnet")

    def claim(self, addr: ipaddress.IPv4Address) -> None:
        self._used.add(addr)

    def release(self, addr: ipaddress.IPv4Address) -> None:
        self._used.discard(addr)


class PortPool:
    """Host ports for mappings, handed out round-robin so a freed port is reused as late as possible."""

    def __init__(self, start: int, end: int) -> None:
        self._start, self._end = start, end
        self._next = start
        self._used: set[int] = set()

    def acquire(self, count: int) -> list[int]:
        size = self._end - self._start + 1
        if count > size - len(self._used):
            raise InsufficientResources(
                f"host port range {self._start}-{self._end} exhausted ({len(self._used)} of {size} in use)")
        ports: list[int] = []
        while len(ports) < count:
            port = self._next
            self._next = self._start if port >= self._end else port + 1
            if port not in self._used:
                self._used.add(port)
                ports.append(port)
        return ports

    def claim(self, port: int) -> None:
        self._used.add(port)

    def release(self, ports: list[int]) -> None:
        self._used.difference_update(ports)


class BridgeNetwork:
    """The host side: the bridge (idempotent setup, teardown) and per-container veth wiring."""

    def __init__(self, names: Names, network: ipaddress.IPv4Network, timeout: float) -> None:
        self._names = names
        self._network = network
        self._gateway = next(network.hosts())
        self._timeout = timeout

    async def setup(self) -> None:
        br = self._names.bridge
        if not link_exists(br):
            await run_cmd(["ip", "link", "add", "name", br, "type", "bridge"], timeout=self._timeout)
        await run_cmd(["ip", "addr", "replace", f"{self._gateway}/{self._network.prefixlen}", "dev", br],
                      timeout=self._timeout)
        await run_cmd(["ip", "link", "set", br, "up"], timeout=self._timeout)
        for key in ("forwarding", "route_localnet"):
            (SYSCTL / br / key).write_text("1\n")
        ipv6 = Path(f"/proc/sys/net/ipv6/conf/{br}/disable_ipv6")
        if ipv6.exists():  # no link-local way around the IPv4 INPUT rules
            ipv6.write_text("1\n")

    async def attach(self, handle: str, init_pid: int, addr: ipaddress.IPv4Address) -> None:
        """Name the container's netns, give it eth0 on the bridge with `addr`, route via the bridge."""
        ns, veth = self._names.netns(handle), self._names.veth(handle)
        await run_cmd(["ip", "netns", "attach", ns, str(init_pid)], timeout=self._timeout)
        host_side = "\n".join([
            f"link add {veth} type veth peer name eth0 netns {ns}",
            f"link set {veth} master {self._names.bridge}",
            f"link set dev {veth} type bridge_slave isolated on",
            f"link set {veth} up",
        ]) + "\n"
        await run_cmd(["ip", "-batch", "-"], input=host_side.encode(), timeout=self._timeout)
        inside = "\n".join([
            f"addr add {addr}/{self._network.prefixlen} dev eth0",
            "link set eth0 up",
            "link set lo up",
            f"route add default via {self._gateway}",
        ]) + "\n"
        await run_cmd(["ip", "-n", ns, "-batch", "-"], input=inside.encode(), timeout=self._timeout)

    async def detach(self, handle: str) -> None:
        """Idempotent: delete the veth pair (synchronously, rather than with the netns) and the netns name."""
        ns, veth = self._names.netns(handle), self._names.veth(handle)
        if link_exists(veth):
            await run_cmd(["ip", "link", "del", veth], check=False, timeout=self._timeout)
        if Path(f"/run/netns/{ns}").exists():
            await run_cmd(["ip", "netns", "del", ns], timeout=self._timeout)

    async def teardown(self) -> None:
        if link_exists(self._names.bridge):
            await run_cmd(["ip", "link", "del", self._names.bridge], timeout=self._timeout)


async def remove_leftovers(names: Names, timeout: float) -> None:
    """Delete every netns name and interface carrying this backend's prefix (cleanup_all)."""
    netns_dir = Path("/run/netns")
    if netns_dir.is_dir():
        for entry in netns_dir.iterdir():
            if entry.name.startswith(names.prefix):
                await run_cmd(["ip", "netns", "del", entry.name], check=False, timeout=timeout)
    for name in link_names():
        if name.startswith(names.prefix) and name != names.bridge:
            await run_cmd(["ip", "link", "del", name], check=False, timeout=timeout)
    if link_exists(names.bridge):
        await run_cmd(["ip", "link", "del", names.bridge], check=False, timeout=timeout)
