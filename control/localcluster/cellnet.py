"""The cells' network of a local cluster: one bridge on the host, one network namespace per cell.

    host                                              cell netns pdcell<k>-<n> (one per cell)
    pdcells<k> 10.253.<k>.1/24 ── pdcv<k>-<n> ══ eth0 10.253.<k>.(10+n)/24, default via .1
      etcd, Consul and the BBS listen on .1             the rep (nsenter --net) with its own container
      egress: nat PD-CELLS<k>-POST (MASQUERADE),        bridge, iptables chains and port range, so
              filter PD-CELLS<k>-FWD                    cells' host ports never collide

`k`, the slot (0-9), is the first one free on this machine, so several clusters live side by
side. It is recorded in cluster.json, in network.json (written before anything is made) and in
the bridge's alias (`pydiego:<cluster dir>`), so `down` finds what to remove even when the
directory is partly gone. Everything here is idempotent: setup completes a half-made network,
teardown removes whatever of it exists.

Host-wide changes, both undone by teardown: forwarding on the bridge (per interface) and on the
uplink (the default route's interface, needed for the cells' egress replies; its value before
the first cluster changed it is kept in /run/pydiego and restored once no cells bridge is left). Limit: IPv4 only; cells reach each other and the
host, and the outside world through MASQUERADE on the uplink.
"""
from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .layout import ClusterError

SLOTS = range(10)
NETNS_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")
CONF = Path("/proc/sys/net/ipv4/conf")
UPLINK_RECORD = Path("/run/pydiego/uplink-forwarding.json")  # machine-wide: shared by all clusters


class NetworkError(ClusterError):
    pass


def run(cmd: list[str], input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host command; a failure (when `check`) raises NetworkError with its stderr."""
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"{' '.join(cmd)}: {exc}") from exc
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


@dataclass(frozen=True)
class CellNet:
    """Every name and address of one cluster's cells network, derived from its slot."""

    slot: int

    @property
    def bridge(self) -> str:
        return f"pdcells{self.slot}"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.253.{self.slot}.0/24")

    @property
    def gateway(self) -> str:
        return f"10.253.{self.slot}.1"

    @property
    def netns_prefix(self) -> str:
        return f"pdcell{self.slot}-"

    def netns(self, n: int) -> str:
        return f"{self.netns_prefix}{n}"

    def netns_path(self, n: int) -> Path:
        return NETNS_DIR / self.netns(n)

    def veth(self, n: int) -> str:
        return f"pdcv{self.slot}-{n}"

    def address(self, n: int) -> str:
        return f"10.253.{self.slot}.{10 + n}"

    def tag(self, n: int) -> str:
        """The cell's garden tag: in every host-level name its backend makes (cgroups, netns names)."""
        return f"{self.slot}c{n}"

    @staticmethod
    def container_subnet(n: int) -> str:
        """Each cell's own container bridge lives inside its netns, so subnets may repeat across clusters."""
        return f"10.254.{n}.0/24"

    @property
    def chain_post(self) -> str:
        return f"PD-CELLS{self.slot}-POST"

    @property
    def chain_forward(self) -> str:
        return f"PD-CELLS{self.slot}-FWD"

    def cells_present(self) -> list[int]:
        """Cell numbers whose netns exists."""
        found = []
        if NETNS_DIR.is_dir():
            for entry in NETNS_DIR.iterdir():
                rest = entry.name.removeprefix(self.netns_prefix)
                if rest != entry.name and rest.isdigit():
                    found.append(int(rest))
        return sorted(found)


def owner_alias(directory: Path) -> str:
    return f"pydiego:{directory}"


def _alias(ifname: str) -> str:
    try:
        return (SYS_NET / ifname / "ifalias").read_text().strip()
    except OSError:
        return ""


def find_slot(directory: Path) -> int | None:
    """The slot whose bridge carries this directory's alias (for `down` without a state file)."""
    for slot in SLOTS:
        if _alias(CellNet(slot).bridge) == owner_alias(directory):
            return slot
    return None


def owned_by(net: CellNet, directory: Path) -> bool:
    """False when the slot's bridge exists and belongs to another cluster directory."""
    return not (SYS_NET / net.bridge).exists() or _alias(net.bridge) in ("", owner_alias(directory))


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets: list[ipaddress.IPv4Network] = []
    for line in run(["ip", "-4", "-o", "addr", "show"]).stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    for line in run(["ip", "-4", "route", "show", "table", "all"]).stdout.splitlines():
        dest = line.split()[0] if line.split() else ""
        if dest[:1].isdigit():
            try:
                nets.append(ipaddress.IPv4Network(dest, strict=False))
            except ValueError:
                pass
    return nets


def choose_slot(directory: Path) -> int:
    """This directory's slot if it already has one, else the first slot no one uses."""
    mine = find_slot(directory)
    if mine is not None:
        return mine
    used = _used_networks()
    for slot in SLOTS:
        net = CellNet(slot)
        if (SYS_NET / net.bridge).exists() or net.cells_present():
            continue
        if any(net.subnet.overlaps(u) and u.prefixlen > 0 for u in used):
            continue
        return slot
    raise NetworkError("no free cells network: 10.253.0-9.0/24 are all in use (run `pydiego cluster down` on "
                       "old clusters, or delete stale pdcells* bridges)")


def uplink() -> str | None:
    """The interface of the default route (where the cells' egress leaves the machine)."""
    out = run(["ip", "-4", "route", "show", "default"], check=False).stdout.split()
    return out[out.index("dev") + 1] if "dev" in out else None


def _set_sysctl(path: Path, value: str) -> str:
    previous = path.read_text().strip()
    if previous != value:
        path.write_text(value + "\n")
    return previous


def setup(net: CellNet, cells: list[int], directory: Path, record: Path, cells_root: Path) -> dict[str, object]:
    """Make (or complete) the bridge, one netns per cell and the egress rules; returns the
    network record (also written to `record` before anything is made)."""
    doc: dict[str, object] = {"slot": net.slot, "bridge": net.bridge, "gateway": net.gateway,
                              "subnet": str(net.subnet), "cells": cells, "cells_root": str(cells_root)}
    if record.exists():
        doc = {**json.loads(record.read_text()), **doc}
    record.write_text(json.dumps(doc, indent=2))
    if not (SYS_NET / net.bridge).exists():
        run(["ip", "link", "add", "name", net.bridge, "type", "bridge"])
    if _alias(net.bridge) not in ("", owner_alias(directory)):  # another `up` took the slot meanwhile
        raise NetworkError(f"{net.bridge} belongs to another cluster ({_alias(net.bridge)}); try again")
    run(["ip", "link", "set", net.bridge, "alias", owner_alias(directory)])
    run(["ip", "addr", "replace", f"{net.gateway}/{net.subnet.prefixlen}", "dev", net.bridge])
    run(["ip", "link", "set", net.bridge, "up"])
    _set_sysctl(CONF / net.bridge / "forwarding", "1")
    for n in cells:
        _setup_cell(net, n)
    dev = uplink()
    if dev:
        previous = _set_sysctl(CONF / dev / "forwarding", "1")
        if not UPLINK_RECORD.exists():  # the value before any cluster changed it, for the last teardown
            UPLINK_RECORD.parent.mkdir(parents=True, exist_ok=True)
            UPLINK_RECORD.write_text(json.dumps({"dev": dev, "forwarding": previous}))
    _egress_rules(net, dev)
    return doc


def _setup_cell(net: CellNet, n: int) -> None:
    ns = net.netns(n)
    if not net.netns_path(n).exists():
        run(["ip", "netns", "add", ns])
    if not (SYS_NET / net.veth(n)).exists():
        run(["ip", "link", "add", net.veth(n), "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", net.veth(n), "master", net.bridge])
    run(["ip", "link", "set", net.veth(n), "up"])
    inside = "\n".join([f"addr replace {net.address(n)}/{net.subnet.prefixlen} dev eth0", "link set eth0 up",
                        "link set lo up", f"route replace default via {net.gateway}"]) + "\n"
    run(["ip", "-n", ns, "-batch", "-"], input=inside)
    # The netns forwards (mapped ports are DNAT'ed from eth0 to its container bridge); its own
    # iptables decide what may pass. The sysctl is per network namespace.
    run(["nsenter", f"--net={net.netns_path(n)}", "--", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])


def _iptables_save(table: str) -> list[str]:
    return run(["iptables-save", "-t", table]).stdout.splitlines()


def _restore(script: dict[str, list[str]]) -> None:
    text = "".join(f"*{t}\n" + "\n".join(lines) + "\nCOMMIT\n" for t, lines in script.items() if lines)
    if text:
        run(["iptables-restore", "--noflush", "--wait"], input=text)


def _jumps_to(lines: list[str], builtin: str, chain: str) -> bool:
    return any(line.startswith(f"-A {builtin} ") and line.split()[-2:] == ["-j", chain] for line in lines)


def _egress_rules(net: CellNet, dev: str | None) -> None:
    """Cells reach each other (bridged frames pass FORWARD with br_netfilter) and, masqueraded,
    the outside world. Rebuilt whole on every setup (idempotent)."""
    nat, flt = _iptables_save("nat"), _iptables_save("filter")
    br, subnet = net.bridge, str(net.subnet)
    nat_script = [f":{net.chain_post} - [0:0]", f"-A {net.chain_post} -s {subnet} ! -o {br} -j MASQUERADE"]
    if not _jumps_to(nat, "POSTROUTING", net.chain_post):
        nat_script.append(f"-I POSTROUTING 1 -j {net.chain_post}")
    flt_script = [f":{net.chain_forward} - [0:0]",
                  f"-A {net.chain_forward} -i {br} -j ACCEPT",
                  f"-A {net.chain_forward} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    if not _jumps_to(flt, "FORWARD", net.chain_forward):
        flt_script.append(f"-I FORWARD 1 -j {net.chain_forward}")
    _restore({"nat": nat_script, "filter": flt_script})


def _remove_rules(net: CellNet) -> None:
    ours = {net.chain_post, net.chain_forward}
    script: dict[str, list[str]] = {}
    for table in ("nat", "filter"):
        lines = _iptables_save(table)
        chains = [line[1:].split()[0] for line in lines if line.startswith(":") and line[1:].split()[0] in ours]
        jumps = ["-D" + line[2:] for line in lines if line.startswith("-A ") and line.split()[-2:-1] == ["-j"]
                 and line.split()[-1] in ours and line.split()[1] not in ours]
        script[table] = jumps + [f"-F {c}" for c in chains] + [f"-X {c}" for c in chains]
    _restore(script)


def teardown(net: CellNet, directory: Path) -> list[str]:
    """Remove the cells' netns, veths, the bridge and the egress rules; restore the uplink's
    forwarding. Everything is attempted; returns what failed. A slot whose bridge belongs to
    another cluster directory is left alone."""
    failures: list[str] = []
    if not owned_by(net, directory):
        return failures

    def attempt(what: str, fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except (NetworkError, OSError) as exc:
            failures.append(f"{what}: {exc}")

    attempt("iptables", _remove_rules, net)
    for n in net.cells_present():
        if (SYS_NET / net.veth(n)).exists():
            attempt(f"veth {net.veth(n)}", run, ["ip", "link", "del", net.veth(n)])
        attempt(f"netns {net.netns(n)}", run, ["ip", "netns", "del", net.netns(n)])
    for entry in SYS_NET.iterdir() if SYS_NET.is_dir() else []:
        if entry.name.startswith(f"pdcv{net.slot}-"):  # a veth whose netns is already gone
            attempt(f"veth {entry.name}", run, ["ip", "link", "del", entry.name])
    if (SYS_NET / net.bridge).exists():
        attempt(f"bridge {net.bridge}", run, ["ip", "link", "del", net.bridge])
    if UPLINK_RECORD.exists() and not any(e.name.startswith("pdcells") for e in SYS_NET.iterdir()):
        attempt("uplink forwarding", _restore_uplink)
    return failures


def _restore_uplink() -> None:
    """The last cells network is gone: the uplink's forwarding goes back to what it was."""
    try:
        saved = json.loads(UPLINK_RECORD.read_text())
        if (CONF / saved["dev"]).exists():
            _set_sysctl(CONF / saved["dev"] / "forwarding", str(saved["forwarding"]))
    except (ValueError, KeyError, TypeError):
        pass
    UPLINK_RECORD.unlink(missing_ok=True)
