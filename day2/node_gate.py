"""Runs ON A NODE (as root, python3 only, no project imports): one look at the node, or one step of a rolling
change, for day2/gate.py on the deploy host. One SSH round trip per call.

Input (stdin, JSON): {"op", "node"?, "ip"?, "vip"?, "interface"?, "drainFile"?, "stateFile"?, "until"?, "seconds"?}
  look              what the gate needs to decide (below)
  drain / undrain   add / remove `node` to / from the health agent's drain file (atomic rename)
  stop-keepalived   a clean stop: keepalived sends its priority-0 advert, the peer takes the VIP; a holder
                    keeps the VIP on lo first (keep-vip), so it still answers the requests in flight
  start-keepalived  start it again (a drained balancer that was not restarted, or one day 2 held back for a
                    VRRP timing change: its timer is stopped first)
  keep-vip          `vip`/32 on lo as well, ARP answered only for addresses of the interface asked on
                    (arp_ignore 1, arp_announce 2): when keepalived takes the VIP off the interface (a clean
                    stop, the MASTER preempting it back), the connections this node accepted on it still
                    send their answers; clients reach whoever holds it on the interface
  release-vip       nginx reloaded, then wait (up to "seconds") for the connections accepted on `vip`:80 to
                    end, then drop the lo copy ("met": none was left)
With "until" (drained | undrained | healthy: the agent's view of `node`; noflows: no connection to `ip`
left), the op then waits here, up to "seconds", for it to hold: one SSH round trip instead of a poll loop
from the deploy host. Output (stdout, JSON) of every op,
after it (and the wait, with "met" and "after"):
  {"agent": <the agent's state file or null>,
  "keepalived": "active"|..., "nginx": "active"|..., "vip": <holds the VIP>, "flows": <established TCP
  connections to ip:80>, "vipFlows": <established TCP connections accepted on vip:80>,
  "keptVip": <vip on lo>, "healthz": <HTTP status of the local nginx /healthz, 0 when it does not answer>,
  "held": <keepalived held back by day 2 for a VRRP timing change (day2/apply.py HOLD_UNIT)>}
"""

import json
import os
import socket
import subprocess
import sys
import time

HOLD_TIMER = "hacluster-vrrp-hold.timer"  # day2/apply.py HOLD_UNIT


def run(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 1, ""
    return r.returncode, r.stdout


def active(unit):
    return run(["systemctl", "is-active", unit])[1].strip() or "unknown"


def healthz():
    try:
        with socket.create_connection(("127.0.0.1", 80), timeout=2) as s:
            s.settimeout(2)
            s.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: hacluster-gate\r\n\r\n")
            head = s.recv(16)
        return int(head[9:12]) if head.startswith(b"HTTP/1.") else 0
    except (OSError, ValueError):
        return 0


def holds(vip, interface):
    if not vip:
        return False
    out = run(["ip", "-o", "-4", "addr", "show", "dev", interface])[1]
    return any(w.split("/")[0] == vip for line in out.splitlines() for w in line.split())


def flows(ip):
    if not ip:
        return 0
    out = run(["ss", "-Htn", "state", "established", "dst", ip, "dport", "=", ":80"])[1]
    return len([x for x in out.splitlines() if x.strip()])


def vip_flows(vip):
    if not vip:
        return 0
    out = run(["ss", "-Htn", "state", "established", "src", vip, "sport", "=", ":80"])[1]
    return len([x for x in out.splitlines() if x.strip()])


def kept(vip):
    return bool(vip) and holds(vip, "lo")


def keep_vip(vip):
    """The VIP on lo too, never answered in ARP (arp_ignore 1: only for an address of the interface asked
    on; arp_announce 2: ARP requests name the interface's own address): the sysctls before the address,
    and no address when they cannot be set (a second ARP answer for the VIP is worse than a lost request)."""
    try:
        for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
            with open(f"/proc/sys/net/ipv4/conf/all/{key}", "w") as f:
                f.write(value)
    except OSError:
        return False
    return run(["ip", "addr", "replace", f"{vip}/32", "dev", "lo"])[0] == 0


def release_vip(vip, seconds):
    """nginx reloaded (its old workers close the idle kept-alive client connections and finish the requests
    in flight); once no connection accepted on the VIP is left (up to `seconds`), the lo copy dropped."""
    start = time.monotonic()
    if active("nginx") == "active":
        run(["systemctl", "reload", "nginx"])
    while vip_flows(vip) and time.monotonic() - start < seconds:
        time.sleep(0.2)
    met = vip_flows(vip) == 0
    if kept(vip):
        run(["ip", "addr", "del", f"{vip}/32", "dev", "lo"])
    return {"met": met, "after": round(time.monotonic() - start, 2)}


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, TypeError, ValueError):
        return None


def set_drain(path, node, on):
    names = read_json(path)
    names = [n for n in (names if isinstance(names, list) else []) if isinstance(n, str) and n != node]
    names = sorted([*names, node]) if on else names
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w") as f:
        json.dump(names, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    req = json.load(sys.stdin)
    op, out = req["op"], None
    if op in ("drain", "undrain"):
        set_drain(req["drainFile"], req["node"], op == "drain")
    elif op == "stop-keepalived":
        if holds(req.get("vip"), req.get("interface") or "eth0"):
            keep_vip(req["vip"])
        run(["systemctl", "stop", "keepalived"])
    elif op == "keep-vip":
        keep_vip(req["vip"])
    elif op == "release-vip":
        out = release_vip(req["vip"], float(req.get("seconds", 0)))
    elif op == "start-keepalived":
        run(["systemctl", "stop", HOLD_TIMER])
        run(["systemctl", "start", "keepalived"])
    elif op != "look":
        print(json.dumps({"error": f"unknown op {op!r}"}))
        return 2
    start = time.monotonic()
    if req.get("until"):
        met = False
        while not met:
            met = holds_until(req)
            if met or time.monotonic() - start >= float(req.get("seconds", 0)):
                break
            time.sleep(0.2)
        out = {"met": met, "after": round(time.monotonic() - start, 2)}
    print(json.dumps({
        "agent": read_json(req["stateFile"]) if req.get("stateFile") else None,
        "keepalived": active("keepalived"), "nginx": active("nginx"),
        "vip": holds(req.get("vip"), req.get("interface") or "eth0"), "flows": flows(req.get("ip")),
        "vipFlows": vip_flows(req.get("vip")), "keptVip": kept(req.get("vip")), "healthz": healthz(),
        "held": active(HOLD_TIMER) == "active", **(out or {}),
    }))
    return 0


def holds_until(req):
    until, node = req["until"], req.get("node")
    if until == "noflows":
        return flows(req.get("ip")) == 0
    agent = read_json(req.get("stateFile")) or {}
    if until == "healthy":
        return node in (agent.get("healthy") or [])
    drained = node in (agent.get("drained") or [])
    return drained if until == "drained" else (not drained and bool(agent))


if __name__ == "__main__":
    sys.exit(main())
