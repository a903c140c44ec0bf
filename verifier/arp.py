"""Who answers ARP for the VIP: the holders as the clients' segment sees them, without logging in.

A starved balancer may take a minute to answer SSH, but its kernel still answers ARP: one broadcast
"who has VIP" from the deploy side's interface on the cluster's network, and every MAC that replies
within the window holds the VIP (two = split brain, none = nobody). Linux only (AF_PACKET), as root,
and only from inside the lab namespace (the verifier re-execs itself there for lab stacks).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time

ETH_P_ARP = 0x0806


def route_to(ip: str) -> tuple[str, str]:
    """(interface, source address) the kernel would use to reach `ip`."""
    out = subprocess.run(["ip", "-o", "route", "get", ip], capture_output=True, text=True, timeout=10).stdout.split()
    if "dev" not in out or "src" not in out:
        raise OSError(f"no route to {ip}")
    return out[out.index("dev") + 1], out[out.index("src") + 1]


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def request(own_mac: bytes, src_ip: str, target_ip: str) -> bytes:
    """An Ethernet broadcast ARP request: who has target_ip, tell src_ip."""
    eth = b"\xff" * 6 + own_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, own_mac, socket.inet_aton(src_ip), b"\x00" * 6,
                      socket.inet_aton(target_ip))
    return eth + arp


def parse_reply(frame: bytes, target_ip: str) -> str | None:
    """The sender MAC of an ARP reply for target_ip, else None."""
    if len(frame) < 42 or struct.unpack("!H", frame[12:14])[0] != ETH_P_ARP:
        return None
    _, _, _, _, op, sha, spa, _, _ = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
    if op != 2 or socket.inet_ntoa(spa) != target_ip:
        return None
    return _mac(sha)


def who_has(ip: str, window: float = 1.0) -> set[str]:
    """MACs (lowercase) answering ARP for `ip` within `window` seconds (two requests, one at the start and
    one halfway, so one lost packet does not hide a holder)."""
    dev, src = route_to(ip)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
        s.bind((dev, ETH_P_ARP))
        own = s.getsockname()[4][:6]
        frame = request(own, src, ip)
        found: set[str] = set()
        start = time.monotonic()
        s.send(frame)
        resent = False
        while (left := window - (time.monotonic() - start)) > 0:
            if not resent and left < window / 2:
                s.send(frame)
                resent = True
            s.settimeout(min(left, 0.1))
            try:
                mac = parse_reply(s.recv(2048), ip)
            except TimeoutError:
                continue
            if mac:
                found.add(mac)
        return found
