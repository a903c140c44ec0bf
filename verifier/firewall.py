"""The firewall_closed check (lab stacks): from inside the lab namespace, the ports the nodes' nftables rules
must close are closed. SSH (22) on every node from an address outside firewall.sshFrom; HTTP (80) on every
web node from an address that is no balancer (nor in firewall.webHttpFrom). Closed: no TCP connection is
established within PROBE_TIMEOUT s (the rules drop SSH and reset HTTP: either will do).

The sources. This namespace's own address on the nodes' subnet (in nat mode the gateway, libvirt's bridge)
is inside sshFrom by default, so the SSH probe needs a second one: the highest free host address of that
subnet, added as a /32 beside the own address for the probes only and deleted after. That is allowed
because the namespace is the project's own (scripts/lab.sh makes it; the integration harness's client is
the test's), and the guard refuses any other (verifier.netns.check_inside). On the nodes' link the extra
address answers ARP like the gateway does, and no other host or namespace ever holds it. Where both
addresses are allowed (sshFrom covering the whole subnet: bridge mode's default), that part is not probed
and the detail says so.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from . import netns
from .spec import Firewall, Spec

PROBE_TIMEOUT = 2.0
SSH, HTTP = 22, 80
SPARE_TRIES = 16  # free host addresses looked for below the broadcast address


class ProbeError(RuntimeError):
    """The probes could not be set up (one line, for the report)."""


@dataclass(frozen=True)
class Plan:
    ssh_src: str | None  # None: every address here may SSH in, not probed
    http_src: str | None  # None: every address here may reach the web nodes' HTTP, not probed
    spare: str | None  # the extra address to add for the probes (one of the sources), or None


def plan(own: ipaddress.IPv4Interface, fw: Firewall, balancers: list[str], taken: set[str]) -> Plan:
    """Which source probes what: the own address where the rules must refuse it, else a spare one."""
    own_only = [ipaddress.IPv4Network(f"{own.ip}/32")]
    ssh_from = [ipaddress.IPv4Network(x) for x in fw.ssh_from] if fw.ssh_from is not None else own_only
    http_from = [ipaddress.IPv4Network(x) for x in (*fw.web_http_from, *balancers)]
    net = own.network
    spare = next((str(a) for a in (net.broadcast_address - i for i in range(1, SPARE_TRIES + 1))
                  if a in net and a != net.network_address and str(a) not in taken | {str(own.ip)}), None)
    sources = [str(own.ip), *([spare] if spare else [])]

    def outside(nets: list[ipaddress.IPv4Network]) -> str | None:
        return next((a for a in sources if not any(ipaddress.IPv4Address(a) in n for n in nets)), None)
    ssh_src, http_src = outside(ssh_from), outside(http_from)
    for src, nets, key in ((ssh_src, ssh_from, "sshFrom"), (http_src, http_from, "webHttpFrom")):
        if src is None and not any(net.subnet_of(n) for n in nets):  # a probe is due but has no source
            raise ProbeError(f"no free address among the top {SPARE_TRIES} of {net} to probe from outside "
                             f"firewall.{key}")
    return Plan(ssh_src, http_src, spare if spare in (ssh_src, http_src) else None)


def verdict(p: Plan, ssh: dict[str, bool], http: dict[str, bool]) -> tuple[bool, str]:
    """From what connected (node -> a TCP connection was established): passed, and one line naming the
    port, the nodes and the source."""
    done, bad = [], []
    for port, src, opened, why, allowed in ((f"ssh ({SSH})", p.ssh_src, ssh, "outside firewall.sshFrom", "sshFrom"),
                                            (f"http ({HTTP})", p.http_src, http, "not a balancer", "webHttpFrom")):
        if src is None:
            done.append(f"{port} not probed: every address of the lab namespace may connect (firewall.{allowed})")
            continue
        accepted = [n for n, ok in opened.items() if ok]
        if accepted:
            bad.append(f"{port} from {src} ({why}) accepted by {', '.join(accepted)}")
        else:
            done.append(f"{port} from {src} ({why}) refused/dropped on {', '.join(opened)}")
    if bad:
        return False, "; ".join(bad) + ": the nodes' firewall must close it"
    return True, "; ".join(done)


def connects(src: str, dst: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """A TCP connection from `src` to dst:port is established within `timeout`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.bind((src, 0))
        try:
            s.connect((dst, port))
        except OSError:
            return False
        return True


def _ip(*argv: str) -> str:
    r = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise ProbeError(f"ip {' '.join(argv)}: {r.stderr.strip() or f'rc {r.returncode}'}")
    return r.stdout


def in_use() -> set[str]:
    """Addresses a spare one must not be: every IPv4 address of this namespace (deleting the spare after the
    probes must never remove one it had already) and every neighbour it has heard from."""
    local = {a["local"] for link in json.loads(_ip("-j", "-4", "addr", "show") or "[]") for a in link.get("addr_info", [])}
    heard = {n["dst"] for n in json.loads(_ip("-j", "-4", "neigh", "show") or "[]")
             if not {"FAILED", "INCOMPLETE"} & set(n.get("state", []))}
    return local | heard


def lab_side(node_ips: list[str]) -> tuple[str, ipaddress.IPv4Interface]:
    """This namespace's interface and address on the nodes' subnet."""
    for link in json.loads(_ip("-j", "-4", "addr", "show") or "[]"):
        for a in link.get("addr_info", []):
            own = ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
            if own.network.prefixlen < 32 and all(ipaddress.IPv4Address(ip) in own.network for ip in node_ips):
                return link["ifname"], own
    raise ProbeError(f"this namespace has no address on the nodes' subnet ({', '.join(node_ips)})")


@contextmanager
def extra_address(ifname: str, address: str | None, ns: str) -> Iterator[None]:
    """`address`/32 on `ifname` while the block runs (nothing when None); only inside namespace `ns`."""
    if address is None:
        yield
        return
    try:
        netns.check_inside(ns)
    except netns.NamespaceError as e:
        raise ProbeError(str(e)) from None
    _ip("addr", "add", f"{address}/32", "dev", ifname)  # add, not replace: an address already here fails
    try:
        yield
    finally:
        _ip("addr", "del", f"{address}/32", "dev", ifname)


def check(s: Spec, connect: Callable[[str, str, int], bool] = connects) -> tuple[bool, str]:
    """Probe every port the firewall must close, in parallel (about PROBE_TIMEOUT s in all)."""
    try:
        netns.check_inside(s.netns or "")  # every probe starts inside the lab namespace, or none does
    except netns.NamespaceError as e:
        raise ProbeError(str(e)) from None
    nodes = {n.name: n.ip for n in (*s.balancers, *s.web_nodes)}
    webs = {w.name: w.ip for w in s.web_nodes}
    ifname, own = lab_side(list(nodes.values()))
    p = plan(own, s.firewall, [b.ip for b in s.balancers], {*nodes.values(), s.vip, *in_use()})
    with extra_address(ifname, p.spare, s.netns or ""), ThreadPoolExecutor(max_workers=len(nodes) + len(webs)) as pool:
        ssh = {n: pool.submit(connect, p.ssh_src, ip, SSH) for n, ip in nodes.items()} if p.ssh_src else {}
        http = {n: pool.submit(connect, p.http_src, ip, HTTP) for n, ip in webs.items()} if p.http_src else {}
        ssh_open, http_open = {n: f.result() for n, f in ssh.items()}, {n: f.result() for n, f in http.items()}
    return verdict(p, ssh_open, http_open)
