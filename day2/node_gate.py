"""Runs ON A NODE (as root, python3 only, no project imports): one look at the node, or one step of a rolling
change, for day2/gate.py on the deploy host. One SSH round trip per call.

Input (stdin, JSON): {"op", "node"?, "ip"?, "vip"?, "interface"?, "drainFile"?, "stateFile"?, "until"?, "seconds"?}
  look              what the gate needs to decide (below)
  drain / undrain   add / remove `node` to / from the health agent's drain file (atomic rename)
  stop-keepalived   a clean stop: keepalived sends its priority-0 advert, the peer takes the VIP
  start-keepalived  start it again (a drained balancer that was not restarted, or one day 2 held back for a
                    VRRP timing change: its timer is stopped first)
With "until" (drained | undrained | healthy: the agent's view of `node`; noflows: no connection to `ip`
left), the op then waits here, up to "seconds", for it to hold: one SSH round trip instead of a poll loop
from the deploy host. Output (stdout, JSON) of every op, after it (and the wait, with "met" and "after"):
  {"agent": <the agent's state file or null>,
  "keepalived": "active"|..., "nginx": "active"|..., "vip": <holds the VIP>, "flows": <established TCP
  connections to ip:80>, "healthz": <HTTP status of the local nginx /healthz, 0 when it does not answer>,
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
    op = req["op"]
    if op in ("drain", "undrain"):
        set_drain(req["drainFile"], req["node"], op == "drain")
    elif op == "stop-keepalived":
        run(["systemctl", "stop", "keepalived"])
    elif op == "start-keepalived":
        run(["systemctl", "stop", HOLD_TIMER])
        run(["systemctl", "start", "keepalived"])
    elif op != "look":
        print(json.dumps({"error": f"unknown op {op!r}"}))
        return 2
    start, out = time.monotonic(), None
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
        "healthz": healthz(), "held": active(HOLD_TIMER) == "active", **(out or {}),
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
