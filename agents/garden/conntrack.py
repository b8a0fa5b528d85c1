"""Forget the kernel's connection tracking entries of container addresses that are given back.

Why: an address is handed to the next container as soon as its container is destroyed, but its
conntrack entries live on (ICMP 30 s, UDP minutes, TCP established days). The firewall accepts
packets of ESTABLISHED flows before any per-container rule, so the next container would inherit
them: the old container's egress flows (even with no egress rules of its own), and inbound
flows DNAT'ed to the old container's mapped ports (another tenant's clients). Docker deletes the
entries of a removed endpoint for the same reason.

How: the `conntrack -D` of conntrack-tools, spoken directly over ctnetlink (NETLINK_NETFILTER)
with the standard library so the cell needs no extra package: dump the IPv4 table, then delete
every entry whose original or reply tuple has an address in the given network, by its original
tuple (and zone). Blocking: call it from a thread. An entry that vanished meanwhile is fine.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 1, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_ZONE = 1, 2, 18
CTA_TUPLE_IP, CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 1, 2
NLA_TYPE_MASK = 0x3FFF
NLMSG_HEADER = struct.Struct("=IHHII")   # len, type, flags, seq, pid
NFGENMSG = struct.Struct("=BBH")          # family, version, res_id (big endian, 0 here)


def _attrs(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(type, payload, the whole attribute as sent) for each netlink attribute in data."""
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & NLA_TYPE_MASK, data[offset + 4:offset + length], data[offset:offset + length]
        offset += (length + 3) & ~3


def _addresses(tuple_attr: bytes) -> list[ipaddress.IPv4Address]:
    found = []
    for kind, payload, _raw in _attrs(tuple_attr):
        if kind == CTA_TUPLE_IP:
            found += [ipaddress.IPv4Address(p) for k, p, _r in _attrs(payload)
                      if k in (CTA_IP_V4_SRC, CTA_IP_V4_DST) and len(p) == 4]
    return found


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    header = NLMSG_HEADER.pack(NLMSG_HEADER.size + NFGENMSG.size + len(body),
                               (NFNL_SUBSYS_CTNETLINK << 8) | kind, flags, seq, 0)
    return header + NFGENMSG.pack(socket.AF_INET, 0, 0) + body


def _replies(sock: socket.socket, seq: int) -> Iterator[tuple[int, bytes]]:
    """(message type, payload after the netlink header) until DONE, or the ack of a request."""
    while True:
        data = sock.recv(1 << 20)
        offset = 0
        while offset + NLMSG_HEADER.size <= len(data):
            length, kind, _flags, msg_seq, _pid = NLMSG_HEADER.unpack_from(data, offset)
            payload = data[offset + NLMSG_HEADER.size:offset + length]
            offset += (length + 3) & ~3
            if msg_seq != seq:
                continue
            if kind == NLMSG_DONE:
                return
            yield kind, payload
            if kind == NLMSG_ERROR:
                return


def _matching_entries(sock: socket.socket, network: ipaddress.IPv4Network) -> list[bytes]:
    """Delete-request bodies (original tuple + zone) of every entry touching the network."""
    sock.send(_message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, 1, b""))
    bodies = []
    for kind, payload in _replies(sock, 1):
        if kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", payload)[0]
            if code:
                raise OSError(code, f"conntrack dump: {os.strerror(code)}")
            continue
        attrs = {k: (p, raw) for k, p, raw in _attrs(payload[NFGENMSG.size:])}
        tuples = [attrs[k][0] for k in (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY) if k in attrs]
        if CTA_TUPLE_ORIG in attrs and any(a in network for t in tuples for a in _addresses(t)):
            bodies.append(attrs[CTA_TUPLE_ORIG][1] + (attrs[CTA_ZONE][1] if CTA_ZONE in attrs else b""))
    return bodies


def forget(network: ipaddress.IPv4Network) -> int:
    """Delete the conntrack entries of every address in `network`; returns how many went."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        deleted = 0
        for seq, body in enumerate(_matching_entries(sock, network), start=2):
            sock.send(_message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, body))
            for _kind, payload in _replies(sock, seq):
                code = -struct.unpack_from("=i", payload)[0]
                if code not in (0, errno.ENOENT):
                    raise OSError(code, f"conntrack delete: {os.strerror(code)}")
                deleted += code == 0
        return deleted
