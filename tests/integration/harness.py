"""A throw-away lab of network namespaces running the project's real nginx and keepalived configs.

    switch namespace: bridge br0, one veth end per host (p-<host>)
    lb01, lb02:       eth0 + real nginx (balancer config) + real keepalived
    web01, web02:     eth0 + real nginx (web config)
    client:           eth0 with the network's gateway address; the verifier probes from here

Every link is created from inside the switch namespace (`ip -n SW link add p-h type veth peer name eth0
netns H`), so none ever exists in the root namespace, and every nginx/keepalived starts through
verifier.guard, which refuses to exec outside the host's own namespace. The configs are the ones the VMs
get: `render.node_files(...)` with every path relocated under /run/hacluster-it/<run>/<host>, the nodes'
nftables ruleset (when the settings enable the firewall) loaded inside their namespaces.

`down()` stops every process by its pid file (after checking it lives in one of the lab's namespaces),
sweeps whatever is left in those namespaces, deletes them and the run directory. It is safe to call
after a partial `up()`.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from model import render
from model.settings import Node, Settings
from verifier import netns
from verifier.actions import _alive, read_pid

ROOT = Path(__file__).resolve().parents[2]
RUN_ROOT = Path("/run/hacluster-it")
NS_PREFIX = "hait"
AUTH_PASS = "itpass"
STOP_WAIT = 10.0


def log(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def sh(*argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: rc {r.returncode}: {r.stderr.strip()}")
    return r


def become_subreaper() -> None:
    """Orphaned daemons (nginx masters, keepalived the verifier restarted) become our children, so we reap
    them; PID 1 here does not."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _owner_of(pid: int) -> str:
    """pid + start time: identifies a process even after its pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return f"{pid} {stat[stat.rindex(')') + 2:].split()[19]}"


def wait_for(cond, seconds: float, every: float = 0.2) -> bool:
    """Poll `cond()` every `every` s for up to `seconds`; whether it held (asked once more at the end)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return cond()


def sweep_stale() -> None:
    """Tear down labs whose pytest died without its finalizers (SIGKILL, a second Ctrl-C)."""
    runs = {d.name for d in RUN_ROOT.iterdir() if d.is_dir()} if RUN_ROOT.is_dir() else set()
    names = os.listdir(netns.NETNS_DIR) if netns.NETNS_DIR.is_dir() else []
    runs |= {n[len(NS_PREFIX):].split("-", 1)[0] for n in names if n.startswith(NS_PREFIX) and "-" in n}
    for run in sorted(runs):
        owner = RUN_ROOT / run / "owner"
        recorded = owner.read_text().strip() if owner.exists() else ""
        if recorded and _owner_of(int(recorded.split()[0])) == recorded:
            continue  # a live run (another pytest)
        mine = [n for n in names if n.startswith(f"{NS_PREFIX}{run}-")]
        if not owner.exists() and not mine:
            continue
        log(f"sweeping the stale lab {run} (namespaces: {', '.join(mine) or 'none'})")
        Lab(None, run=run, created=mine).down()  # type: ignore[arg-type]


@dataclass
class Host:
    name: str
    ns: str
    ip: str
    prefix: Path
    node: Node | None  # None for the client

    def service(self, name: str) -> dict:
        """How to find, start and stop one daemon of this host (the verifier's netns actions use it too)."""
        p = self.prefix
        if name == "nginx":
            return {"pidFile": str(p / "nginx.pid"), "start": ["nginx", "-p", str(p), "-c", str(p / "nginx.conf")],
                    "foreground": False, "log": str(p / "logs" / "nginx-start.log")}
        if name == "agent":  # the health agent: the same file the VMs run, with a pid file of the lab's
            return {"pidFile": str(p / "agent.pid"),
                    "start": ["sh", "-c", f'echo $$ > {p / "agent.pid"}; exec "$0" "$@"', sys.executable,
                              str(p / "health.py"), str(p / "health.json")],
                    "foreground": True, "log": str(p / "logs" / "agent.log")}
        return {"pidFile": str(p / "keepalived.pid"), "childPidFiles": [str(p / "vrrp.pid")],
                "start": ["keepalived", "-n", "-l", "-G", "-P", "-f", str(p / "keepalived.conf"),
                          "-p", str(p / "keepalived.pid"), "-r", str(p / "vrrp.pid"), "-c", str(p / "checkers.pid")],
                "foreground": True, "log": str(p / "logs" / "keepalived.log")}


@dataclass
class Lab:
    settings: Settings
    auth_passes: dict[str, str] = field(default_factory=dict)  # per balancer; default AUTH_PASS
    run: str = field(default_factory=lambda: f"{os.getpid() % 10000:04d}{secrets.token_hex(2)}")
    hosts: dict[str, Host] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # namespaces, in creation order
    children: list[subprocess.Popen] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return RUN_ROOT / self.run

    @property
    def switch(self) -> str:
        return f"{NS_PREFIX}{self.run}-sw"

    @property
    def client(self) -> Host:
        return self.hosts["client"]

    # ---- build ---------------------------------------------------------------------------------
    def up(self) -> Lab:
        s = self.settings
        t0 = time.monotonic()
        RUN_ROOT.mkdir(mode=0o755, exist_ok=True)
        os.chmod(RUN_ROOT, 0o755)  # keepalived's script security: no writable path component
        self.dir.mkdir(mode=0o755)
        (self.dir / "owner").write_text(_owner_of(os.getpid()))
        for node in s.nodes:
            self.hosts[node.name] = Host(node.name, f"{NS_PREFIX}{self.run}-{node.name}", node.ip,
                                         self.dir / node.name, node)
        self.hosts["client"] = Host("client", f"{NS_PREFIX}{self.run}-client", s.network.gateway, self.dir / "client", None)
        self._network()
        self._files()
        self._firewall()
        for h in self.hosts.values():
            if h.node is not None:
                self.start(h.name, "nginx")
        for b in s.balancers:
            if s.vrrp.health_check or s.nginx.active_check.enabled:
                self.start(b.name, "agent")
        for b in s.balancers:
            self.start(b.name, "keepalived")
        self._wait_for_holder()
        log(f"lab {self.run} up in {time.monotonic() - t0:.1f} s")
        return self

    def _netns_add(self, name: str) -> None:
        if netns.exists(name):
            raise RuntimeError(f"namespace {name} already exists: not reusing what this run did not create")
        sh("ip", "netns", "add", name)
        self.created.append(name)

    def _network(self) -> None:
        sw = self.switch
        self._netns_add(sw)
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", sw, "link", "set", "br0", "up")
        for h in self.hosts.values():
            self._netns_add(h.ns)
            port = f"p-{h.name}"[:15]
            sh("ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
            sh("ip", "-n", sw, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", h.ns, "link", "set", "lo", "up")
            sh("ip", "-n", h.ns, "addr", "add", f"{h.ip}/{self.settings.network.prefixlen}", "dev", "eth0")
            sh("ip", "-n", h.ns, "link", "set", "eth0", "up")

    def _files(self) -> None:
        script_uid = pwd.getpwnam(render.SCRIPT_USER).pw_uid
        for h in self.hosts.values():
            h.prefix.mkdir(mode=0o755)
            (h.prefix / "logs").mkdir(mode=0o755)
            if h.node is None:
                continue
            paths = render.VM_PATHS.under(str(h.prefix))
            (h.prefix / "tmp").mkdir(mode=0o755)
            auth = self.auth_passes.get(h.name, AUTH_PASS)
            for f in render.node_files(self.settings, h.node, auth, paths):
                path = Path(f.path)
                path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                path.write_text(f.content)
                os.chmod(path, int(f.mode, 8))
            if h.node.role == "lb" and paths.state_file:
                Path(paths.state_file).touch(mode=0o644)
                os.chown(paths.state_file, script_uid, -1)  # the notify script runs as script_user

    def _firewall(self) -> None:
        """The nodes' own nftables ruleset (what cloud-init loads on the VMs), loaded inside each host's
        namespace through the guard: its `flush ruleset` must never meet the root namespace's rules."""
        for h in self.hosts.values():
            conf = h.prefix / "nftables.conf"
            if h.node is None or not conf.exists():
                continue
            r = subprocess.run(netns.guarded(h.ns, ["nft", "-f", str(conf)]), capture_output=True, text=True,
                               timeout=30, env=netns.guard_env(), stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise RuntimeError(f"nft -f {conf} in {h.ns}: rc {r.returncode}: {r.stderr.strip()}")

    # ---- processes -----------------------------------------------------------------------------
    def start(self, host: str, service: str) -> int:
        h = self.hosts[host]
        svc = h.service(service)
        with open(svc["log"], "ab") as out:
            child = subprocess.Popen(netns.guarded(h.ns, svc["start"]), stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=netns.guard_env(), start_new_session=True)
        self.children.append(child)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            rc = child.poll()
            if rc not in (None, 0) or (rc == 0 and svc["foreground"]):
                raise RuntimeError(f"{service} on {host} exited rc {rc}: {self.tail(svc['log'])}")
            pid = read_pid(svc["pidFile"])
            if pid and _alive(pid) and netns.process_in(pid, h.ns) and (rc == 0 or svc["foreground"]):
                return pid
            time.sleep(0.05)
        raise RuntimeError(f"{service} on {host}: no live pid in {svc['pidFile']} after 15 s: {self.tail(svc['log'])}")

    def stop(self, host: str, service: str, sig: int = signal.SIGTERM) -> None:
        h = self.hosts[host]
        pid = read_pid(h.service(service)["pidFile"])
        if pid and _alive(pid) and netns.process_in(pid, h.ns):
            os.kill(pid, sig)
            deadline = time.monotonic() + STOP_WAIT
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def kill_keepalived(self, host: str) -> None:
        """SIGKILL keepalived's VRRP child and parent: nobody removes the VIP from the interface."""
        h = self.hosts[host]
        svc = h.service("keepalived")
        for f in [*svc["childPidFiles"], svc["pidFile"]]:
            pid = read_pid(f)
            if pid and _alive(pid) and netns.process_in(pid, h.ns):
                os.kill(pid, signal.SIGKILL)

    @staticmethod
    def tail(path: str, n: int = 5) -> str:
        try:
            return " | ".join(Path(path).read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def holders(self) -> list[str]:
        out = []
        for b in self.settings.balancers:
            r = sh("ip", "-n", self.hosts[b.name].ns, "-o", "addr", "show", "dev", self.settings.vrrp.interface,
                   check=False)
            if f"inet {self.settings.vip}/" in r.stdout:
                out.append(b.name)
        return out

    def _wait_for_holder(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.holders():
            time.sleep(0.2)

    # ---- the verifier --------------------------------------------------------------------------
    def spec(self, settings: Settings | None = None, **overrides) -> dict:
        """The verifier spec of `settings` (default: the deployed ones) with netns actions on this lab."""
        from components.cluster import verifier_spec  # imports pulumi: only when needed

        spec = verifier_spec(settings or self.settings)
        hosts = {b.name: {"netns": self.hosts[b.name].ns, "keepalived": self.hosts[b.name].service("keepalived"),
                          "nginx": self.hosts[b.name].service("nginx"),
                          "healthState": str(self.hosts[b.name].prefix / "health-state.json")}
                 for b in self.settings.balancers}
        hosts.update({w.name: {"netns": self.hosts[w.name].ns, "nginx": self.hosts[w.name].service("nginx")}
                      for w in self.settings.web_nodes})
        spec.update(netns=self.client.ns, actions="netns", timeout=30, stepTimeout=15, hosts=hosts)
        spec.update(overrides)
        return spec

    def verify(self, spec: dict, timeout: float = 300) -> tuple[int, dict, str]:
        """Run the real verifier from the root namespace; it re-execs itself into the client namespace."""
        env = {k: v for k, v in os.environ.items() if k != "HACLUSTER_SSH_KEY"}
        env["HACLUSTER_VERIFY_SPEC"] = json.dumps(spec)
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "verifier"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        print(r.stderr, file=sys.stderr)
        log(f"verifier rc {r.returncode} after {time.monotonic() - t0:.1f} s")
        try:
            report = json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"verifier stdout is not one JSON report ({e}): {r.stdout[:500]!r}") from e
        return r.returncode, report, r.stderr

    # ---- teardown ------------------------------------------------------------------------------
    def _our_pids(self) -> list[int]:
        """Every process living in one of this lab's namespaces (by namespace inode, not by name)."""
        ids = set()
        for name in self.created:
            try:
                ids.add(netns.ns_id(netns.named(name)))
            except OSError:
                pass
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if netns.ns_id(d / "ns" / "net") in ids and _alive(int(d.name)):
                        pids.append(int(d.name))
                except OSError:
                    continue
        return pids

    def down(self) -> None:
        problems = []
        for h in self.hosts.values():  # SIGTERM through the pid files first (nginx: on its master)
            if h.node is not None and h.node.role == "lb":
                self._safe(problems, self.stop, h.name, "keepalived")
                self._safe(problems, self.stop, h.name, "agent")
        for h in self.hosts.values():
            if h.node is not None:
                self._safe(problems, self.stop, h.name, "nginx")
        for sig in (signal.SIGTERM, signal.SIGKILL):  # whatever is still in our namespaces
            left = self._our_pids()
            if not left:
                break
            log(f"sweeping {len(left)} leftover processes in lab namespaces with {sig.name}: {left}")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self._our_pids():
                time.sleep(0.1)
        for child in self.children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                problems.append(f"child {child.pid} did not exit")
        reap()
        for name in reversed(self.created):
            r = sh("ip", "netns", "del", name, check=False)
            if r.returncode != 0:
                problems.append(f"ip netns del {name}: {r.stderr.strip()}")
        self.created.clear()
        if self.dir.exists() and self.dir.parent == RUN_ROOT and self.run:
            shutil.rmtree(self.dir, ignore_errors=True)
        if problems:
            log("teardown problems: " + "; ".join(problems))

    @staticmethod
    def _safe(problems: list[str], fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:
            problems.append(f"{fn.__name__}{args}: {e}")
