#!/usr/bin/env python3
"""hacluster-health: the balancer's health agent. Runs ON A BALANCER (python3 stdlib only, no project
imports), one long-lived process: no fork per check, so it stays cheap on a slow guest.

Two jobs, each a thread probing over plain sockets (GET /healthz, HTTP/1.0):

VRRP   Decides keepalived's track file (`track_file` with weight 1): 0 = stay as configured, -254 = FAULT
       (keepalived sends a priority-0 advert and the peer takes the VIP after its skew time only).
       FAULT only when this balancer's own nginx is failing AND the peer's nginx serves (`rise` good
       answers in a row, so one lucky answer from an equally starved peer is not enough). When both look
       unhealthy (load, a slow host, a shared upstream outage) the file says 0 on both and the VIP stays
       where it is: a health check never empties the VIP.
       - refused / reset / non-2xx: evidence that nginx is dead, counted toward `fall`;
       - no answer within `timeout` (slow): counted only once nginx has been slow for `slowFall` x
         `interval` seconds in a row without completing a single request (its access log did not
         grow: busy is not stuck), and never in a round the agent itself started late (CPU starvation
         makes every probe look slow);
       - `rise` good answers end a failure. Until the first answer the agent writes nothing: keepalived's
         `init_file -254` (the file lives in /run) keeps a booting balancer from claiming the VIP before
         its nginx serves.

UPSTREAM  Active checks of the web nodes. A node failing `fall` rounds is ejected: its address joins the
       nft set `down` of table `inet <nftTable>`, whose output rule answers every packet the balancer sends
       to it with a TCP reset, and `ss -K` aborts the connections already open to it (nginx's keepalive
       pool, requests in flight): nginx retries them on the next server at once (`proxy_next_upstream
       error`). After `rise` good rounds the node rejoins (element removed, nginx reloaded so its passive
       max_fails state starts afresh). Never ejects the last live member of a pool.
       DRAIN (a rolling change, day2/gate.py): the nodes named in `drainFile` (a JSON list, in /run) get no
       new connections from this balancer (nft set `drain`: a reset for a new connection, established ones
       finish) and nginx is reloaded, so its workers let go of their kept-alive connections to them once
       their requests are done. A drained node is still probed; it leaves the file when it is admitted.
       Draining follows the same rule: never the last live member of a pool.

Input: argv[1], a JSON file rendered by hacluster (model/render.py `health_conf`). State (for the
verifier): `stateFile`, JSON, rewritten on every change. Log: one line per transition on stdout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

OK, DEAD, SLOW = "ok", "dead", "slow"
PROBE_MARK = 0x4843  # the agent's own probes to an ejected node pass the reject rule
FAULT = -254
EVENTS_KEPT = 100


def log(msg: str) -> None:
    print(f"hacluster-health: {msg}", flush=True)


def probe(ip: str, port: int, path: str, timeout: float, mark: int = 0, connect_timeout: float | None = None) -> str:
    """One GET; OK on a 2xx status line, SLOW when nothing came back in time, DEAD otherwise. `mark`
    (SO_MARK) lets the agent's own probes through the ejection rule. `connect_timeout` bounds the TCP
    handshake alone: a frozen or vanished node never completes it, a busy one does at once (its kernel
    answers), so it can be shorter than the time a slow application may take to answer."""
    try:
        start = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if mark:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            s.settimeout(min(timeout, connect_timeout or timeout))
            s.connect((ip, port))
            s.settimeout(max(0.05, timeout - (time.monotonic() - start)))
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\nUser-Agent: hacluster-health\r\n\r\n".encode())
            head = s.recv(16)
    except TimeoutError:
        return SLOW
    except OSError:
        return DEAD  # refused, reset, unreachable
    return OK if head.startswith(b"HTTP/1.") and head[9:10] == b"2" else DEAD


class Tracker:
    """Consecutive-result hysteresis: `fall` failures make it unhealthy, `rise` successes healthy again.
    `healthy` is None until the first result (which decides directly)."""

    def __init__(self, fall: int, rise: int, healthy: bool | None = None):
        self.fall, self.rise, self.healthy = fall, rise, healthy
        self._run = 0  # length of the current run of results that disagree with `healthy`

    def feed(self, ok: bool) -> bool:
        """Returns True when `healthy` changed."""
        if self.healthy is None:
            self.healthy = ok
            return True
        if ok == self.healthy:
            self._run = 0
            return False
        self._run += 1
        if self._run >= (self.rise if ok else self.fall):
            self.healthy, self._run = ok, 0
            return True
        return False


def peer_tracker(rise: int) -> Tracker:
    """Whether the peer serves: only after `rise` good answers in a row, no longer at its first miss. One
    lucky answer from a balancer as starved as we are must not move the VIP onto it."""
    return Tracker(1, rise, healthy=False)


def log_mark(path: str | None) -> tuple[int, int] | None:
    """(inode, size) of nginx's access log: it changes whenever nginx completes a request (or rotates)."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size


class Stuck:
    """How long the local nginx has been slow AND completed no request. A busy nginx on a starved CPU
    answers the probe late but still serves its clients (its access log grows): that is load, and the
    VIP stays. A wedged one completes nothing."""

    def __init__(self, access_log: str | None):
        self.log, self.since, self.mark = access_log, None, None

    def feed(self, result: str, now: float) -> float:
        """Seconds stuck so far after this probe result (0 when not slow)."""
        if result != SLOW:
            self.since = None
            return 0.0
        mark = log_mark(self.log)
        if self.since is None or (mark is not None and mark != self.mark):
            self.since, self.mark = now, mark  # first slow round, or nginx completed requests since
        return now - self.since


def local_verdict(result: str, slow_s: float, slow_for: float, late: bool) -> bool | None:
    """What a local probe result says about this balancer's nginx: True/False, or None (no evidence).
    Slow answers count as failing only once nginx has been slow `slow_for` seconds in a row, and never
    in a round we started late ourselves."""
    if result == OK:
        return True
    if result == DEAD:
        return False
    return False if slow_s >= slow_for and not late else None


def track_value(local_healthy: bool | None, peer_ok: bool) -> int | None:
    """The track file's value: FAULT only when we fail and the peer serves; None: nothing known yet."""
    if local_healthy is None:
        return None
    return FAULT if (not local_healthy and peer_ok) else 0


def ejectable(down: set[str], pools: list[list[str]]) -> set[str]:
    """The down nodes that may be ejected: never the last live member of any pool."""
    keep: set[str] = set()
    for members in pools:
        if members and all(m in down for m in members):
            keep |= set(members)
    return down - keep


def drainable(down: set[str], current: set[str], requested: set[str], pools: list[list[str]]) -> set[str]:
    """The requested nodes that may be drained: those drained already first, then the others in name order,
    each only while every pool it is in keeps a live member that is neither down nor drained."""
    out: set[str] = set()
    for n in [*sorted(current & requested), *sorted(requested - current)]:
        if n in ejectable(down | out | {n}, pools):
            out.add(n)
    return out


class Agent:
    def __init__(self, conf: dict):
        self.c = conf
        self.lock = threading.Lock()
        self.state = {"node": conf["node"], "track": None, "local": None, "peer": None,
                      "ejected": [], "events": [], "started": time.time()}
        self.nft_table = conf["upstream"].get("nftTable", "hacluster_eject")

    # ---- state ---------------------------------------------------------------------------------
    def event(self, what: str, **kw) -> None:
        log(what)
        with self.lock:
            self.state["events"] = (self.state["events"] + [{"t": round(time.time(), 3), "what": what, **kw}])[-EVENTS_KEPT:]
            self._save()

    def set(self, **kw) -> None:
        with self.lock:
            changed = any(self.state.get(k) != v for k, v in kw.items())
            self.state.update(kw)
            if changed:
                self._save()

    def _save(self) -> None:
        path = self.c.get("stateFile")
        if path:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.state, f, sort_keys=True)
            os.replace(tmp, path)

    # ---- VRRP ----------------------------------------------------------------------------------
    def write_track(self, value: int) -> None:
        path = self.c["vrrp"]["trackFile"]
        try:
            with open(path) as f:
                if f.read().strip() == str(value):
                    return
        except OSError:
            pass
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{value}\n")
        os.replace(tmp, path)  # keepalived watches the file with inotify

    def vrrp_loop(self) -> None:
        v = self.c["vrrp"]
        interval, timeout = float(v["interval"]), float(v["timeout"])
        local = Tracker(int(v["fall"]), int(v["rise"]))
        peer_serves = peer_tracker(int(v["rise"]))
        stuck, due = Stuck(v.get("accessLog")), time.monotonic()
        slow_for = int(v["slowFall"]) * interval  # how long nginx may be slow before that counts as failing
        while True:
            late = time.monotonic() - due > max(interval, 0.5)  # we woke up late: starved of CPU
            started = time.monotonic()
            mine = probe(v["localIp"], int(v["port"]), v["path"], timeout)
            peer = probe(v["peerIp"], int(v["port"]), v["path"], timeout)
            verdict = local_verdict(mine, stuck.feed(mine, started), slow_for, late)
            if verdict is not None and local.feed(verdict):
                self.event(f"local nginx {'serves' if local.healthy else 'fails'} ({mine})", local=local.healthy)
            peer_serves.feed(peer == OK)
            value = track_value(local.healthy, peer_serves.healthy)
            if value is not None:
                if value != self.state["track"]:
                    self.event(f"track file {value} ({'FAULT: the peer serves, we do not' if value else 'stay'})",
                               track=value)
                self.write_track(value)  # also re-asserts it after a keepalived restart
            self.set(track=value, local=local.healthy, peer=peer)
            due = max(due + interval, time.monotonic())  # a slow round is not a late one: no catching up
            time.sleep(max(0.0, due - time.monotonic()))

    # ---- upstream --------------------------------------------------------------------------------
    def nft(self, script: str) -> bool:
        r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            log(f"nft failed: {r.stderr.strip()}")
        return r.returncode == 0

    def setup_table(self, port: int) -> bool:
        t = self.nft_table
        return self.nft(f"table inet {t} {{}}\ndelete table inet {t}\n"
                        f"table inet {t} {{\n  set down {{ type ipv4_addr; }}\n  set drain {{ type ipv4_addr; }}\n"
                        f"  chain out {{ type filter hook output priority 0; policy accept;\n"
                        f"    ip daddr @down tcp dport {port} meta mark != {PROBE_MARK:#x} reject with tcp reset\n"
                        f"    ip daddr @drain tcp dport {port} ct state new meta mark != {PROBE_MARK:#x} "
                        "reject with tcp reset\n"
                        "  }\n}\n")

    def table_present(self) -> bool:
        r = subprocess.run(["nft", "list", "set", "inet", self.nft_table, "down"], capture_output=True, timeout=30)
        return r.returncode == 0

    def eject(self, ip: str, port: int) -> None:
        self.nft(f"add element inet {self.nft_table} down {{ {ip} }}\n")
        if self.c["upstream"].get("killConnections", True):
            subprocess.run(["ss", "-K", "dst", ip, "dport", "=", f":{port}"], capture_output=True, timeout=30)

    def rejoin(self, ip: str) -> None:
        self.nft(f"delete element inet {self.nft_table} down {{ {ip} }}\n")
        self.reload_nginx()

    def reload_nginx(self) -> None:
        """A graceful reload: new workers start afresh (passive failure counts, kept-alive connections); the
        old ones finish their requests in flight and exit."""
        reload = self.c["upstream"].get("reload")
        if reload:
            subprocess.run(reload, capture_output=True, timeout=60)

    def read_drain(self, known: set[str]) -> set[str]:
        """The node names in the drain file (none when it is absent or unreadable)."""
        path = self.c["upstream"].get("drainFile")
        try:
            with open(path) as f:
                names = json.load(f)
        except (OSError, TypeError, ValueError):
            return set()
        return {n for n in names if isinstance(n, str) and n in known} if isinstance(names, list) else set()

    def apply_drain(self, nodes: dict[str, str], drained: set[str], want: set[str]) -> set[str]:
        """Make the nft set `drain` hold `want`, then reload nginx so no worker keeps a connection to them."""
        if want == drained:
            return drained
        ops = [f"add element inet {self.nft_table} drain {{ {nodes[n]} }}" for n in sorted(want - drained)]
        ops += [f"delete element inet {self.nft_table} drain {{ {nodes[n]} }}" for n in sorted(drained - want)]
        if not self.nft("\n".join(ops) + "\n"):
            return drained
        self.reload_nginx()
        for n in sorted(want - drained):
            self.event(f"drained {n} ({nodes[n]}): no new connections", node=n)
        for n in sorted(drained - want):
            self.event(f"{n} admitted again ({nodes[n]})", node=n)
        return want

    def upstream_loop(self) -> None:
        u = self.c["upstream"]
        interval, timeout, port = float(u["interval"]), float(u["timeout"]), int(u["port"])
        connect_timeout = max(0.2, min(timeout, interval))  # a round lasts no longer than it must
        nodes = {n["name"]: n["ip"] for n in u["nodes"]}
        pools = [list(p) for p in u["pools"]]
        trackers = {n: Tracker(int(u["fall"]), int(u["rise"]), healthy=True) for n in nodes}
        ejected: set[str] = set()
        drained: set[str] = set()
        if not self.setup_table(port):
            self.event("cannot create the nft table: web node ejection is off")
            return
        due, checked = time.monotonic(), time.monotonic()
        results: dict[str, str] = {}

        def one(name: str) -> None:
            results[name] = probe(nodes[name], port, u["path"], timeout, PROBE_MARK, connect_timeout)

        while True:
            late = time.monotonic() - due > max(interval, 0.5)
            threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in nodes]
            for t in threads:
                t.start()
            for t in threads:
                t.join(2 * timeout + 1)
            for name, r in list(results.items()):
                if r == SLOW and late:
                    continue  # we were starved: a timeout says nothing about the node
                if trackers[name].feed(r == OK):
                    self.event(f"{name} {'serves' if trackers[name].healthy else 'fails'} ({r})", node=name)
            down = {n for n, t in trackers.items() if not t.healthy}
            want = ejectable(down, pools)
            if time.monotonic() - checked > 10:  # a firewall reload may have removed the table
                checked = time.monotonic()
                if not self.table_present():
                    self.event("nft table missing: recreating it")
                    self.setup_table(port)
                    ejected, drained = set(), set()
            for name in sorted(want - ejected):
                self.eject(nodes[name], port)
                self.event(f"ejected {name} ({nodes[name]})", node=name)
            for name in sorted(ejected - want):
                self.rejoin(nodes[name])
                self.event(f"{name} rejoined ({nodes[name]})", node=name)
            if (down - want) and self.state.get("kept") != sorted(down - want):
                self.event(f"kept {', '.join(sorted(down - want))} in: the last live member of a pool", node=None)
            ejected = set(want)
            # Drained nodes count as down for the last-live-member rule: a drain never empties a pool.
            to_drain = self.read_drain(set(nodes))
            drained = self.apply_drain(nodes, drained, drainable(down, drained, to_drain, pools))
            self.set(ejected=sorted(ejected), kept=sorted(down - want), drained=sorted(drained),
                     healthy=sorted(n for n, t in trackers.items() if t.healthy))
            due = max(due + interval, time.monotonic())
            time.sleep(max(0.0, due - time.monotonic()))

    # ---- main ----------------------------------------------------------------------------------
    def run(self) -> None:
        jobs = []
        if self.c["vrrp"].get("enabled"):
            jobs.append(threading.Thread(target=self.vrrp_loop, name="vrrp", daemon=True))
        if self.c["upstream"].get("enabled"):
            jobs.append(threading.Thread(target=self.upstream_loop, name="upstream", daemon=True))
        self.event(f"started: {', '.join(j.name for j in jobs) or 'nothing to do'}")
        for j in jobs:
            j.start()
        while not jobs or any(j.is_alive() for j in jobs):
            time.sleep(1)
        log("a job ended; exiting so systemd restarts the agent")
        sys.exit(1)


def in_root_netns() -> bool:
    """Whether we share PID 1's network namespace (kthreadd's, PID 2, where PID 1's cannot be read).
    Unknown counts as yes: the caller refuses."""
    def ident(path: str) -> tuple[int, int]:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    try:
        try:
            root = ident("/proc/1/ns/net")
        except PermissionError:
            with open("/proc/2/comm") as f:
                if f.read().strip() != "kthreadd":
                    return True
            root = ident("/proc/2/ns/net")
        return ident("/proc/self/ns/net") == root
    except OSError:
        return True


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: health.py CONFIG.json", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        conf = json.load(f)
    if conf.get("requireNetns") and in_root_netns():
        print("hacluster-health: refusing to run in the root network namespace (requireNetns is set)", file=sys.stderr)
        return 3
    Agent(conf).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
