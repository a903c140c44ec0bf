"""How the verifier reaches the balancers: over SSH (VMs) or through network namespaces (integration tier).

Both offer the same small surface; every check and drill step is written once, in verifier.run, on top of it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

from . import netns
from .cancel import CANCEL
from .hostkeys import KnownHosts
from .spec import Balancer, Spec, WebNode

# What the lab (make lab HOSTS=2) writes: hosts/<hypervisor> holds the name of that host's namespace.
LAB_RUN_DIR = "/run/hacluster-lab"
QEMU_COMM = "qemu-system"
HOST_KILL_WAIT = 30.0  # s until every killed qemu process is gone
HOST_RETURN_WAIT = 60.0  # s libvirt may take to notice a killed qemu (the domain still "running")
NEEDS_LAB_HOST = "needs a lab hypervisor namespace: ssh actions only"
PROC = "/proc"  # tests point it at a fake proc dir
# virsh start of a domain libvirt still believes runs (its qemu was just killed)
STILL_RUNNING = re.compile(r"already (active|running)", re.IGNORECASE)

SERVICES = ("keepalived", "nginx")
# Where the VMs keep keepalived's config (model.render.VM_PATHS.keepalived_conf; a unit test keeps them equal).
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
# The vrrp_instance's `priority N` line (the config has no other line starting with `priority`).
PRIORITY_LINE = re.compile(r"^(\s*priority\s+)[0-9]+\s*$", re.MULTILINE)


def with_priority(conf: str, priority: int) -> str:
    """keepalived.conf text with the vrrp_instance priority set to `priority` (exactly one such line)."""
    new, n = PRIORITY_LINE.subn(lambda m: f"{m.group(1)}{priority}", conf)
    if n != 1:
        raise ActionError(f"expected one 'priority N' line in keepalived.conf, found {n}")
    return new


class ActionError(RuntimeError):
    """An action could not be carried out (one line, for the report)."""


class HostKeyRefused(ActionError):
    """A node presented another SSH host key than the stack's: nothing more is asked of it (one line)."""


class Actions:
    """What the checks need from a balancer. `poll_interval` is how often reading the holders is cheap."""

    poll_interval = 0.5

    def ready(self, lb: Balancer) -> str | None:
        """None when the balancer can be reached for the actions below, else why not."""
        raise NotImplementedError

    def addresses(self, lb: Balancer) -> str:
        """`ip -o addr show dev <interface>` on the balancer."""
        raise NotImplementedError

    def stop(self, lb: Balancer, service: str) -> None:
        raise NotImplementedError

    def start(self, lb: Balancer, service: str) -> None:
        raise NotImplementedError

    def pause(self, lb: Balancer) -> None:
        """Hard failure: freeze the whole balancer (it neither answers nor says goodbye)."""
        raise NotImplementedError

    def resume(self, lb: Balancer) -> None:
        raise NotImplementedError

    def kill(self, lb: Balancer, service: str) -> None:
        """Crash: SIGKILL every process of `service` (no clean shutdown); `start` brings it back."""
        raise NotImplementedError

    def power_off(self, lb: Balancer) -> None:
        """Pull the plug: the balancer is gone at once; `power_on` boots it from scratch."""
        raise NotImplementedError

    def power_on(self, lb: Balancer) -> None:
        raise NotImplementedError

    def set_priority(self, lb: Balancer, priority: int) -> None:
        """Planned maintenance: rewrite the balancer's VRRP priority in its keepalived config and reload
        keepalived (no restart: it keeps running and hands the VIP over by the protocol)."""
        raise NotImplementedError

    # ---- what the load drills need (verifier.scenarios) ------------------------------------------
    def web_pause(self, node: WebNode) -> None:
        """Freeze a web node: it neither answers nor resets connections."""
        raise NotImplementedError

    def web_resume(self, node: WebNode) -> None:
        raise NotImplementedError

    def web_power_off(self, node: WebNode) -> None:
        raise NotImplementedError

    def web_power_on(self, node: WebNode) -> None:
        raise NotImplementedError

    def starve(self, lbs: list[Balancer], quota: int | None) -> None:
        """CPU-starve the balancers (quota per 100000 us period), or undo it (None)."""
        raise ActionError("CPU starvation needs libvirt domains: ssh actions (VMs) only")

    def vrrp_cut(self, lb: Balancer, cut: bool) -> None:
        """Drop every VRRP packet in and out of `lb` (cut), or remove that again."""
        raise NotImplementedError

    def host_freeze(self, host: str) -> None:
        """Freeze a whole hypervisor: SIGSTOP every qemu process of its lab namespace."""
        raise ActionError(f"host_freeze {NEEDS_LAB_HOST}")

    def host_kill(self, host: str) -> None:
        """Kill a whole hypervisor's VMs: SIGKILL every qemu process of its lab namespace, wait until gone."""
        raise ActionError(f"host_kill {NEEDS_LAB_HOST}")

    def host_thaw(self, host: str) -> None:
        """Undo host_freeze (SIGCONT): cleanup of a drill stopped before the kill."""
        raise ActionError(f"host_thaw {NEEDS_LAB_HOST}")

    def host_return(self, host: str, domains: list[str]) -> None:
        """The hypervisor is back: start `domains` (the stack's domains on it) again."""
        raise ActionError(f"host_return {NEEDS_LAB_HOST}")

    def health_state(self, lb: Balancer) -> dict | None:
        """The health agent's state file on `lb` (None: not readable)."""
        return None

    def vrrp_log(self, lb: Balancer, since: float) -> list[str]:
        """keepalived's log lines on `lb` since the epoch time `since` (the last ones; [] when unknown)."""
        return []

    # ---- what an interrupted drill can leave behind (verifier.run RESIDUE undoes each) -----------------
    def domain_residue(self) -> list[tuple[str, str, str]]:
        """(node or hypervisor, kind, what was seen) for machines a drill left frozen, off or starved:
        kinds "host_frozen", "paused", "shut_off", "starved", "frozen". Looked at first: a paused balancer
        answers nothing else."""
        return []

    def node_residue(self) -> list[tuple[str, str, str]]:
        """(balancer, kind, what was seen) for what a drill left on a running balancer: kinds "vrrp_cut",
        "priority" (not the deployed one). A stopped daemon is not among them: nothing proves that a drill
        stopped it, and the verifier must report a cluster as it finds it."""
        return []

    def close(self) -> None:
        pass


# nft script of the VRRP cut (a table of its own, removed whole by the heal).
CUT_TABLE = "hacluster_drill_cut"
CUT_RULES = (f"table inet {CUT_TABLE} {{\n"
             "  chain in { type filter hook input priority -10; policy accept; ip protocol 112 drop; }\n"
             "  chain out { type filter hook output priority -10; policy accept; ip protocol 112 drop; }\n}\n")
FREEZE_TABLE = "hacluster_drill_freeze"
FREEZE_RULES = (f"table inet {FREEZE_TABLE} {{\n"
                "  chain in { type filter hook input priority -10; policy drop; }\n"
                "  chain out { type filter hook output priority -10; policy drop; }\n}\n")


def _run(argv: list[str], timeout: float, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run `argv` (with `stdin` as its input, if given); a time-out or a missing program is an ActionError."""
    feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    timeout = CANCEL.bound(timeout)  # once cancelled, nothing may outlast the restore budget
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **feed)
    except subprocess.TimeoutExpired as e:
        raise ActionError(f"{argv[0]} timed out after {timeout:g} s") from e
    except OSError as e:
        raise ActionError(f"{argv[0]}: {e}") from e


# One look at a balancer for drill residue (SSH): the cut table, the configured priority.
RESIDUE_PROBE = (f"echo cut=$(sudo -n nft list table inet {CUT_TABLE} >/dev/null 2>&1 && echo 1 || echo 0); "
                 f"echo prio=$(sudo -n grep -Eo '^[[:space:]]*priority[[:space:]]+[0-9]+' {{conf}} | grep -Eo '[0-9]+$'); true")
STARVED_BELOW = 100000  # a vcpu_quota under one whole period (100000 us) is a starve drill's, not libvirt's default
SCHED_QUOTA = re.compile(r"^vcpu_quota\s*:\s*(-?[0-9]+)\s*$", re.MULTILINE)


def parse_residue_probe(lb: Balancer, out: str) -> list[tuple[str, str, str]]:
    """RESIDUE_PROBE's answer as node_residue items."""
    kv = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    found = []
    if kv.get("cut") == "1":
        found.append((lb.name, "vrrp_cut", f"nft table inet {CUT_TABLE} drops VRRP"))
    prio = kv.get("prio", "").strip()
    if prio.isdigit() and int(prio) != lb.priority:
        found.append((lb.name, "priority", f"keepalived priority {prio}, deployed {lb.priority}"))
    return found


def _last_line(text: str) -> str:
    lines = [x.strip() for x in (text or "").splitlines() if x.strip()]
    return lines[-1] if lines else ""


def ssh_argv(user: str, ip: str, key_file: str, known_hosts: str) -> list[str]:
    """ssh to a stack node: its own key only, no agent; the node's host key must be the one the stack made
    for it, pinned in the run's `known_hosts` under the node's IP (verifier/hostkeys.py): nothing is
    trusted on first use, nothing is written back."""
    return ["ssh", "-F", "/dev/null", "-i", key_file, "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"HostKeyAlias={ip}", "-o", "HostKeyAlgorithms=ssh-ed25519", "-o", "CheckHostIP=no",
            "-o", "UpdateHostKeys=no",
            # A loaded host makes a guest slow to answer, not gone: 15 s to connect, 30 s of silence.
            "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=6",
            "-o", "LogLevel=ERROR", f"{user}@{ip}"]


# ----------------------------------------------------------------------------------------------------
class SshActions(Actions):
    """VMs: `sudo systemctl ...` and `ip -o addr` over SSH (key only, the node's host key pinned);
    hard failure through `virsh suspend/resume`, power loss through `virsh destroy/start` of the
    balancer's domain."""

    poll_interval = 0.5

    def __init__(self, spec: Spec, key_file: str | None, known_hosts: KnownHosts | None):
        if not key_file:
            raise ActionError("ssh actions need the private key in env HACLUSTER_SSH_KEY")
        if known_hosts is None:
            raise ActionError("ssh actions need the nodes' host keys in env HACLUSTER_HOST_KEYS")
        self.spec, self.key_file, self.known_hosts = spec, key_file, known_hosts

    def _ssh(self, lb: Balancer, command: str, timeout: float, stdin: str | None = None) -> subprocess.CompletedProcess:
        r = _run([*ssh_argv(self.spec.ssh_user, lb.ip, self.key_file, self.known_hosts.path), command], timeout, stdin)
        if r.returncode == 255:
            refused = self.known_hosts.refusal(lb.name, r.stderr)
            if refused:
                raise HostKeyRefused(refused)
        return r

    def _ssh_ok(self, lb: Balancer, command: str, timeout: float) -> str:
        r = self._ssh(lb, command, timeout)
        if r.returncode != 0:
            raise ActionError(f"ssh {lb.name} {command!r}: rc {r.returncode}: {_last_line(r.stderr) or _last_line(r.stdout)}")
        return r.stdout

    def ready(self, lb: Balancer) -> str | None:
        try:
            self._ssh_ok(lb, "true", 15)
            return None
        except HostKeyRefused:
            raise  # not a node still booting: waiting would not change its key
        except ActionError as e:
            return str(e)

    def addresses(self, lb: Balancer) -> str:
        return self._ssh_ok(lb, f"ip -o addr show dev {self.spec.interface}", 10)

    def stop(self, lb: Balancer, service: str) -> None:
        assert service in SERVICES
        self._ssh_ok(lb, f"sudo -n systemctl stop {service}", 60)

    def start(self, lb: Balancer, service: str) -> None:
        assert service in SERVICES
        self._ssh_ok(lb, f"sudo -n systemctl start {service}", 60)

    def _virsh(self, verb: str, lb: Balancer | WebNode, *args: str) -> None:
        if not lb.domain:
            raise ActionError(f"no libvirt domain known for {lb.name}")
        self._virsh_at(self.spec.uri(lb), verb, lb.domain, *args)

    @staticmethod
    def _virsh_at(uri: str, verb: str, domain: str, *args: str) -> None:
        r = _run(["virsh", "-q", "-c", uri, verb, domain, *args], 60)
        if r.returncode != 0:
            raise ActionError(f"virsh {verb} {domain}: {_last_line(r.stderr)}")

    def web_pause(self, node: WebNode) -> None:
        self._virsh("suspend", node)

    def web_resume(self, node: WebNode) -> None:
        self._virsh("resume", node)

    def web_power_off(self, node: WebNode) -> None:
        self._virsh("destroy", node)

    def web_power_on(self, node: WebNode) -> None:
        self._virsh("start", node)

    def starve(self, lbs: list[Balancer], quota: int | None) -> None:
        q = "-1" if quota is None else str(int(quota))
        for lb in lbs:
            self._virsh("schedinfo", lb, "--live", "--set", f"vcpu_quota={q}", "vcpu_period=100000")

    def vrrp_cut(self, lb: Balancer, cut: bool) -> None:
        # Both are idempotent (the cut adds the same table; the heal succeeds once the table is gone),
        # so a connection that ssh itself lost (exit 255, a loaded host) is tried once more.
        for _ in range(2):
            if cut:
                r = self._ssh(lb, "sudo -n nft -f -", 60, CUT_RULES)
            else:
                r = self._ssh(lb, f"sudo -n nft delete table inet {CUT_TABLE} 2>/dev/null"
                                  f" || ! sudo -n nft list table inet {CUT_TABLE} >/dev/null 2>&1", 60)
            if r.returncode != 255:
                break
        if r.returncode != 0:
            raise ActionError(f"nft on {lb.name}: {_last_line(r.stderr) or f'ssh exit {r.returncode}'}")

    # ---- a whole hypervisor (lab stacks across several hosts) ---------------------------------------
    def _lab_netns(self, host: str) -> str:
        """`host`'s namespace, only when it is provably a lab hypervisor's: named `<spec netns>-...` and
        named so by the lab's marker file hosts/<host>."""
        h = self.spec.hypervisors.get(host)
        if h is None or not h.netns:
            raise ActionError(f"hypervisor {host!r} has no lab namespace in the spec: not touching it")
        prefix = f"{self.spec.netns}-"
        if not self.spec.netns or not h.netns.startswith(prefix) or h.netns == prefix:
            raise ActionError(f"namespace {h.netns!r} of {host} is not a lab hypervisor's ({prefix}*): not touching it")
        if "/" in host or host in (".", ".."):
            raise ActionError(f"invalid hypervisor name {host!r}")
        marker = lab_run_dir() / "hosts" / host
        try:
            named = marker.read_text().strip()
        except OSError:
            raise ActionError(f"{marker} is missing: {h.netns} is not a known lab hypervisor, not touching it") from None
        if named != h.netns:
            raise ActionError(f"{marker} names {named!r}, not {h.netns!r}: not touching it")
        return h.netns

    def _qemu_pids(self, host: str) -> tuple[str, list[int]]:
        """The lab namespace of `host` and its qemu processes (none: an ActionError)."""
        ns = self._lab_netns(host)
        r = _run(["ip", "netns", "pids", ns], 15)
        if r.returncode != 0:
            raise ActionError(f"ip netns pids {ns}: {_last_line(r.stderr)}")
        pids = [int(x) for x in r.stdout.split() if x.isdigit() and _comm(int(x)).startswith(QEMU_COMM)]
        if not pids:
            raise ActionError(f"no {QEMU_COMM} process in namespace {ns} ({host})")
        return ns, pids

    def _signal_qemus(self, host: str, sig: signal.Signals) -> list[int]:
        """Send `sig` to every qemu process of `host`, each re-checked to be in its namespace just before."""
        ns, pids = self._qemu_pids(host)
        sent = []
        for pid in pids:
            if netns.process_in(pid, ns) and _comm(pid).startswith(QEMU_COMM):
                os.kill(pid, sig)
                sent.append(pid)
        if not sent:
            raise ActionError(f"the {QEMU_COMM} processes of {ns} ({host}) went away before {sig.name}")
        return sent

    def host_freeze(self, host: str) -> None:
        self._signal_qemus(host, signal.SIGSTOP)

    def host_thaw(self, host: str) -> None:
        self._signal_qemus(host, signal.SIGCONT)

    def host_kill(self, host: str) -> None:
        pids = self._signal_qemus(host, signal.SIGKILL)
        deadline = time.monotonic() + HOST_KILL_WAIT
        while any(_alive(p) for p in pids):
            if time.monotonic() >= deadline:
                raise ActionError(f"{host}: qemu pids {[p for p in pids if _alive(p)]} still running "
                                  f"{HOST_KILL_WAIT:g} s after SIGKILL")
            time.sleep(0.1)

    def host_return(self, host: str, domains: list[str]) -> None:
        """`virsh start` each domain on `host`'s libvirtd, again while libvirt still calls it running (it
        notices the killed qemu within a moment), for at most HOST_RETURN_WAIT s."""
        self._lab_netns(host)
        if not all(domains):
            raise ActionError(f"{host}: a node without a libvirt domain name: cannot start it again")
        uri = self.spec.hypervisors[host].uri
        deadline = time.monotonic() + HOST_RETURN_WAIT
        failed = []
        for domain in domains:
            while True:
                try:
                    self._virsh_at(uri, "start", domain)
                    break
                except ActionError as e:
                    if not STILL_RUNNING.search(str(e)) or time.monotonic() >= min(
                            deadline, time.monotonic() + CANCEL.remaining() - 1):
                        failed.append(str(e))
                        break
                    time.sleep(0.5)
        if failed:
            raise ActionError(f"{host} back, but " + "; ".join(failed))

    def health_state(self, lb: Balancer) -> dict | None:
        try:
            r = self._ssh(lb, "sudo -n cat /run/hacluster/health-state.json", 15)
            return json.loads(r.stdout) if r.returncode == 0 else None
        except (ActionError, ValueError):
            return None

    def vrrp_log(self, lb: Balancer, since: float) -> list[str]:
        try:
            r = self._ssh(lb, f"sudo -n journalctl -q -u keepalived -o short-unix --no-pager --since @{int(since)}"
                              " | tail -n 40", 20)
        except ActionError:
            return []
        return r.stdout.splitlines() if r.returncode == 0 else []

    def domain_residue(self) -> list[tuple[str, str, str]]:
        found: list[tuple[str, str, str]] = []
        for host, h in self.spec.hypervisors.items():
            if not h.netns:
                continue
            try:
                ns, pids = self._qemu_pids(host)
            except ActionError:
                continue
            stopped = [p for p in pids if _state(p) == "T"]
            if stopped:
                found.append((host, "host_frozen", f"{len(stopped)} qemu processes stopped (SIGSTOP) in {ns}"))
        for node in (*self.spec.balancers, *self.spec.web_nodes):
            if not node.domain:
                continue
            uri = self.spec.uri(node)
            r = _run(["virsh", "-q", "-c", uri, "domstate", node.domain], 30)
            state = r.stdout.strip() if r.returncode == 0 else ""
            if state in ("paused", "shut off"):
                found.append((node.name, state.replace(" ", "_"), f"domain {node.domain} {state}"))
            elif state == "running" and isinstance(node, Balancer):
                r = _run(["virsh", "-c", uri, "schedinfo", node.domain, "--live"], 30)
                m = SCHED_QUOTA.search(r.stdout) if r.returncode == 0 else None
                if m and 0 < int(m.group(1)) < STARVED_BELOW:
                    found.append((node.name, "starved", f"domain {node.domain} vcpu_quota {m.group(1)}"))
        return found

    def node_residue(self) -> list[tuple[str, str, str]]:
        found = []
        for lb in self.spec.balancers:
            r = self._ssh(lb, RESIDUE_PROBE.format(conf=KEEPALIVED_CONF), 30)
            if r.returncode != 0:
                raise ActionError(f"ssh {lb.name}: rc {r.returncode}: {_last_line(r.stderr)}")
            found += parse_residue_probe(lb, r.stdout)
        return found

    def pause(self, lb: Balancer) -> None:
        self._virsh("suspend", lb)

    def resume(self, lb: Balancer) -> None:
        self._virsh("resume", lb)

    def kill(self, lb: Balancer, service: str) -> None:
        assert service in SERVICES
        # systemd signals every process of the unit (master and workers); the unit ends up failed.
        self._ssh_ok(lb, f"sudo -n systemctl kill --signal=SIGKILL {service}", 60)

    def power_off(self, lb: Balancer) -> None:
        self._virsh("destroy", lb)

    def power_on(self, lb: Balancer) -> None:
        self._virsh("start", lb)

    def set_priority(self, lb: Balancer, priority: int) -> None:
        if not 1 <= int(priority) <= 254:
            raise ActionError(f"priority {priority} out of 1..254")
        # The shapes the node's sudoers allows (templates/sudoers.j2): the rendered line is `    priority N`.
        conf, prio = KEEPALIVED_CONF, int(priority)
        self._ssh_ok(lb, f"sudo -n sed -i -E 's/^( *priority )[0-9]+/\\1{prio}/' {conf}"
                         f" && sudo -n grep -Eqx ' *priority {prio}' {conf}"
                         " && sudo -n systemctl reload keepalived", 60)


# ----------------------------------------------------------------------------------------------------
def lab_run_dir() -> Path:
    """Where the lab leaves its markers (env HACLUSTER_LAB_RUN_DIR for tests)."""
    return Path(os.environ.get("HACLUSTER_LAB_RUN_DIR") or LAB_RUN_DIR)


def _comm(pid: int) -> str:
    """The process's name (/proc/PID/comm); "" when it is gone."""
    try:
        return Path(f"{PROC}/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _state(pid: int) -> str:
    """The process's state letter (R, S, T stopped, Z, ...); "" when it is gone."""
    try:
        stat = Path(f"{PROC}/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2:][:1]


def _alive(pid: int) -> bool:
    """Running (a zombie is not: nobody may have reaped it yet)."""
    return _state(pid) not in ("Z", "X", "")


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(d.name))
    return out


def read_pid(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class NetnsActions(Actions):
    """Integration tier: each balancer is a network namespace running a real keepalived and nginx.

    Processes are found through their pid files only, and signalled only after checking that they live in
    the balancer's namespace. Starts go through `verifier.guard`, which refuses the root namespace."""

    poll_interval = 0.1
    STOP_WAIT = 10.0
    START_WAIT = 15.0

    def __init__(self, spec: Spec):
        self.spec = spec
        self._children: list[subprocess.Popen] = []
        self._paused: dict[str, list[int]] = {}

    def _host(self, lb: Balancer) -> dict:
        return self.spec.hosts[lb.name]

    def _ns(self, lb: Balancer) -> str:
        return self._host(lb)["netns"]

    def _svc(self, lb: Balancer, service: str) -> dict:
        assert service in SERVICES
        return self._host(lb)[service]

    def _pid(self, lb: Balancer, pid_file: str) -> int | None:
        """The live pid in `pid_file`, if it is a process in lb's namespace."""
        pid = read_pid(pid_file)
        if pid is None or not _alive(pid):
            return None
        if not netns.process_in(pid, self._ns(lb)):
            raise ActionError(f"pid {pid} of {pid_file} is not in namespace {self._ns(lb)}: not touching it")
        return pid

    def ready(self, lb: Balancer) -> str | None:
        if not netns.exists(self._ns(lb)):
            return f"network namespace {self._ns(lb)} does not exist"
        return None

    def addresses(self, lb: Balancer) -> str:
        r = _run(["ip", "-n", self._ns(lb), "-o", "addr", "show", "dev", self.spec.interface], 10)
        if r.returncode != 0:
            raise ActionError(f"ip -n {self._ns(lb)} addr: {_last_line(r.stderr)}")
        return r.stdout

    def running(self, lb: Balancer, service: str) -> bool:
        return self._pid(lb, self._svc(lb, service)["pidFile"]) is not None

    def stop(self, lb: Balancer, service: str) -> None:
        svc = self._svc(lb, service)
        pid = self._pid(lb, svc["pidFile"])
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)  # keepalived: priority 0 advert, VIP released; nginx: fast shutdown
        deadline = time.monotonic() + self.STOP_WAIT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            raise ActionError(f"{service} (pid {pid}) on {lb.name} still running {self.STOP_WAIT:g} s after SIGTERM")

    def start(self, lb: Balancer, service: str) -> None:
        svc = self._svc(lb, service)
        if self._pid(lb, svc["pidFile"]) is not None:
            return
        log = open(svc.get("log") or os.devnull, "ab")
        try:
            child = subprocess.Popen(netns.guarded(self._ns(lb), list(svc["start"])), stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, env=netns.guard_env(),
                                     start_new_session=True, close_fds=True)
        finally:
            log.close()
        self._children.append(child)
        deadline = time.monotonic() + self.START_WAIT
        while time.monotonic() < deadline:
            rc = child.poll()
            if rc not in (None, 0) or (rc == 0 and svc.get("foreground")):
                raise ActionError(f"starting {service} on {lb.name} failed (rc {rc}); see {svc.get('log')}")
            if self._pid(lb, svc["pidFile"]) is not None and (rc == 0 or svc.get("foreground")):
                return
            time.sleep(0.05)
        raise ActionError(f"{service} on {lb.name} did not write {svc['pidFile']} within {self.START_WAIT:g} s")

    def _freeze_list(self, lb: Balancer) -> list[int]:
        """keepalived's VRRP child first (it sends the adverts), then its parent, then nginx's workers and master."""
        pids: list[int] = []
        ka, ng = self._svc(lb, "keepalived"), self._svc(lb, "nginx")
        for f in [*ka.get("childPidFiles", []), ka["pidFile"]]:
            pid = self._pid(lb, f)
            if pid:
                pids.append(pid)
        master = self._pid(lb, ng["pidFile"])
        if master:
            pids += [p for p in _children(master) if netns.process_in(p, self._ns(lb))] + [master]
        return pids

    def pause(self, lb: Balancer) -> None:
        pids = self._freeze_list(lb)
        if not pids:
            raise ActionError(f"nothing runs on {lb.name} to pause")
        self._paused[lb.name] = pids
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)

    def resume(self, lb: Balancer) -> None:
        """SIGCONT what pause stopped; without a record of it (another run paused it), every stopped
        process of the freeze list."""
        pids = self._paused.pop(lb.name, None)
        if pids is None:
            pids = [p for p in self._freeze_list(lb) if _state(p) == "T"]
        for pid in reversed(pids):
            if netns.process_in(pid, self._ns(lb)):
                os.kill(pid, signal.SIGCONT)

    def kill(self, lb: Balancer, service: str) -> None:
        """SIGKILL the service's main process, then its children (all checked to be in lb's namespace).
        The main process goes first: a master still alive would respawn a killed worker, and that orphan
        would keep serving (and holding the port) after the crash."""
        svc = self._svc(lb, service)
        main = self._pid(lb, svc["pidFile"])
        pids = [main] if main else []
        if main:
            pids += [p for p in _children(main) if netns.process_in(p, self._ns(lb))]
        pids += [p for p in (self._pid(lb, f) for f in svc.get("childPidFiles", [])) if p and p not in pids]
        if not pids:
            raise ActionError(f"{service} does not run on {lb.name}: nothing to kill")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + self.STOP_WAIT
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    def power_off(self, lb: Balancer) -> None:
        raise ActionError("poweroff needs a machine to switch off: ssh actions (VMs) only")

    def power_on(self, lb: Balancer) -> None:
        raise ActionError("poweroff needs a machine to switch off: ssh actions (VMs) only")

    def set_priority(self, lb: Balancer, priority: int) -> None:
        """Rewrite the priority in the config keepalived was started with (`-f FILE`), then SIGHUP it."""
        svc = self._svc(lb, "keepalived")
        argv = list(svc["start"])
        if "-f" not in argv[:-1]:
            raise ActionError(f"keepalived on {lb.name} is not started with -f FILE: cannot change its priority")
        conf = Path(argv[argv.index("-f") + 1])
        # A new file renamed over the old one: whoever reads it (keepalived, a test) sees one or the other.
        tmp = conf.with_name(f".{conf.name}.{os.getpid()}")
        tmp.write_text(with_priority(conf.read_text(), priority))
        os.chmod(tmp, stat.S_IMODE(conf.stat().st_mode))
        os.replace(tmp, conf)
        pid = self._pid(lb, svc["pidFile"])
        if pid is None:
            raise ActionError(f"keepalived does not run on {lb.name}: nothing to reload")
        os.kill(pid, signal.SIGHUP)

    # ---- load drills -------------------------------------------------------------------------------
    def _web(self, node: WebNode) -> dict:
        h = self.spec.hosts.get(node.name)
        if not isinstance(h, dict) or not h.get("netns"):
            raise ActionError(f"hosts.{node.name}: netns actions on a web node need its namespace")
        return h

    def _nft(self, ns: str, script: str) -> None:
        r = _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], 30, script)
        if r.returncode != 0:
            raise ActionError(f"nft in {ns}: {_last_line(r.stderr)}")

    def _nginx_pids(self, ns: str, svc: dict) -> list[int]:
        pid = read_pid(svc["pidFile"])
        if pid is None or not _alive(pid) or not netns.process_in(pid, ns):
            return []
        return [pid, *[p for p in _children(pid) if netns.process_in(p, ns)]]

    def web_pause(self, node: WebNode) -> None:
        """A frozen machine: no packet in or out (a drop-all table), its nginx stopped (SIGSTOP)."""
        h = self._web(node)
        self._nft(h["netns"], FREEZE_RULES)
        pids = self._nginx_pids(h["netns"], h["nginx"])
        self._paused[node.name] = pids
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)

    def web_resume(self, node: WebNode) -> None:
        h = self._web(node)
        pids = self._paused.pop(node.name, None)
        if pids is None:
            pids = [p for p in self._nginx_pids(h["netns"], h["nginx"]) if _state(p) == "T"]
        for pid in pids:
            if netns.process_in(pid, h["netns"]):
                os.kill(pid, signal.SIGCONT)
        self._nft_delete(h["netns"], FREEZE_TABLE)

    def _has_table(self, ns: str, table: str) -> bool:
        return _run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", table], 30).returncode == 0

    def _nft_delete(self, ns: str, table: str) -> None:
        """Delete the table; one already gone is fine (a heal may run twice)."""
        if self._has_table(ns, table):
            self._nft(ns, f"delete table inet {table}\n")

    def _link(self, node: WebNode, state: str) -> None:
        ns = self._web(node)["netns"]
        r = _run(["ip", "-n", ns, "link", "set", "eth0", state], 10)
        if r.returncode != 0:
            raise ActionError(f"ip -n {ns} link set eth0 {state}: {_last_line(r.stderr)}")

    def web_power_off(self, node: WebNode) -> None:
        """Gone from the wire: its link down (no ARP answer, no reset)."""
        self._link(node, "down")

    def web_power_on(self, node: WebNode) -> None:
        self._link(node, "up")

    def vrrp_cut(self, lb: Balancer, cut: bool) -> None:
        if cut:
            self._nft(self._ns(lb), CUT_RULES)
        else:
            self._nft_delete(self._ns(lb), CUT_TABLE)

    def _conf_priority(self, lb: Balancer) -> int | None:
        argv = list(self._svc(lb, "keepalived")["start"])
        if "-f" not in argv[:-1]:
            return None
        try:
            m = PRIORITY_LINE.search(Path(argv[argv.index("-f") + 1]).read_text())
        except OSError:
            return None
        return int(m.group(0).split()[-1]) if m else None

    def domain_residue(self) -> list[tuple[str, str, str]]:
        found = []
        for lb in self.spec.balancers:
            stopped = [p for p in self._freeze_list(lb) if _state(p) == "T"]
            if stopped:
                found.append((lb.name, "paused", f"{len(stopped)} processes stopped (SIGSTOP) in {self._ns(lb)}"))
        for node in self.spec.web_nodes:
            h = self.spec.hosts.get(node.name)
            if not isinstance(h, dict) or not h.get("netns") or not netns.exists(h["netns"]):
                continue
            if self._has_table(h["netns"], FREEZE_TABLE):
                found.append((node.name, "frozen", f"nft table inet {FREEZE_TABLE} drops everything"))
            r = _run(["ip", "-n", h["netns"], "-o", "link", "show", "eth0"], 10)
            if r.returncode == 0 and "state DOWN" in r.stdout:
                found.append((node.name, "shut_off", "eth0 down"))
        return found

    def node_residue(self) -> list[tuple[str, str, str]]:
        found = []
        for lb in self.spec.balancers:
            if self._has_table(self._ns(lb), CUT_TABLE):
                found.append((lb.name, "vrrp_cut", f"nft table inet {CUT_TABLE} drops VRRP"))
            prio = self._conf_priority(lb)
            if prio is not None and prio != lb.priority:
                found.append((lb.name, "priority", f"keepalived priority {prio}, deployed {lb.priority}"))
        return found

    def health_state(self, lb: Balancer) -> dict | None:
        path = self._host(lb).get("healthState")
        try:
            return json.loads(Path(path).read_text()) if path else None
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        for child in self._children:  # reap what already exited; daemons stay up (the cluster as found)
            child.poll()
