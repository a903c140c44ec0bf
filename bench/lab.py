"""What the bench reads from the lab and the host: libvirt objects, the machine, qemu's memory, wrk.

Every connection to a lab address starts inside the lab namespace (`ip netns exec halab ...`); libvirt
is reached over its unix socket. Every command is bounded in time.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .stats import parse_wrk

NETNS = os.environ.get("HACLUSTER_NETNS", "halab")
URI = "qemu:///system"
QEMU_RUN = Path("/run/libvirt/qemu")


def progress(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run(argv: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def virsh(*args: str, timeout: float = 60, uri: str = URI) -> str:
    return run(["virsh", "-q", "-c", uri, *args], timeout=timeout).stdout


def lab_exec(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run `argv` inside the lab namespace (the only place lab addresses are reached from)."""
    if not Path(f"/run/netns/{NETNS}").exists():
        raise RuntimeError(f"the lab namespace {NETNS} does not exist (make lab)")
    return run(["ip", "netns", "exec", NETNS, *argv], timeout=timeout)


# ---- libvirt objects -----------------------------------------------------------------------------
def domains(uri: str = URI) -> list[str]:
    return virsh("list", "--all", "--name", uri=uri).split()


def libvirt_objects(stack: str, uris: tuple[str, ...] = (URI,)) -> list[str]:
    """What libvirt (each of `uris`: the stack's hypervisors) still holds of `stack` (domains, its network,
    its pool): empty after a clean destroy."""
    found = []
    for uri in uris:
        at = "" if uri == URI else f" on {uri.split('?')[0]}"
        found += [f"domain {d}{at}" for d in domains(uri) if d.startswith(f"{stack}-")]
        found += [f"network {n}{at}" for n in virsh("net-list", "--all", "--name", uri=uri).split()
                  if n == f"hacluster-{stack}"]
        found += [f"pool {p}{at}" for p in virsh("pool-list", "--all", "--name", uri=uri).split()
                  if p == f"hacluster-{stack}"]
    return found


def e2e_runs() -> list[str]:
    """Running e2e test sessions (`make test`, `make test-e2e`, pytest on tests/e2e), from /proc (read only)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        pytest_e2e = "pytest" in " ".join(words[:3]) and any("tests/e2e" in w for w in words)
        make_test = bool(words) and words[0].endswith("make") and bool({"test", "test-e2e"} & set(words[1:]))
        if pytest_e2e or make_test:
            found.append(f"pid {d.name} ({' '.join(words)[:60]})")
    return found


def lab_busy(root: Path) -> list[str]:
    """Signs that an e2e run (the lead's `make test`) uses the lab or is about to: e2e-* domains, e2e stack
    files, a running e2e test session."""
    busy = [f"domain {d}" for d in domains() if d.startswith("e2e-")]
    busy += [f"stack file {p.name}" for p in sorted(root.glob("Pulumi.e2e-*.yaml"))]
    busy += [f"e2e session {p}" for p in e2e_runs()]
    return busy


def wait_for_lab(root: Path, poll_s: float = 30, max_s: float = 40 * 60) -> None:
    """Wait (poll every 30 s, at most 40 min) until no e2e stack uses the lab; raise when it stays busy."""
    deadline = time.monotonic() + max_s
    for _ in range(int(max_s / poll_s) + 2):
        busy = lab_busy(root)
        if not busy:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the lab stayed busy for {max_s / 60:.0f} min: {', '.join(busy)}")
        progress(f"the lab is in use ({', '.join(busy)}); waiting {poll_s:g} s")
        time.sleep(poll_s)
    raise RuntimeError(f"the lab stayed busy: {', '.join(lab_busy(root))}")


def subnets_in_use() -> dict[str, str]:
    """IPv4 addresses of every libvirt network (name -> address), to keep off other stacks' subnets."""
    out = {}
    for n in virsh("net-list", "--all", "--name").split():
        m = re.search(r"<ip\b[^>]*\baddress=['\"]([0-9.]+)['\"]", virsh("net-dumpxml", n))
        if m:
            out[n] = m.group(1)
    return out


# ---- the machine ---------------------------------------------------------------------------------
def machine(domain: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "kernel": platform.release(), "arch": platform.machine()}
    try:
        mem = Path("/proc/meminfo").read_text()
        info["memory_gib"] = round(int(re.search(r"MemTotal:\s+([0-9]+) kB", mem).group(1)) / 2**20, 1)
    except (OSError, AttributeError):
        info["memory_gib"] = None
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", cpu, re.MULTILINE)
        info["cpu_model"] = m.group(1).strip() if m else platform.processor() or None
    except OSError:
        info["cpu_model"] = None
    info["kvm_device"] = os.path.exists("/dev/kvm")
    try:
        info["qemu"] = run(["qemu-system-x86_64", "--version"], 20).stdout.splitlines()[0].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        info["qemu"] = None
    m = re.search(r"Using library: (libvirt [0-9.]+)", virsh("version"))
    info["libvirt"] = m.group(1) if m else None
    info["domain_type"] = domain_type(domain) if domain else None
    return info


def domain_type(domain: str) -> str | None:
    """'qemu' (TCG) or 'kvm', from the running domain's XML."""
    m = re.search(r"<domain\b[^>]*\btype=['\"]([a-z]+)['\"]", virsh("dumpxml", domain))
    return m.group(1) if m else None


def qemu_rss_mib(domain: str) -> float | None:
    """Host RSS of the domain's qemu process: pid from /run/libvirt/qemu/<domain>.pid, VmRSS from /proc."""
    pid = qemu_pid(domain)
    if pid is None:
        return None
    try:
        m = re.search(r"^VmRSS:\s+([0-9]+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    except (OSError, ValueError):
        return None
    return round(int(m.group(1)) / 1024, 1) if m else None


def qemu_pid(domain: str) -> int | None:
    try:
        pid = int((QEMU_RUN / f"{domain}.pid").read_text().strip())
        return pid if Path(f"/proc/{pid}/comm").read_text().startswith("qemu") else None
    except (OSError, ValueError):
        return None


def cpu_snapshot(stack: str) -> dict[str, Any]:
    """Wall clock, the host's busy/total CPU seconds (/proc/stat) and each of the stack's qemu processes'
    CPU seconds (utime + stime of /proc/PID/stat), keyed by node name."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8]) / tick
    idle = (fields[3] + fields[4]) / tick
    qemu = {}
    for d in domains():
        if d.startswith(f"{stack}-"):
            pid = qemu_pid(d)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text() if pid else ""
            except OSError:
                stat = ""
            if stat:
                rest = stat[stat.rindex(")") + 2:].split()
                qemu[d[len(stack) + 1:]] = (int(rest[11]) + int(rest[12])) / tick
    return {"t": time.monotonic(), "host": (total - idle, total), "qemu": qemu}


def serial_log(domain: str) -> str:
    """The guest's serial console as virtlogd keeps it (templates/domain-tcg.xsl adds the <log>)."""
    try:
        return Path(f"/var/log/libvirt/qemu/{domain}-serial0.log").read_text(errors="replace")
    except OSError:
        return ""


BLAME = ("systemd-analyze blame --no-pager 2>/dev/null | head -n {n}; echo '--- cloud-init'; "
         "sudo -n cloud-init analyze blame 2>/dev/null | grep -E '^ +[0-9]' | head -n {n}")


def blame(nodes: dict[str, str], user: str, key_file: str, host_keys: dict[str, str],
          n: int = 8) -> dict[str, dict[str, list[str]]]:
    """Per node (name -> ip): the slowest systemd units and cloud-init steps of its boot, as the guest
    itself measured them (`systemd-analyze blame`, `cloud-init analyze blame`), over SSH from inside
    the lab namespace, each node's host key pinned (`host_keys`: the stack output hostKeys). A node that
    cannot be read, or presents another host key, gets an `error`."""
    from verifier import hostkeys
    from verifier.actions import ssh_argv

    out: dict[str, dict[str, list[str]]] = {}
    try:
        known = hostkeys.KnownHosts(hostkeys.parse(json.dumps(host_keys), sorted(nodes)), nodes)
    except hostkeys.HostKeyError as e:
        return {name: {"error": [str(e)]} for name in nodes}
    with known:
        for name, ip in nodes.items():
            try:
                r = lab_exec([*ssh_argv(user, ip, key_file, known.path), BLAME.format(n=int(n))], timeout=180)
            except (subprocess.TimeoutExpired, RuntimeError) as e:
                out[name] = {"error": [f"{type(e).__name__}: {e}"]}
                continue
            refused = known.refusal(name, r.stderr) if r.returncode == 255 else None
            if refused:
                out[name] = {"error": [refused]}
                continue
            _blamed(out, name, r)
    return out


def _blamed(out: dict, name: str, r: subprocess.CompletedProcess) -> None:
    """The node's BLAME output into out[name]."""
    systemd, _, ci = r.stdout.partition("--- cloud-init")
    out[name] = {"systemd": [x.strip() for x in systemd.splitlines() if x.strip()],
                 "cloud_init": [x.strip() for x in ci.splitlines() if x.strip()]}
    if r.returncode != 0 and not r.stdout.strip():
        out[name]["error"] = [r.stderr.strip()[-200:] or f"ssh exit {r.returncode}"]


def memory(stack: str) -> dict[str, Any]:
    per_vm = {d: qemu_rss_mib(d) for d in domains() if d.startswith(f"{stack}-")}
    known = [v for v in per_vm.values() if v is not None]
    return {"per_vm_mib": per_vm, "total_mib": round(sum(known), 1) if known else None,
            "max_mib": max(known) if known else None}


# ---- load ----------------------------------------------------------------------------------------
def wrk(url: str, host: str, seconds: int = 10, connections: int = 8, threads: int = 1) -> dict[str, Any]:
    """One bounded wrk run from inside the lab namespace (wrk stops itself after `seconds`)."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency",
            "-H", f"Host: {host}", url]
    r = lab_exec(argv, timeout=seconds + 30)
    out = parse_wrk(r.stdout)
    out.update(url=url, rc=r.returncode)
    if r.returncode != 0:
        out["error"] = (r.stderr or r.stdout).strip()[-300:]
    return out
