"""Health gates of a rolling change, on the deploy host: a node is drained before its VM is restarted or
replaced (`python -m day2 drain`, the node's drain command), and admitted again once it serves (the end of
`python -m day2`, the node's config command). The Pulumi program orders the nodes one after another.

Web node  drain:  every pool it is in keeps another serving member on every balancer (else refused); the
                  balancers' health agents stop sending it new connections (day2/node_gate.py writes their
                  drain file) and the requests in flight get `drainTimeout` seconds to finish.
          admit:  every balancer's agent sees it serve; then it leaves the drain file.
Balancer  drain:  its peer serves (nginx, keepalived, /healthz), else refused; keepalived is stopped cleanly
                  (its priority-0 advert hands the VIP over) and the peer holds the VIP; the holder kept
                  the VIP on lo, so the requests it accepted finish (`drainTimeout`) before its VM stops,
                  and the MASTER's peer keeps it on lo until the MASTER is admitted again.
          admit:  keepalived runs, nginx serves, and exactly one balancer holds the VIP: the MASTER, which
                  takes it back (preempt) only once its nginx serves; then the peer's lo copy goes once
                  its own requests in flight are done.
A VM that does not run has nothing to drain (a cold `up`, a new node). Every wait is bounded; a refusal is
one line saying what, where and what to do, and leaves the cluster as it was.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from verifier.actions import ssh_argv
from verifier.cancel import CANCEL, Cancelled
from verifier.hostkeys import KnownHosts

NODE_GATE = base64.b64encode((Path(__file__).resolve().parent / "node_gate.py").read_bytes()).decode()
# Where the health agent keeps its state and reads its drain file (model/render.py VM_PATHS; a unit test
# keeps them equal).
STATE_FILE = "/run/hacluster/health-state.json"
DRAIN_FILE = "/run/hacluster/drain.json"
POLL_S = 0.5
AGENT_WAIT_S = 20.0  # for the agents to pick the drain file up (they read it every check interval)
SETTLE_POLLS = 3  # one holder, the expected one, this many polls in a row
VIP_MOVE_S = 30.0  # for the peer to take the VIP after a clean stop of keepalived


class Refused(Exception):
    """A gate that did not open: one line for the user."""


class HostKeyUnknown(Refused):
    """A node presented another SSH host key than the stack's (verifier/hostkeys.py): it was told nothing."""


def log(msg: str) -> None:
    print(f"day2: {msg}", file=sys.stderr, flush=True)


class Nodes:
    """SSH to the stack's nodes: one multiplexed connection per node for the whole run (a login costs a
    loaded TCG guest seconds of CPU), closed at the end."""

    def __init__(self, user: str, key_file: str, prefix: list[str], known: KnownHosts):
        self.user, self.key_file, self.prefix, self.known = user, key_file, prefix, known
        self.dir = tempfile.mkdtemp(prefix="hc-gate-")  # 0700: the control sockets
        self.opened: set[str] = set()

    def _argv(self, host: str) -> list[str]:
        mux = ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.dir}/%C", "-o", "ControlPersist=300"]
        base = ssh_argv(self.user, host, self.key_file, self.known.path)
        return [*self.prefix, *base[:-1], *mux, base[-1]]

    def call(self, host: str, op: str = "look", **req) -> dict | None:
        """One node_gate.py op on the node at `host`; its JSON answer, or None when it does not answer.
        `req` goes to node_gate.py (its `ip` is the web node whose connections it counts). HostKeyUnknown
        when it presents another host key than the stack's (a node that is not ours is not "silent")."""
        argv = [*self._argv(host), f"sudo -n python3 -c \"import base64;exec(base64.b64decode('{NODE_GATE}'))\""]
        try:
            r = subprocess.run(argv, input=json.dumps({"op": op, "stateFile": STATE_FILE, **req}), capture_output=True,
                               text=True, timeout=CANCEL.bound(40.0 + float(req.get("seconds", 0))))
        except subprocess.TimeoutExpired:
            return None
        if r.returncode == 255:
            name = next((n for n, i in self.known.ips.items() if i == host), host)
            refused = self.known.refusal(name, r.stderr)
            if refused:
                raise HostKeyUnknown(refused)
        self.opened.add(host)
        try:
            answer = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else None
        except ValueError:
            return None
        return answer if isinstance(answer, dict) and "error" not in answer else None

    def many(self, hosts: dict[str, str], op: str = "look", **req) -> dict[str, dict | None]:
        """The same op on several nodes at once ({name: host} -> {name: answer})."""
        with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
            futures = {name: pool.submit(self.call, host, op, **req) for name, host in hosts.items()}
            return {name: f.result() for name, f in futures.items()}

    def close(self) -> None:
        for host in self.opened:
            try:
                subprocess.run([*self._argv(host)[:-1], "-O", "exit", f"{self.user}@{host}"], capture_output=True,
                               timeout=CANCEL.bound(15))  # a cancelled run has its budget only
            except subprocess.TimeoutExpired:
                pass  # the master ends by itself (ControlPersist)
        shutil.rmtree(self.dir, ignore_errors=True)


def domain_runs(spec: dict) -> bool | None:
    """Whether the node's VM runs (libvirt's word); None when libvirt cannot be asked from here."""
    if not spec.get("domain") or not spec.get("uri") or shutil.which("virsh") is None:
        return None
    try:
        r = subprocess.run(["virsh", "-q", "-c", spec["uri"], "domstate", spec["domain"]], capture_output=True,
                           text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        return False if "failed to get domain" in r.stderr.lower() or "not found" in r.stderr.lower() else None
    return r.stdout.strip() in ("running", "paused", "in shutdown", "pmsuspended")


def _wait(timeout: float, probe, what: str):
    """Poll `probe()` until it returns something true; that value, or Refused naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise Refused(what)
        time.sleep(POLL_S)


def _lbs(spec: dict, names=None) -> dict[str, str]:
    return {b["name"]: b["ip"] for b in spec["balancers"] if names is None or b["name"] in names}


def _agents(nodes: Nodes, spec: dict, names=None, op: str = "look", **req) -> dict[str, dict | None]:
    """Each balancer's health agent state ({name: state or None when it does not answer}), after `op`."""
    looks = nodes.many(_lbs(spec, names), op, ip=spec["ip"], **req)
    return {n: (v or {}).get("agent") if isinstance((v or {}).get("agent"), dict) else None for n, v in looks.items()}


def _in(agent: dict) -> set[str]:
    return set(agent.get("healthy") or ()) - set(agent.get("ejected") or ()) - set(agent.get("drained") or ())


HINT = "fix that first, then run `pulumi up` again (or set hacluster:rollout.allowDowntime true to accept an outage)"


def drain(spec: dict, nodes: Nodes) -> None:
    node = spec["node"]
    if domain_runs(spec) is False:
        log(f"{node}: its VM does not run: nothing to drain")
        return
    with _unknown_keys(spec, "drain"):
        (_drain_web if spec["role"] == "web" else _drain_lb)(spec, nodes)


def _drain_web(spec: dict, nodes: Nodes) -> None:
    node, allow = spec["node"], spec["allowDowntime"]
    if not spec["drain"]:
        log(f"{node}: the balancers do not probe web nodes (nginx.upstream.activeCheck off): its graceful stop drains it")
        return
    agents = {n: a for n, a in _agents(nodes, spec).items() if a is not None}
    if not agents:
        if allow:
            log(f"{node}: no balancer's health agent answers: not drained (rollout.allowDowntime)")
            return
        raise Refused(f"{node}: cannot drain it: no balancer's health agent answers over SSH; {HINT}")
    if not any(node in (a.get("healthy") or ()) for a in agents.values()):
        log(f"{node}: no balancer sees it serve: nothing to drain")
        return
    for lb, a in agents.items():
        for pool in spec["pools"]:
            if not allow and not (set(pool) - {node}) & (_in(a) - {node}):
                raise Refused(f"{node}: cannot drain it: on {lb} no other member of its pool ({', '.join(pool)}) "
                              f"serves; {HINT}")
    start = time.monotonic()
    try:
        done = nodes.many(_lbs(spec, agents), "drain", node=node, ip=spec["ip"], drainFile=DRAIN_FILE, until="drained",
                          seconds=AGENT_WAIT_S)
        if not all((v or {}).get("met") for v in done.values()):
            _agents(nodes, spec, agents, "undrain", node=node, drainFile=DRAIN_FILE)
            raise Refused(f"{node}: the balancers' health agents did not drain it within {AGENT_WAIT_S:.0f} s (it may "
                          f"be the last serving member of a pool; see /run/hacluster/health-state.json on "
                          f"{', '.join(agents)}); it was left in; {HINT}")
        drained = time.monotonic()
        flows = nodes.many(_lbs(spec, agents), ip=spec["ip"], until="noflows", seconds=spec["drainTimeout"])
    except Cancelled:  # the deployment was cancelled: the node serves again, as it was found
        with CANCEL.shielded():
            _agents(nodes, spec, agents, "undrain", node=node, drainFile=DRAIN_FILE)
            log(f"{node}: cancelled while it was drained: admitted again on {', '.join(agents)}")
        raise
    left = ("no connection left" if all((v or {}).get("met") for v in flows.values()) else
            f"connections still open after rollout.drainTimeout ({spec['drainTimeout']} s): cut by its stop")
    log(f"{node}: drained on {', '.join(agents)}: no new connection after {drained - start:.1f} s, {left} "
        f"after {time.monotonic() - start:.1f} s")


def _ip(spec: dict, name: str) -> str:
    return next(b["ip"] for b in spec["balancers"] if b["name"] == name)


def _look_lb(nodes: Nodes, spec: dict, name: str) -> dict | None:
    return nodes.call(_ip(spec, name), vip=spec["vip"], interface=spec["interface"])


def _drain_lb(spec: dict, nodes: Nodes) -> None:
    node, allow = spec["node"], spec["allowDowntime"]
    peer = next(b["name"] for b in spec["balancers"] if b["name"] != node)
    me = _look_lb(nodes, spec, node)
    if me is None:
        log(f"{node}: does not answer over SSH: nothing to drain")
        return
    p = _look_lb(nodes, spec, peer)
    if not (p and p["nginx"] == "active" and p["keepalived"] == "active" and p["healthz"] == 200):
        what = (f"nginx {p['nginx']}, keepalived {p['keepalived']}, /healthz {p['healthz'] or 'no answer'}"
                if p else "it does not answer over SSH")
        if not allow:
            raise Refused(f"{node}: cannot take it out: its peer {peer} does not serve ({what}); {HINT}")
        log(f"{node}: its peer {peer} does not serve ({what}): taken out anyway (rollout.allowDowntime)")
    start = time.monotonic()
    try:
        if me["keepalived"] == "active":
            nodes.call(_ip(spec, node), "stop-keepalived", vip=spec["vip"], interface=spec["interface"])
        def moved():
            looks = nodes.many(_lbs(spec), vip=spec["vip"], interface=spec["interface"])
            me, p = looks[node], looks[peer]
            return me is not None and not me["vip"] and (allow or (p or {}).get("vip"))
        _wait(VIP_MOVE_S, moved,
              f"{node}: after a clean stop of its keepalived, {peer} did not take the VIP within {VIP_MOVE_S:.0f} s; keepalived "
              f"was started again on {node}; look at both balancers' `journalctl -u keepalived`, then run `pulumi up` again")
    except HostKeyUnknown:
        raise  # not a gate that timed out: a node that is not the stack's
    except (Refused, Cancelled) as e:  # refused or cancelled: keepalived runs again, as it was found
        with CANCEL.shielded():
            nodes.call(_ip(spec, node), "start-keepalived")
            if isinstance(e, Cancelled):
                log(f"{node}: cancelled while it was taken out: keepalived started again")
        raise
    log(f"{node}: keepalived stopped cleanly (priority-0 advert); {peer} holds the VIP "
        f"({time.monotonic() - start:.1f} s)")
    if me["vip"]:
        _finish_in_flight(spec, nodes, node, peer)


def _finish_in_flight(spec: dict, nodes: Nodes, node: str, peer: str) -> None:
    """The VIP left `node` (stop-keepalived kept it on its lo): the requests it accepted on the VIP finish
    before its VM stops (its nginx reloaded: the idle kept-alive connections close). The peer keeps it on
    lo too, from now until the MASTER's admission: the MASTER's return takes the VIP off the peer's
    interface (preempt) without cutting what the peer has in flight."""
    vip = spec["vip"]
    done = nodes.call(_ip(spec, node), "release-vip", vip=vip, interface=spec["interface"],
                      seconds=spec["drainTimeout"]) or {}
    if spec.get("master") == node:  # None without preempt: the VIP does not come back
        nodes.call(_ip(spec, peer), "keep-vip", vip=vip, interface=spec["interface"])
    log(f"{node}: its requests in flight on the VIP finished ({done.get('after', 0):.1f} s)" if done.get("met") else
        f"{node}: {done.get('vipFlows', '?')} connections on the VIP still open after rollout.drainTimeout "
        f"({spec['drainTimeout']} s): cut by its stop")


def may_hold(spec: dict, nodes: Nodes) -> bool:
    """A BACKUP's keepalived may be held back for a VRRP timing change (day2/apply.py) only while the MASTER
    holds the VIP and serves: it then needs no peer for the seconds until its own change. A MASTER with
    another host key than the stack's: not held (with rollout.allowDowntime; refused without)."""
    master = spec.get("master")
    if spec["role"] == "web" or master is None or spec["node"] == master:
        return False
    m = None
    with _unknown_keys(spec, "hold"):
        m = _look_lb(nodes, spec, master)
    return bool(m and m["vip"] and m["keepalived"] == "active" and m["healthz"] == 200)


def admit(spec: dict, nodes: Nodes, held: bool = False) -> None:
    with _unknown_keys(spec, "admit"):
        if spec["role"] == "web":
            _admit_web(spec, nodes)
        elif held:
            log(f"{spec['node']}: keepalived held back for the VRRP timing change until {spec['master']} has it too "
                "(its day 2 starts it; a timer does within 90 s whatever happens)")
        else:
            _admit_lb(spec, nodes)
            if spec["node"] == spec.get("master"):
                _release_peer(spec, nodes)
                _release_kept(spec, nodes)


@contextmanager
def _unknown_keys(spec: dict, gate: str):
    """A node of the gate with another host key than the stack's refuses the gate; with rollout.allowDowntime
    (a stack deployed before pinned host keys rolls to them) the gate is skipped instead: the node was told
    nothing (ssh stopped at its host key), and the outage was accepted."""
    try:
        yield
    except HostKeyUnknown as e:
        if not spec["allowDowntime"]:
            raise
        log(f"{spec['node']}: {gate} gate skipped (rollout.allowDowntime): {e}")


def _release_peer(spec: dict, nodes: Nodes) -> None:
    """The MASTER has the new VRRP timing: start its peer's held keepalived, and see one holder, itself."""
    node = spec["node"]
    peer = next(b["name"] for b in spec["balancers"] if b["name"] != node)
    p = _look_lb(nodes, spec, peer)
    if not (p and p.get("held")):
        return
    start = time.monotonic()
    nodes.call(_ip(spec, peer), "start-keepalived")
    _admit_lb({**spec, "node": peer}, nodes)  # it runs and serves,
    _admit_lb(spec, nodes)  # and one balancer holds the VIP: this one
    log(f"{peer}: keepalived started again with the new VRRP timing; {node} holds the VIP "
        f"({time.monotonic() - start:.1f} s)")


def _release_kept(spec: dict, nodes: Nodes) -> None:
    """The MASTER holds the VIP again: the peer's lo copy (kept since the MASTER's drain) goes once the
    requests the peer accepted on the VIP are done."""
    peer = next(b["name"] for b in spec["balancers"] if b["name"] != spec["node"])
    p = _look_lb(nodes, spec, peer)
    if not (p and p.get("keptVip")):
        return
    done = nodes.call(_ip(spec, peer), "release-vip", vip=spec["vip"], interface=spec["interface"],
                      seconds=spec["drainTimeout"]) or {}
    log(f"{peer}: its requests in flight on the VIP {'finished' if done.get('met') else 'outlived rollout.drainTimeout'}"
        f" ({done.get('after', 0):.1f} s); the VIP is on {spec['node']} alone")


def _admit_web(spec: dict, nodes: Nodes) -> None:
    node = spec["node"]
    if not spec["drain"]:
        return
    drained = [lb for lb, a in _agents(nodes, spec).items() if a and node in (a.get("drained") or ())]
    if not drained:
        return  # not drained anywhere: a cold up, a new node or a day-2 change (apply checked it serves)
    start = time.monotonic()
    _wait(spec["timeout"], lambda: (nodes.call(spec["ip"]) or {}).get("healthz") == 200,
          f"{node}: its nginx does not answer http://127.0.0.1/healthz on the node for {spec['timeout']} s; it stays "
          "drained (the other web nodes serve); look at `journalctl -u nginx` there, then run `pulumi up` again")
    _wait(spec["timeout"], lambda: all((v or {}).get("met") for v in nodes.many(
              _lbs(spec, drained), ip=spec["ip"], node=node, until="healthy", seconds=20).values()),
          f"{node}: does not serve: the probes of http://{spec['ip']}/healthz from {', '.join(drained)} kept failing "
          f"for {spec['timeout']} s; it stays drained (the other web nodes serve); look at its nginx "
          "(journalctl -u nginx), then run `pulumi up` again")
    done = nodes.many(_lbs(spec, drained), "undrain", node=node, ip=spec["ip"], drainFile=DRAIN_FILE,
                      until="undrained", seconds=AGENT_WAIT_S)
    if not all((v or {}).get("met") for v in done.values()):
        raise Refused(f"{node}: the health agents of {', '.join(drained)} did not admit it within {AGENT_WAIT_S:.0f} s")
    log(f"{node}: admitted again on {', '.join(drained)} ({time.monotonic() - start:.1f} s after its config)")


def _admit_lb(spec: dict, nodes: Nodes) -> None:
    node, master = spec["node"], spec["master"]
    start = time.monotonic()
    me = _look_lb(nodes, spec, node)
    if me and me["keepalived"] != "active":
        nodes.call(_ip(spec, node), "start-keepalived")
    settled = {"n": 0, "last": None}

    def ready():
        looks = nodes.many(_lbs(spec), vip=spec["vip"], interface=spec["interface"])
        mine = looks[node]
        holders = sorted(n for n, v in looks.items() if v and v["vip"])
        settled["last"] = (mine, holders)
        # The MASTER (or either, without one): exactly one holder, itself. A BACKUP: the VIP is held. Not
        # "exactly one" there: a VRRP timing change (vrrp.advertInt) reaches the BACKUP first, which drops
        # the MASTER's adverts until the MASTER has it too; waiting for one holder then would hold the MASTER's
        # config back and keep them split. The MASTER's gate and the verifier after it check one holder.
        if master is None:
            want = len(holders) == 1
        else:
            want = holders == [master] if node == master else bool(holders)
        ok = mine is not None and mine["keepalived"] == "active" and mine["healthz"] == 200 and want
        settled["n"] = settled["n"] + 1 if ok else 0
        return settled["n"] >= SETTLE_POLLS

    try:
        _wait(spec["timeout"], ready, "")
    except HostKeyUnknown:
        raise  # not a gate that timed out: a node that is not the stack's
    except Refused:
        mine, holders = settled["last"] or (None, [])
        state = (f"keepalived {mine['keepalived']}, /healthz {mine['healthz'] or 'no answer'}" if mine
                 else "it does not answer over SSH")
        raise Refused(f"{node}: not admitted within {spec['timeout']} s: {state}; VIP held by "
                      f"{', '.join(holders) or 'nobody'} (want {master or 'one balancer'}); look at "
                      f"`journalctl -u keepalived -u nginx` on {node}, then run `pulumi up` again") from None
    holder = settled["last"][1][0]
    log(f"{node}: admitted: keepalived runs, nginx serves, {holder} holds the VIP ({time.monotonic() - start:.1f} s)")
