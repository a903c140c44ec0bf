"""Pure figures: summaries of repeated measurements, wrk's output, and the targets' verdicts."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any


# ---- summaries -------------------------------------------------------------------------------------
def summary(values: Iterable[float | int | None]) -> dict[str, Any]:
    """median, min, max and n of the values that were measured (None: not measured)."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3), "n": len(xs)}


# ---- wrk ---------------------------------------------------------------------------------------------
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_LAT = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([0-9.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*([0-9]+) requests in ([0-9.]+)(us|ms|s|m|h)", re.MULTILINE)
_NON2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+([0-9]+)", re.MULTILINE)
_SOCKET = re.compile(r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)")


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/sec, p50/p99 latency (ms; needs --latency), requests, non-2xx/3xx and socket errors."""
    out: dict[str, Any] = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": None, "non_2xx": 0, "socket_errors": 0}
    m = _RPS.search(text)
    if m:
        out["rps"] = float(m.group(1))
    for pct, value, unit in _LAT.findall(text):
        if pct in ("50", "99"):
            out[f"p{pct}_ms"] = round(float(value) * _UNITS[unit], 3)
    m = _TOTAL.search(text)
    if m:
        out["requests"] = int(m.group(1))
    m = _NON2XX.search(text)
    if m:
        out["non_2xx"] = int(m.group(1))
    m = _SOCKET.search(text)
    if m:
        out["socket_errors"] = sum(int(x) for x in m.groups())
    return out


def wrk_ok(r: Mapping[str, Any]) -> bool:
    """A run whose figures mean something: requests answered, none failed."""
    return bool(r.get("rps")) and bool(r.get("requests")) and not r.get("non_2xx") and not r.get("socket_errors")


# ---- guests' boot (serial console) ---------------------------------------------------------------------
_CI_RUN = re.compile(r"Cloud-init v\. \S+ running '([a-z:-]+)' at [^\n]*?Up ([0-9.]+) seconds")
_CI_DONE = re.compile(r"Cloud-init v\. \S+ finished at [^\n]*?Up ([0-9.]+) seconds")
CI_STAGES = {"init-local": "init_local", "init": "init", "modules:config": "config", "modules:final": "final"}


def cloud_init_stages(serial: str) -> dict[str, float]:
    """Guest uptime (s) when each cloud-init stage started and when it finished, for the LAST boot in a
    serial console log (a log can hold several boots: a power-off drill reboots the node)."""
    last = serial.rfind("running 'init-local'")
    if last < 0:
        return {}
    text = serial[serial.rfind("\n", 0, last) + 1:]
    out = {CI_STAGES[stage]: float(up) for stage, up in _CI_RUN.findall(text) if stage in CI_STAGES}
    m = _CI_DONE.search(text)
    if m:
        out["done"] = float(m.group(1))
    return out


def boot_phases(stages: dict[str, float]) -> dict[str, float]:
    """Durations from cloud_init_stages: kernel+systemd until cloud-init, its local+network stages,
    the config modules, the final modules (runcmd: nft, nginx, keepalived), and the total."""
    out = {}
    # The golden image folds the config stage away: its local+network stages then run until 'final'.
    after_init = "config" if "config" in stages else "final"
    for key, a, b in (("kernel_systemd_s", None, "init_local"), ("ci_init_s", "init_local", after_init),
                      ("ci_config_s", "config", "final"), ("ci_final_s", "final", "done"), ("ready_s", None, "done")):
        if b in stages and (a is None or a in stages):
            out[key] = round(stages[b] - (stages[a] if a else 0.0), 1)
    return out


# ---- CPU -----------------------------------------------------------------------------------------------
def cpu_usage(before: dict[str, Any], after: dict[str, Any], requests: int | None = None,
              balancers: Iterable[str] = ()) -> dict[str, Any]:
    """From two cpu snapshots ({"t": wall s, "host": (busy s, total s), "qemu": {vm: cpu s}}): host cores
    busy, cores per VM, and VM CPU milliseconds per request (all VMs, the balancers, the web nodes)."""
    lbs = set(balancers)
    wall = after["t"] - before["t"]
    if wall <= 0:
        return {}
    busy = (after["host"][0] - before["host"][0]) / wall
    per_vm = {vm: round((after["qemu"][vm] - before["qemu"][vm]) / wall, 3)
              for vm in after["qemu"] if vm in before["qemu"]}
    out: dict[str, Any] = {"host_busy_cores": round(busy, 3), "vm_cores": per_vm,
                           "vm_cores_total": round(sum(per_vm.values()), 3)}
    if requests:
        ms = {vm: c * wall * 1000 / requests for vm, c in per_vm.items()}
        out["vm_cpu_ms_per_request"] = round(sum(ms.values()), 3)
        out["lb_cpu_ms_per_request"] = round(sum(v for k, v in ms.items() if k in lbs), 3)
        out["web_cpu_ms_per_request"] = round(sum(v for k, v in ms.items() if k not in lbs), 3)
    return out


# ---- targets -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    key: str
    title: str
    limit: float
    op: str  # "<=" or ">="
    unit: str  # "s", "probes", "x", "GiB"
    stat: str  # which statistic is compared: "median", "max" or "value"


TARGETS: tuple[Target, ...] = (
    Target("cold_up", "verified cluster from cold (`pulumi up`)", 60, "<=", "s", "median"),
    Target("noop_up", "no-change `pulumi up`", 10, "<=", "s", "median"),
    Target("fast_hard", "fast profile: frozen (paused) master replaced", 0.5, "<=", "s", "median"),
    Target("fast_poweroff", "fast profile: powered-off master replaced", 0.5, "<=", "s", "median"),
    Target("fast_keepalived", "fast profile: graceful stop (keepalived) replaced", 0.3, "<=", "s", "median"),
    Target("reference_nginx_kill", "reference profile: the VIP serves again after nginx is SIGKILLed on the master",
           3, "<=", "s", "median"),
    Target("fast_nginx_kill", "fast profile: the VIP serves again after nginx is SIGKILLed on the master",
           1, "<=", "s", "median"),
    *[t for p in ("reference", "fast") for t in (
        Target(f"{p}_web_freeze_failed", f"{p}: web node frozen 20 s: failed requests", 1, "<=", "requests", "median"),
        Target(f"{p}_web_freeze_latency", f"{p}: web node frozen 20 s: max latency", 3, "<=", "s", "median"),
        Target(f"{p}_web_poweroff_failed", f"{p}: web node powered off: failed requests", 1, "<=", "requests", "median"),
        Target(f"{p}_web_poweroff_latency", f"{p}: web node powered off: max latency", 3, "<=", "s", "median"),
        Target(f"{p}_starve_no_holder", f"{p}: both balancers starved: seconds with no holder", 0, "<=", "s", "median"),
        Target(f"{p}_starve_two_holders", f"{p}: both balancers starved: seconds with two holders", 0, "<=", "s", "median"),
        Target(f"{p}_return", f"{p}: returning master (powered off, started) takes the VIP back", 1, "<=", "probes", "max"),
        Target(f"{p}_cut_heal_failed", f"{p}: VRRP cut healed: failed probes", 1, "<=", "probes", "median"))],
    Target("reference_switchover", "reference profile: planned switchover loses", 1, "<=", "probes", "max"),
    Target("fast_switchover", "fast profile: planned switchover loses", 1, "<=", "probes", "max"),
    # Issue 14: the MASTER's hypervisor lost (two-hosts profile, dev2's VRRP timing: the reference one). The
    # gap may be no worse than a powered-off master's today (2.9 s reference; 0.4 s with the fast profile).
    Target("two_hosts_host_lost_gap", "two hypervisors: the MASTER's host lost: seconds with no holder (VIP gap)",
           2.9, "<=", "s", "median"),
    Target("two_hosts_host_lost_failed", "two hypervisors: the MASTER's host lost: failed requests", 1, "<=",
           "requests", "median"),
    Target("two_hosts_fast_host_lost_gap", "two hypervisors, fast profile: the MASTER's host lost: seconds with no "
           "holder (VIP gap)", 0.4, "<=", "s", "median"),
    Target("two_hosts_fast_host_lost_failed", "two hypervisors, fast profile: the MASTER's host lost: failed requests",
           1, "<=", "requests", "median"),
    Target("rolling_failed", "rolling changes under 10 req/s (each of them): failed requests", 0, "<=", "requests",
           "max"),
    Target("rolling_gap", "rolling changes under 10 req/s: the longest window without an answer", 1, "<=", "s", "max"),
    Target("rolling_time", "a roll's duration vs the sum of (each rolled node's boot + 20 s)", 1, "<=", "x", "max"),
    Target("rps_ratio", "requests/s through the VIP vs direct to a web node", 0.9, ">=", "x", "median"),
    Target("vm_memory", "host memory (RSS) per VM", 0.55, "<=", "GiB", "max"),
)
TARGET_BY_KEY = {t.key: t for t in TARGETS}


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "s":
        return f"{value:.1f} s" if abs(value) >= 10 else f"{value:.2f} s"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "GiB":
        return f"{value:.3f} GiB"
    if unit == "probes":
        return f"{value:g} probe{'' if value == 1 else 's'}"
    return f"{value:g} {unit}"


@dataclass(frozen=True)
class Verdict:
    key: str
    title: str
    stat: str
    value: float | None
    limit: float
    op: str
    unit: str
    met: bool | None  # None: not measured
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(target: Target, value: float | None) -> Verdict:
    """met / not met, and how far off: the difference and the factor (or `not measured`)."""
    t = target
    limit = f"{t.limit:g} {t.unit}" if t.unit in ("s", "GiB") else fmt(t.limit, t.unit)
    want = f"{t.op.replace('<=', '≤').replace('>=', '≥')} {limit}"
    if value is None:
        return Verdict(t.key, t.title, t.stat, None, t.limit, t.op, t.unit, None, f"not measured (target {want})")
    met = value <= t.limit if t.op == "<=" else value >= t.limit
    if met:
        return Verdict(t.key, t.title, t.stat, value, t.limit, t.op, t.unit, True, f"met ({fmt(value, t.unit)} {want})")
    diff = abs(value - t.limit)
    over = "over" if t.op == "<=" else "under"
    if t.unit == "probes":
        far = f"{diff:g} {over}"
    elif t.unit == "x":
        far = f"{diff:.2f} {over}"
    else:
        far = f"{fmt(diff, t.unit)} {over}"
    if t.op == "<=" and t.limit > 0 and t.unit != "probes":
        factor = value / t.limit
        far += f", {factor:.2f}× the target" if factor < 2 else f", {factor:.1f}× the target"
    return Verdict(t.key, t.title, t.stat, value, t.limit, t.op, t.unit, False,
                   f"not met: {fmt(value, t.unit)}, {far} (target {want})")


def pick(s: Mapping[str, Any] | None, stat: str) -> float | None:
    """The statistic a target compares, from a summary() dict."""
    return None if not s else s.get(stat)
