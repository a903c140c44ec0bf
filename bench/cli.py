"""`python -m bench` (make bench): deploy cycles, failover rounds per profile, balancer overhead, memory.

Writes bench/results/latest.json (+ latest.md, the drill timelines as PNG, pulumi.log) and prints the
Markdown table on stdout; progress goes to stderr. Exit 0 when every verification passed, 1 when the
cluster was broken (a verifier check failed) or a bench stack could not be cleaned up, 2 when it could
not start (the lab is missing, or busy for too long).

Settings (environment): BENCH_CYCLES (3), BENCH_REPEAT (5), BENCH_WRK_SECONDS (10), BENCH_WRK_ROUNDS (3),
BENCH_PROFILES (reference,fast,two-hosts), BENCH_KINDS (every drill kind of bench.config.KINDS,
comma-separated), BENCH_FAST_KINDS (the fast profile's, default BENCH_KINDS), BENCH_TWO_HOSTS_KINDS (the
two-hosts profile's, default host_lost). The two-hosts profile (Pulumi.dev2.yaml across the lab's hv1 and
hv2: a cold up and the hypervisor-lost drill) runs only when the lab has its hypervisors (make lab HOSTS=2);
otherwise the report says why its rows are missing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from . import config as bcfg
from . import drill as bdrill
from . import rolling
from .lab import (
    NETNS,
    URI,
    blame,
    cpu_snapshot,
    domains,
    lab_busy,
    libvirt_objects,
    machine,
    memory,
    progress,
    serial_log,
    subnets_in_use,
    wait_for_lab,
    wrk,
)
from .report import deploy_summary, evaluate, failover_summary, overhead_summary, render
from .stacks import BenchStack
from .stats import boot_phases, cloud_init_stages, cpu_usage

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


class Broken(RuntimeError):
    """The cluster did not pass its verification: the only way the bench fails on a measurement."""


def _env_int(name: str, default: int, lo: int, hi: int) -> int:
    try:
        v = int(os.environ.get(name, default))
    except ValueError:
        return default
    return max(lo, min(hi, v))


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds through every cleanup below


class Bench:
    def __init__(self) -> None:
        self.cycles = _env_int("BENCH_CYCLES", 3, 1, 10)
        self.repeat = _env_int("BENCH_REPEAT", 5, 1, 20)
        self.wrk_seconds = _env_int("BENCH_WRK_SECONDS", 10, 1, 60)
        self.wrk_rounds = _env_int("BENCH_WRK_ROUNDS", 3, 1, 10)
        self.profiles = [p for p in os.environ.get("BENCH_PROFILES", ",".join(bcfg.PROFILES)).split(",")
                         if p in bcfg.PROFILES]
        kinds = os.environ.get("BENCH_KINDS", ",".join(bcfg.KINDS))
        self.kinds = {"reference": tuple(k for k in kinds.split(",") if k in bcfg.KINDS),
                      "fast": tuple(k for k in os.environ.get("BENCH_FAST_KINDS", kinds).split(",") if k in bcfg.KINDS),
                      bcfg.TWO_HOSTS: tuple(k for k in os.environ.get("BENCH_TWO_HOSTS_KINDS", ",".join(
                          bcfg.TWO_HOSTS_DEFAULT_KINDS)).split(",") if k in bcfg.TWO_HOSTS_KINDS)}
        self.kinds[bcfg.TWO_HOSTS_FAST] = self.kinds[bcfg.TWO_HOSTS]
        self.id = uuid.uuid4().hex[:6]
        self.dev_yaml = (ROOT / "Pulumi.dev.yaml").read_text()
        self.log = RESULTS / "pulumi.log"
        self.stacks: list[str] = []
        self.stack_uris: dict[str, tuple[str, ...]] = {}  # a stack on other hypervisors than the lab host's
        self.results: dict[str, Any] = {
            "schema": 1, "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "passed": False,
            "config": {"cycles": self.cycles, "repeat": self.repeat, "probe_interval_s": 0.1,
                       "kinds": {p: list(k) for p, k in self.kinds.items()},
                       "step_timeout_s": bcfg.STEP_TIMEOUT, "profiles": self.profiles,
                       "wrk": {"threads": 1, "connections": 8, "seconds": self.wrk_seconds, "rounds": self.wrk_rounds}},
            "machine": {}, "deploy": {}, "failover": {}, "overhead": {}, "memory": {}, "skipped": {}, "notes": [],
            "errors": []}

    # ---- helpers ---------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        if text not in self.results["notes"]:
            self.results["notes"].append(text)

    def _up(self, st: BenchStack) -> tuple[float, auto.UpResult, dict]:
        wait_for_lab(ROOT)  # never start VMs beside the lead's e2e stacks
        try:
            seconds, up, phases = st.up()
        except auto.CommandError as e:
            tail = [ln for ln in str(e).splitlines() if "FAILED" in ln or "error" in ln.lower()][-6:]
            raise Broken(f"pulumi up of {st.name} failed (verifier or deploy): {' | '.join(tail)}") from e
        report = up.outputs["verification"].value if "verification" in up.outputs else None
        if report is not None and not report.get("passed"):
            raise Broken(f"{st.name}: the verification did not pass: "
                         + "; ".join(f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["passed"]))
        return seconds, up, phases

    @staticmethod
    def _guests(name: str) -> dict[str, dict[str, float]]:
        """Per node of stack `name`: its last boot's phases from the serial console (kernel + systemd,
        cloud-init stages), in guest uptime seconds."""
        return {d[len(name) + 1:]: boot_phases(cloud_init_stages(serial_log(d)))
                for d in domains() if d.startswith(f"{name}-")}

    def _blame(self, name: str, config: dict, outputs: dict) -> dict:
        """Each guest's own boot profile (bench.lab.blame), read with the stack's SSH key."""
        import tempfile

        s = self._settings(name, config)
        with tempfile.NamedTemporaryFile("w", prefix="bench-key-") as key:
            key.write(outputs["sshPrivateKey"].value)
            key.flush()
            return blame({n.name: n.ip for n in s.nodes}, s.vm.admin_user, key.name)

    def _settings(self, name: str, config: dict):
        from model.settings import load

        return load(bcfg.raw_settings(config), name, ROOT)

    # ---- deploy cycles (+ overhead, memory and failover on the first, fully verified, cluster) --------
    def reference(self) -> None:
        name = f"bench-ref-{self.id}"
        st = BenchStack(ROOT, name, self.log)
        self.stacks.append(name)
        dep = self.results["deploy"]
        dep.update(stack=name, subnet=f"{bcfg.SUBNETS['reference']}.0/24", cycles=[])
        try:
            for cycle in range(1, self.cycles + 1):
                full = cycle == 1
                config = bcfg.stack_config(self.dev_yaml, name, "reference", failover_drill=full)
                st.configure(config)
                up_s, up, phases = self._up(st)
                rec: dict[str, Any] = {"cycle": cycle, "failover_drill": full, "up_cold_s": up_s, "phases": phases,
                                       "guests": self._guests(name),
                                       "verification": (up.outputs.get("verification").value or {}).get("durations")
                                       if up.outputs.get("verification") else None}
                noop_s, again, _ = st.up()
                rec["up_noop_s"] = noop_s
                rec["noop_changes"] = {k: v for k, v in (again.summary.resource_changes or {}).items() if k != "same"}
                rec["preview_s"] = st.preview()
                if full:
                    rec["blame"] = self._blame(name, config, up.outputs)
                    self.results["machine"] = machine(f"{name}-lb01")
                    self.overhead(name, config, up.outputs)
                    self.results["memory"]["reference"] = memory(name)
                    self.failover("reference", name, config, up.outputs)
                    self.rolling(st, config, up.outputs["vip"].value)
                rec["destroy_s"] = st.destroy()
                left = libvirt_objects(name)
                if left:
                    self.note(f"after destroy in cycle {cycle} libvirt still held {', '.join(left)}")
                dep["cycles"].append(rec)
                dep["summary"] = deploy_summary(dep["cycles"])
                self.save()
        finally:
            self._cleanup(st)
        if self.cycles > 1:
            self.note(f"deploy cycle 1 ran the full verification (failover drill with pause); cycles 2..{self.cycles} "
                      "set verify.failoverDrill false (the verifier still waits for the VIP, SSH, one holder, "
                      "spread, headers)")

    def fast(self) -> None:
        name = f"bench-fast-{self.id}"
        st = BenchStack(ROOT, name, self.log)
        self.stacks.append(name)
        try:
            config = bcfg.stack_config(self.dev_yaml, name, "fast", failover_drill=True)
            st.configure(config)
            up_s, up, phases = self._up(st)
            self.results["deploy"]["fast_cold_up"] = {
                "stack": name, "up_cold_s": up_s, "phases": phases, "guests": self._guests(name),
                "verification": (up.outputs["verification"].value or {}).get("durations")}
            self.results["memory"]["fast"] = memory(name)
            self.failover("fast", name, config, up.outputs)
            self.results["deploy"]["fast_cold_up"]["destroy_s"] = st.destroy()
        finally:
            self._cleanup(st)

    def two_hosts(self) -> None:
        """The dev2 configuration across the lab's two hypervisors, in cycles like the reference profile's:
        cycle 1 fully verified (failover drill, host_lost quick form), then its drill rounds (by default the
        hypervisor lost); cycles 2..N verified without the drill, comparable with the one-host cycles."""
        name = f"bench-2h-{self.id}"
        dev2 = (ROOT / "Pulumi.dev2.yaml").read_text()
        config = bcfg.two_hosts_config(dev2, name, failover_drill=True)
        self.stack_uris[name] = tuple(h.uri for h in self._settings(name, config).hypervisors)
        st = BenchStack(ROOT, name, self.log, self.stack_uris[name])
        self.stacks.append(name)
        two = self.results["deploy"]["two_hosts"] = {
            "stack": name, "subnet": bcfg.subnet(bcfg.TWO_HOSTS), "hypervisors": len(self.stack_uris[name]), "cycles": []}
        try:
            for cycle in range(1, self.cycles + 1):
                full = cycle == 1
                config = bcfg.two_hosts_config(dev2, name, failover_drill=full)
                st.configure(config)
                up_s, up, phases = self._up(st)
                rec: dict[str, Any] = {"cycle": cycle, "failover_drill": full, "up_cold_s": up_s, "phases": phases,
                                       "verification": (up.outputs["verification"].value or {}).get("durations")}
                if full and self.kinds[bcfg.TWO_HOSTS] and bcfg.TWO_HOSTS in self.profiles:
                    self.failover(bcfg.TWO_HOSTS, name, config, up.outputs)
                if full and self.kinds[bcfg.TWO_HOSTS] and bcfg.TWO_HOSTS_FAST in self.profiles:
                    # The fast VRRP timing reaches the running nodes as a day-2 change (keepalived reloaded).
                    fast = bcfg.two_hosts_config(dev2, name, False, fast=True)
                    st.configure(fast)
                    self._up(st)
                    self.failover(bcfg.TWO_HOSTS_FAST, name, fast, up.outputs)
                rec["destroy_s"] = st.destroy()
                two["cycles"].append(rec)
                two["summary"] = deploy_summary(two["cycles"])
                self.save()
        finally:
            self._cleanup(st)

    def _cleanup(self, st: BenchStack) -> None:
        progress(f"cleaning up {st.name}")
        try:
            problems = st.cleanup()
        except Exception as e:  # report every cleanup problem, never mask the first error
            problems = [f"cleanup of {st.name}: {type(e).__name__}: {e}"]
        self.results["errors"] += problems

    # ---- failover rounds -------------------------------------------------------------------------
    def failover(self, profile: str, name: str, config: dict, outputs: dict) -> None:
        from components.cluster import verifier_spec

        settings = self._settings(name, config)
        kinds = self.kinds[profile]
        spec = bcfg.drill_spec(verifier_spec(settings), kinds)
        spec_file = RESULTS / f"drill-{profile}.spec.json"
        out_file = RESULTS / f"drill-{profile}.json"
        spec_file.write_text(json.dumps(spec, indent=1))  # no secret in the spec
        out_file.unlink(missing_ok=True)
        env = {**os.environ, "HACLUSTER_SSH_KEY": outputs["sshPrivateKey"].value, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        bound = 900 + self.repeat * len(kinds) * 2 * (bcfg.STEP_TIMEOUT + 90)
        progress(f"failover: {profile} profile, {self.repeat} rounds of {', '.join(kinds)} (inside {NETNS})")
        t0 = time.monotonic()
        try:
            r = subprocess.run(["ip", "netns", "exec", NETNS, sys.executable, "-m", "bench", "drill", "--spec",
                                str(spec_file), "--rounds", str(self.repeat), "--out", str(out_file)],
                               cwd=ROOT, env=env, timeout=bound, stdin=subprocess.DEVNULL, stdout=sys.stderr)
            rc = r.returncode
        except subprocess.TimeoutExpired:
            rc = None
        data = json.loads(out_file.read_text()) if out_file.exists() else {"passed": False, "rounds": []}
        res = {"stack": name, "subnet": bcfg.subnet(profile), "rc": rc, "seconds": round(time.monotonic() - t0, 1),
               "passed": data.get("passed"), "rounds": data.get("rounds", []),
               "summary": failover_summary(data.get("rounds", [])),
               "failed_checks": [c for c in data.get("checks", []) if not c["passed"]]}
        self.results["failover"][profile] = res
        if (data.get("timeline") or {}).get("marks"):  # drills under load only: no break/restore to plot
            png = RESULTS / ("failover-timeline.png" if profile == "reference" else f"failover-timeline-{profile}.png")
            try:
                from .plot import timeline_png

                timeline_png(png, data["timeline"], [b.name for b in settings.balancers],
                             [w.name for w in settings.web_nodes],
                             f"hacluster failover drill, round 1, {profile} profile (stack {name}): who answered "
                             "each probe through the VIP")
                res["timeline_png"] = png.name
                if profile == "reference" or not self.results.get("timeline_png"):
                    self.results["timeline_png"] = str(png.relative_to(ROOT))
            except Exception as e:  # a plot problem is not a broken cluster
                self.results["errors"].append(f"timeline plot: {type(e).__name__}: {e}")
        self.save()
        if rc != 0 or not data.get("passed"):
            why = "; ".join(f"{c['name']}: {c['detail']}" for c in res["failed_checks"][:3]) or f"rc {rc}"
            raise Broken(f"the {profile} failover drill failed: {why}")

    # ---- balancer overhead -----------------------------------------------------------------------
    def rolling(self, st: BenchStack, config: dict, vip: str) -> None:
        """The rolling-change rows (bench/rolling.py), on the reference stack after its drills."""
        if os.environ.get("BENCH_ROLLING", "1") == "0":
            self.results["skipped"]["rolling"] = "BENCH_ROLLING=0"
            return
        rows = rolling.run(ROOT, st, dict(config), vip, bcfg.SUBNETS["reference"])
        self.results["rolling"] = {"stack": st.name, "rows": rows, "summary": rolling.summary(rows)}
        self.save()

    def overhead(self, name: str, config: dict, outputs: dict) -> None:
        settings = self._settings(name, config)
        host = settings.nginx.server_name.split()[0]
        web = settings.web_nodes[0]
        urls = {"vip": f"http://{settings.vip}/", "direct": f"http://{web.ip}/"}
        progress(f"overhead: wrk against {urls['vip']} and {urls['direct']} ({web.name}), "
                 f"{self.wrk_rounds} rounds of {self.wrk_seconds} s each")
        for url in urls.values():  # warm-up (not recorded): connections, caches, upstream keepalive
            wrk(url, host, seconds=2)
        rounds = []
        for i in range(self.wrk_rounds):
            order = ("vip", "direct") if i % 2 == 0 else ("direct", "vip")
            rec: dict[str, Any] = {"round": i + 1}
            for path in order:
                before = cpu_snapshot(name)
                rec[path] = wrk(urls[path], host, seconds=self.wrk_seconds)
                rec[path]["cpu"] = cpu_usage(before, cpu_snapshot(name), rec[path].get("requests"),
                                             [b.name for b in settings.balancers])
                cpu = rec[path]["cpu"]
                progress(f"  round {i + 1} {path}: {rec[path].get('rps')} req/s, p50 {rec[path].get('p50_ms')} ms, "
                         f"p99 {rec[path].get('p99_ms')} ms; host busy {cpu.get('host_busy_cores')} cores, VM CPU "
                         f"{cpu.get('vm_cpu_ms_per_request')} ms/request")
            rounds.append(rec)
        bad = [f"round {r['round']} {p}: {r[p].get('error') or r[p]}" for r in rounds for p in ("vip", "direct")
               if not r[p].get("rps") or r[p].get("non_2xx") or r[p].get("socket_errors")]
        if bad:
            self.note("wrk saw errors: " + "; ".join(str(b)[:200] for b in bad))
        self.results["overhead"] = {"stack": name, "urls": urls, "host": host, "rounds": rounds,
                                    "summary": overhead_summary(rounds)}
        self.note(f"wrk, the prober and the {4} TCG VMs share the host's {os.cpu_count()} CPUs: the overhead figures "
                  "include that contention")
        self.save()

    def two_hosts_skipped(self) -> str | None:
        """Why the two-hosts profile does not run (None: it does)."""
        if bcfg.TWO_HOSTS not in self.profiles and bcfg.TWO_HOSTS_FAST not in self.profiles:
            return "not in BENCH_PROFILES"
        return bcfg.two_hosts_missing()

    # ---- results ---------------------------------------------------------------------------------
    def save(self) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.results["targets"] = [v.as_dict() for v in evaluate(self.results)]
        tmp = RESULTS / "latest.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=1, sort_keys=False))
        tmp.replace(RESULTS / "latest.json")

    def run(self) -> int:
        t0 = time.monotonic()
        rc = 0
        try:
            used = {n: a for n, a in subnets_in_use().items()
                    if any(a.startswith(f"{bcfg.SUBNETS[p]}.") for p in self.profiles if p in bcfg.SUBNETS)}
            if used:
                raise RuntimeError(f"the bench subnets are taken by libvirt networks {used}: not touching them")
            if "reference" in self.profiles:
                self.reference()
            if "fast" in self.profiles:
                self.fast()
            skip = self.two_hosts_skipped()
            if skip:
                self.results["skipped"][bcfg.TWO_HOSTS] = skip
                self.note(f"two-hosts profile skipped: {skip}")
            else:
                self.two_hosts()
            self.results["passed"] = True
        except Broken as e:
            progress(f"BROKEN: {e}")
            self.results["errors"].append(str(e))
            rc = 1
        except (SystemExit, KeyboardInterrupt) as e:
            self.results["errors"].append(f"interrupted ({type(e).__name__} {getattr(e, 'code', '')})")
            rc = 1
        except Exception as e:  # recorded, reported, and the exit code says so
            traceback.print_exc()
            self.results["errors"].append(f"{type(e).__name__}: {e}")
            rc = 1
        finally:
            left = [o for s in self.stacks for o in libvirt_objects(s, self.stack_uris.get(s, (URI,)))]
            self.results["leftovers"] = left
            if left:
                self.results["errors"].append(f"libvirt still holds bench objects: {', '.join(left)}")
                rc = 1
            elif any("cleanup" in e or "libvirt still holds" in e for e in self.results["errors"]):
                rc = 1
            self.results["wall_s"] = round(time.monotonic() - t0, 1)
            self.results["finished_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            self.save()
            table = render(self.results)
            (RESULTS / "latest.md").write_text(table)
            print(table, flush=True)
            if self.results["errors"]:
                progress("errors: " + " | ".join(self.results["errors"]))
            progress(f"results: {RESULTS / 'latest.json'} (wall time {self.results['wall_s'] / 60:.1f} min)")
        return rc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["drill"]:
        return bdrill.main(argv[1:])
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    if not Path(f"/run/netns/{NETNS}").exists():
        print(f"bench: the lab namespace {NETNS} does not exist: run `make bench` (it starts the lab)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        wait_for_lab(ROOT)
    except RuntimeError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    progress(f"lab free ({', '.join(lab_busy(ROOT)) or 'no e2e stack'}); starting")
    return Bench().run()
