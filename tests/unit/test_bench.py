"""The bench's pure parts: summaries, wrk's output, target verdicts, the stacks' config, the Markdown table,
the drill rounds' bookkeeping and the timeline plot (no lab, no VMs)."""

import json
from pathlib import Path

import pytest
import yaml

from bench import config as bcfg
from bench import drill as bdrill
from bench import plot, report, stats
from bench.stacks import COMMAND_TYPE, DOMAIN_TYPE, phases
from model.settings import HostFacts, load
from tests.conftest import ROOT
from verifier.spec import LOAD_KINDS

WRK = """Running 10s test @ http://192.168.101.100/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.12ms    2.31ms  40.12ms   85.23%
    Req/Sec     1.58k   123.45     1.80k    70.00%
  Latency Distribution
     50%  480.00us
     75%    5.90ms
     90%    7.20ms
     99%    1.23s
  15734 requests in 10.01s, 5.12MB read
Requests/sec:   1571.84
Transfer/sec:    523.45KB
"""


# ---- summaries and wrk -----------------------------------------------------------------------------
def test_summary_median_min_max_and_missing_values():
    assert stats.summary([3, 1, 2, None]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert stats.summary([1, 2, 3, 4])["median"] == 2.5
    assert stats.summary([]) == {"median": None, "min": None, "max": None, "n": 0}
    assert stats.summary([None, float("nan")])["n"] == 0


def test_parse_wrk_reads_rate_latency_units_and_counts():
    r = stats.parse_wrk(WRK)
    assert r["rps"] == 1571.84 and r["requests"] == 15734
    assert r["p50_ms"] == 0.48 and r["p99_ms"] == 1230.0
    assert r["non_2xx"] == 0 and r["socket_errors"] == 0 and stats.wrk_ok(r)


def test_parse_wrk_counts_errors_and_survives_garbage():
    r = stats.parse_wrk(WRK + "  Socket errors: connect 0, read 3, write 0, timeout 2\n  Non-2xx or 3xx responses: 7\n")
    assert r["socket_errors"] == 5 and r["non_2xx"] == 7 and not stats.wrk_ok(r)
    empty = stats.parse_wrk("unable to connect to 192.168.101.230:80 Connection refused")
    assert empty["rps"] is None and empty["p50_ms"] is None and not stats.wrk_ok(empty)


# ---- verdicts --------------------------------------------------------------------------------------
def test_verdict_met_and_how_far_off():
    cold = stats.TARGET_BY_KEY["cold_up"]
    ok = stats.verdict(cold, 42.0)
    assert ok.met is True and ok.detail == "met (42.0 s ≤ 60 s)"
    bad = stats.verdict(cold, 240.0)
    assert bad.met is False and "+" not in bad.detail
    assert bad.detail == "not met: 240.0 s, 180.0 s over, 4.0× the target (target ≤ 60 s)"
    assert stats.verdict(cold, None).met is None and "not measured" in stats.verdict(cold, None).detail


def test_verdict_ratio_probes_and_memory():
    ratio = stats.TARGET_BY_KEY["rps_ratio"]
    assert stats.verdict(ratio, 0.95).met
    low = stats.verdict(ratio, 0.82)
    assert not low.met and "0.08 under" in low.detail and "≥ 0.90×" in low.detail
    sw = stats.verdict(stats.TARGET_BY_KEY["fast_switchover"], 3)
    assert not sw.met and "3 probes, 2 over" in sw.detail
    assert stats.verdict(stats.TARGET_BY_KEY["fast_switchover"], 1).detail == "met (1 probe ≤ 1 probe)"
    mem = stats.verdict(stats.TARGET_BY_KEY["vm_memory"], 0.6)
    assert not mem.met and "0.050 GiB over" in mem.detail
    assert stats.verdict(stats.TARGET_BY_KEY["fast_keepalived"], 0.3).met  # the limit itself is met


def test_every_target_has_a_figure_in_evaluate():
    keys = {t.key for t in stats.TARGETS}
    load_keys = {f"{p}_{k}" for p in ("reference", "fast") for ks in report.LOAD_TARGETS.values() for k in ks}
    host_keys = {k for fields in report.HOST_TARGETS.values() for k in fields}
    assert keys == {"cold_up", "noop_up", "rps_ratio", "vm_memory", *report.PROFILE_TARGETS.values(), *load_keys,
                    "reference_return", "fast_return", *host_keys, "rolling_failed", "rolling_gap", "rolling_time"}


# ---- results -> summaries -> verdicts -> table ---------------------------------------------------------
def step(kind, role, gap, failed, served=0.5, recovered=True):
    return {"kind": kind, "role": role, "gap_s": gap, "failed_probes": failed, "moved_after_s": 0.6,
            "served_after_s": served, "recovered": recovered, "start_s": 0.0, "end_s": 3.0}


def rounds_of(kind_gaps: dict[str, list[tuple[float, int]]]):
    n = len(next(iter(kind_gaps.values())))
    return [{"round": i + 1, "steps": {
        **{f"{k}_b": step(k, "break", g[i][0], g[i][1]) for k, g in kind_gaps.items()},
        **{f"{k}_r": step(k, "restore", 0.1, 1) for k in kind_gaps}}} for i in range(n)]


def sample_results():
    cycles = [{"cycle": c, "failover_drill": c == 1, "up_cold_s": s, "up_noop_s": n, "preview_s": 5.0, "destroy_s": 20.0,
               "phases": {"vms_s": 60.0, "verify_s": s - 70}, "verification": {"wait_s": 80.0, "checks_s": 5.0,
                                                                             "drill_s": 60.0 if c == 1 else None},
               "noop_changes": {}}
              for c, s, n in ((1, 300.0, 9.0), (2, 200.0, 11.0), (3, 210.0, 12.0))]
    fast = rounds_of({"keepalived": [(0.2, 2), (0.4, 4), (0.3, 3)], "hard": [(0.6, 6)] * 3,
                      "poweroff": [(0.4, 4)] * 3, "nginx_kill": [(0.9, 9)] * 3, "switchover": [(0, 0), (0.1, 2), (0, 0)]})
    ref = rounds_of({"keepalived": [(0.3, 3)] * 3, "nginx_kill": [(2.1, 21)] * 3, "switchover": [(0, 0)] * 3})
    ov_rounds = [{"round": i, "vip": {"rps": v, "p50_ms": 4.0, "p99_ms": 9.0}, "direct": {"rps": d, "p50_ms": 2.0, "p99_ms": 5.0}}
                 for i, v, d in ((1, 900.0, 1000.0), (2, 800.0, 1000.0), (3, 950.0, 1000.0))]
    results = {
        "started_at": "2026-11-25 19:00 UTC", "wall_s": 3000.0,
        "machine": {"nproc": 2, "cpu_model": "Xeon", "memory_gib": 23.4, "kernel": "6.1", "domain_type": "qemu",
                    "qemu": "QEMU 7.2", "libvirt": "libvirt 9.0.0"},
        "config": {"repeat": 3, "probe_interval_s": 0.1, "wrk": {"threads": 1, "connections": 8, "seconds": 10, "rounds": 3}},
        "deploy": {"stack": "bench-ref-x", "subnet": "192.168.101.0/24", "cycles": cycles,
                   "summary": report.deploy_summary(cycles)},
        "failover": {"reference": {"summary": report.failover_summary(ref)},
                     "fast": {"summary": report.failover_summary(fast)}},
        "overhead": {"summary": report.overhead_summary(ov_rounds)},
        "memory": {"reference": {"per_vm_mib": {"s-lb01": 500.0, "s-web01": 520.5}, "max_mib": 520.5, "total_mib": 1020.5},
                   "fast": {"per_vm_mib": {"f-lb01": 580.0}, "max_mib": 580.0, "total_mib": 580.0}},
        "notes": ["cycles 2..3 without drill"],
    }
    return results


def test_summaries_feed_the_verdicts():
    res = sample_results()
    v = {x.key: x for x in report.evaluate(res)}
    assert v["cold_up"].value == 210.0 and not v["cold_up"].met
    assert v["noop_up"].value == 11.0 and not v["noop_up"].met
    assert v["fast_keepalived"].value == 0.3 and v["fast_keepalived"].met
    assert v["fast_hard"].value == 0.6 and not v["fast_hard"].met
    assert v["fast_poweroff"].met and v["fast_nginx_kill"].met
    assert v["reference_nginx_kill"].value == 2.1 and v["reference_nginx_kill"].met  # target: serves again in 3 s
    assert v["fast_switchover"].value == 2 and not v["fast_switchover"].met  # the max counts for switchovers
    assert v["reference_switchover"].met
    assert v["rps_ratio"].value == 0.9 and v["rps_ratio"].met  # median vip 900 / median direct 1000
    assert v["vm_memory"].value == pytest.approx(0.566, abs=1e-3) and not v["vm_memory"].met
    assert res["overhead"]["summary"]["round_ratios"] == {"median": 0.9, "min": 0.8, "max": 0.95, "n": 3}


def test_missing_sections_are_not_measured():
    v = {x.key: x for x in report.evaluate({})}
    assert all(x.met is None for x in v.values())
    assert "not measured" in report.render({})  # renders without any measurement


def test_markdown_table():
    res = sample_results()
    res["targets"] = [x.as_dict() for x in report.evaluate(res)]
    md = report.render(res)
    assert md.startswith("## hacluster bench (2026-11-25 19:00 UTC)")
    assert "2 CPUs (Xeon), 23.4 GiB RAM, kernel 6.1, libvirt domain type qemu (TCG" in md
    assert "Bench wall time 50.0 min (3000 s)" in md
    assert "| cold `pulumi up` → verified cluster (all cycles) | 210.0 s | 200.0 s | 300.0 s | 3 |" in md
    assert "full verification incl. failover drill" in md and "verification without drill" in md
    assert "| fast | keepalived stopped (graceful) | 0.30 s | 0.40 s | 3 / 4 |" in md
    assert "| ratio VIP / direct (requests/s) | 0.90× |" in md
    assert "| reference | lb01 500, web01 520 | 0.508 GiB | 0.997 GiB | met (0.508 GiB ≤ 0.55 GiB) |" in md
    assert "**not met**" in md and "**met**" in md
    assert md.count("\n| ") > 25 and "7 of 34 targets met." in md
    for line in md.splitlines():  # every table row has as many cells as its header
        assert not line.startswith("|") or line.endswith("|")


# ---- the stacks' config ------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["reference", "fast"])
def test_stack_config_is_valid_and_on_its_own_subnet(profile):
    dev = (ROOT / "Pulumi.dev.yaml").read_text()
    cfg = bcfg.stack_config(dev, "bench-x", profile, failover_drill=False)
    text = yaml.safe_dump(cfg)
    assert "192.168.81." not in text and f"{bcfg.SUBNETS[profile]}.100" in text
    s = load(bcfg.raw_settings(cfg), "bench-x", ROOT, host=HostFacts(False, False))
    assert s.network.name == "hacluster-bench-x" and s.network.cidr == f"{bcfg.SUBNETS[profile]}.0/24"
    assert s.firewall.web_http_from == (f"{bcfg.SUBNETS[profile]}.1/32",)
    assert s.verify.failover_drill is False
    if profile == "fast":
        assert (s.vrrp.profile, s.vrrp.version, s.vrrp.advert_int, s.vrrp.auth_type) == ("fast", 3, 0.1, None)
    else:
        assert (s.vrrp.version, s.vrrp.advert_int, s.vrrp.auth_type) == (2, 1, "PASS")
    spec = bcfg.drill_spec({"vip": s.vip})
    assert spec["drillKinds"] == list(bcfg.KINDS) and spec["stepTimeout"] == bcfg.STEP_TIMEOUT


def test_bench_subnets_differ_from_dev_and_e2e():
    from tests.e2e.stacks import SUBNET as E2E
    from tests.e2e.test_drift_and_reboot import SUBNET as E2E_SHARED

    assert len({*bcfg.SUBNETS.values(), E2E, E2E_SHARED, bcfg.DEV_PREFIX.rstrip(".")}) == len(bcfg.SUBNETS) + 3


# ---- engine events ---------------------------------------------------------------------------------
def test_phases_from_engine_events():
    ev = [(1.0, "pre", DOMAIN_TYPE, "d1"), (30.0, "out", DOMAIN_TYPE, "d1"), (42.5, "out", DOMAIN_TYPE, "d2"),
          (31.0, "pre", COMMAND_TYPE, "urn:x::lb01-config"), (90.0, "out", COMMAND_TYPE, "urn:x::lb01-config"),
          (95.04, "out", COMMAND_TYPE, "urn:x::web02-config"),
          (96.0, "pre", COMMAND_TYPE, "urn:x::hacluster-check-verify"),
          (203.26, "out", COMMAND_TYPE, "urn:x::hacluster-check-verify"), (204.0, "out", "other", "x")]
    assert phases(ev) == {"vms_s": 42.5, "configs_s": 95.0, "verify_s": 107.3, "verify_started_s": 96.0}
    assert phases([]) == {}


# ---- drill rounds and the timeline ----------------------------------------------------------------------
def test_drill_rounds_record_every_step_and_one_timeline(monkeypatch):
    from tests.unit.test_drill_kinds import SPEC, FakeCluster, FakeProber
    from verifier import run
    from verifier.spec import from_dict

    spec = from_dict({**SPEC, "stepTimeout": 2})
    cluster = FakeCluster(spec)
    FakeProber.cluster = cluster
    monkeypatch.setattr(run, "Prober", FakeProber)
    monkeypatch.setattr(run, "SETTLE_AFTER_STEP", 0.0)
    monkeypatch.setattr(run.time, "sleep", lambda _s: None)
    monkeypatch.setattr(bdrill, "progress", lambda _m: None)
    class FakeLoads:  # a drill under load: one measurement, no break/restore pair
        def __init__(self, verifier):
            self.v = verifier

        def web(self, kind):
            self.v.gaps[kind] = {"requests": 100, "failed_requests": 0, "max_latency_s": 1.2}
            return True

    monkeypatch.setattr(run, "LoadDrills", FakeLoads)
    v = run.Verifier(spec, cluster, log=lambda _m: None)
    v.holder = "lb01"
    out, timeline = bdrill.rounds(v, [k for k in bcfg.KINDS if k not in LOAD_KINDS] + ["web_freeze"], 2)
    v._pool.shutdown()
    assert out[0]["steps"]["web_freeze"] == {"requests": 100, "failed_requests": 0, "max_latency_s": 1.2,
                                             "kind": "web_freeze", "role": "load"}
    assert report.failover_summary(out)["web_freeze"]["load"]["failed_requests"]["n"] == 2
    out = [{**r, "steps": {k: d for k, d in r["steps"].items() if d["role"] != "load"}} for r in out]
    assert [r["round"] for r in out] == [1, 2]
    assert set(out[1]["steps"]) == {s for k in bcfg.KINDS if k not in LOAD_KINDS
                                    for s in (run.KINDS[k].break_step, run.KINDS[k].restore_step)}
    assert {m["role"] for m in timeline["marks"]} == {"break", "restore"} and len(timeline["marks"]) == 10
    assert timeline["probes"] and all(len(p) == 5 for p in timeline["probes"])
    summary = report.failover_summary(out)
    assert summary["poweroff"]["break"]["gap_s"]["n"] == 2
    json.dumps(out)  # what the bench writes


def test_plot_rows_and_panels_and_png(tmp_path: Path):
    probes = [[0.0, True, "lb01", "web01", None], [0.1, False, None, None, "timed out"],
              [0.2, True, "lb02", "web02", None], [5.0, True, "lb01", "web02", None]]
    r = plot.rows(probes, ["lb01", "lb02"], ["web01", "web02"])
    assert r["failed"] == [(0.1, 0, "failed")]
    assert r["node"] == [(0.0, 1, "web01"), (0.2, 2, "web02"), (5.0, 2, "web02")]
    assert r["balancer"] == [(0.0, 3, "lb01"), (0.2, 4, "lb02"), (5.0, 3, "lb01")]
    marks = [{"step": "keepalived_stop", "kind": "keepalived", "role": "break", "t": 0.05, "end": 1.0,
              "gap_s": 0.1, "failed_probes": 1},
             {"step": "keepalived_start", "kind": "keepalived", "role": "restore", "t": 1.0, "end": 5.5,
              "gap_s": 0.0, "failed_probes": 0}]
    ps = plot.panels({"marks": marks})
    assert len(ps) == 1 and ps[0]["x0"] == pytest.approx(0.05 - plot.BEFORE_S) and ps[0]["x1"] == 6.0
    png = plot.timeline_png(tmp_path / "t.png", {"probes": probes, "marks": marks}, ["lb01", "lb02"],
                            ["web01", "web02"], "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


# ---- guests' boot and CPU ----------------------------------------------------------------------------
CI = "cloud-init[241]: Cloud-init v. 22.4.2"
DATE = "Wed, 25 Nov 2026 19:51:56 +0000"


def ci(stage: str, up: float) -> str:
    """A serial console line as the guests print it."""
    if stage == "done":
        return f"[{up:12.6f}] {CI} finished at {DATE}. Datasource DataSourceNoCloud [seed=/dev/sr0][dsmode=net].  Up {up} seconds"
    return f"[{up:12.6f}] {CI} running '{stage}' at {DATE}. Up {up} seconds."


SERIAL = "\n".join(["[    0.000000] Linux version 6.1.0-28-amd64", ci("init-local", 48.18), ci("init", 63.04),
                    "lb01 login: " + ci("modules:config", 111.09), ci("modules:final", 147.47), ci("done", 201.35), ""])
REBOOT = "\n".join([ci("init-local", 27.1), ci("init", 34.7), ""])


def test_cloud_init_stages_of_the_last_boot():
    first = stats.cloud_init_stages(SERIAL)
    assert first == {"init_local": 48.18, "init": 63.04, "config": 111.09, "final": 147.47, "done": 201.35}
    assert stats.boot_phases(first) == {"kernel_systemd_s": 48.2, "ci_init_s": 62.9, "ci_config_s": 36.4,
                                        "ci_final_s": 53.9, "ready_s": 201.3}
    again = stats.cloud_init_stages(SERIAL + REBOOT)  # a power-off drill rebooted it: only the last boot counts
    assert again == {"init_local": 27.1, "init": 34.7}
    assert stats.boot_phases(again) == {"kernel_systemd_s": 27.1}
    assert stats.cloud_init_stages("no cloud-init here") == {} and stats.boot_phases({}) == {}
    # the golden image has no config stage: local+network run until the final stage
    lean = {"init_local": 30.8, "init": 52.0, "final": 63.9, "done": 65.4}
    assert stats.boot_phases(lean) == {"kernel_systemd_s": 30.8, "ci_init_s": 33.1, "ci_final_s": 1.5, "ready_s": 65.4}


def test_cpu_usage_per_vm_and_per_request():
    before = {"t": 100.0, "host": (50.0, 200.0), "qemu": {"lb01": 10.0, "web01": 20.0, "web02": 5.0}}
    after = {"t": 110.0, "host": (68.0, 220.0), "qemu": {"lb01": 16.0, "web01": 24.0, "web02": 7.0, "lb02": 1.0}}
    u = stats.cpu_usage(before, after, requests=6000, balancers=["lb01", "lb02"])
    assert u["host_busy_cores"] == 1.8 and u["vm_cores"] == {"lb01": 0.6, "web01": 0.4, "web02": 0.2}
    assert u["vm_cores_total"] == 1.2
    assert u["vm_cpu_ms_per_request"] == 2.0 and u["lb_cpu_ms_per_request"] == 1.0 and u["web_cpu_ms_per_request"] == 1.0
    assert "vm_cpu_ms_per_request" not in stats.cpu_usage(before, after)
    assert stats.cpu_usage(after, after) == {}


def test_table_shows_guest_boot_and_cpu():
    res = sample_results()
    res["deploy"]["cycles"][0]["guests"] = {"lb01": stats.boot_phases(stats.cloud_init_stages(SERIAL))}
    rounds = [{"round": 1, "vip": {"rps": 600.0, "cpu": {"host_busy_cores": 1.95, "vm_cpu_ms_per_request": 2.5,
                                                         "lb_cpu_ms_per_request": 1.4, "web_cpu_ms_per_request": 1.1}},
               "direct": {"rps": 1400.0, "cpu": {"host_busy_cores": 1.9, "vm_cpu_ms_per_request": 1.0,
                                                 "lb_cpu_ms_per_request": 0.0, "web_cpu_ms_per_request": 1.0}}}]
    res["overhead"]["summary"] = report.overhead_summary(rounds)
    res["deploy"]["summary"] = report.deploy_summary(res["deploy"]["cycles"])
    md = report.render(res)
    assert "guests (median of 1, uptime): kernel + systemd 48.2 s" in md and "ready at 201.3 s" in md
    assert "| 600 | – | – | 1.95 of 2 cores | 2.50 ms (1.4 + 1.1) | 1 |" in md
    assert res["deploy"]["summary"]["guest_ready_s"]["median"] == 201.3


def test_table_shows_each_guests_boot_profile():
    res = sample_results()
    res["deploy"]["cycles"][0]["blame"] = {
        "lb01": {"systemd": ["12.1s cloud-init.service", "3.0s nginx.service"], "cloud_init": ["4.20s init-network/config-ssh"]},
        "web01": {"error": ["ssh exit 255"]}}
    md = report.render(res)
    assert "- lb01: systemd 12.1s cloud-init.service; 3.0s nginx.service | cloud-init 4.20s init-network/config-ssh" in md
    assert "- web01: not readable (ssh exit 255)" in md


# ---- the two-hosts profile (issue 14: the hypervisor lost) ------------------------------------------------
def two_hosts_settings(name="bench-2h-x"):
    cfg = bcfg.two_hosts_config((ROOT / "Pulumi.dev2.yaml").read_text(), name)
    return load(bcfg.raw_settings(cfg), name, ROOT, host=HostFacts(False, False))


def test_two_hosts_config_keeps_the_labs_segment_with_addresses_and_a_vrid_of_its_own():
    s = two_hosts_settings()
    dev2 = load(bcfg.raw_settings(yaml.safe_load((ROOT / "Pulumi.dev2.yaml").read_text())["config"]), "dev2", ROOT,
                host=HostFacts(False, False))
    assert s.vip == "192.168.85.150" and [n.ip for n in s.nodes] == [f"192.168.85.{i}" for i in (151, 152, 153, 154)]
    assert not {s.vip, *(n.ip for n in s.nodes)} & {dev2.vip, *(n.ip for n in dev2.nodes)}
    assert s.vrrp.virtual_router_id == bcfg.TWO_HOSTS_VRID != dev2.vrrp.virtual_router_id
    assert s.network.cidr == dev2.network.cidr == bcfg.subnet(bcfg.TWO_HOSTS) and s.network.name == "hacluster-bench-2h-x"
    assert [h.name for h in s.hypervisors] == ["hv1", "hv2"] and s.verify.failover_drill
    assert {n.name: n.host for n in s.nodes} == {"lb01": "hv1", "lb02": "hv2", "web01": "hv1", "web02": "hv2"}


def test_two_hosts_drill_spec_runs_the_host_lost_drill_at_full_length():
    from components.cluster import verifier_spec
    from verifier.spec import from_dict

    s = two_hosts_settings()
    spec = from_dict(bcfg.drill_spec(verifier_spec(s), bcfg.TWO_HOSTS_DEFAULT_KINDS))
    assert spec.drill_kinds == ("host_lost",) and (spec.host_freeze_seconds, spec.host_down_seconds) == (10, 10)
    assert {h: x.netns for h, x in spec.hypervisors.items()} == {"hv1": "halab-hv1", "hv2": "halab-hv2"}
    assert [n.name for n in spec.on_host(spec.master.host)] == ["lb01", "web01"]


def test_two_hosts_run_only_when_the_lab_has_hypervisors(tmp_path, monkeypatch):
    from bench.cli import Bench

    monkeypatch.setenv("HACLUSTER_LAB_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("BENCH_PROFILES", raising=False)
    assert "make lab HOSTS=2" in Bench().two_hosts_skipped()
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "hv1").write_text("halab-hv1\n")
    b = Bench()
    assert b.two_hosts_skipped() is None and b.kinds[bcfg.TWO_HOSTS] == ("host_lost",)
    monkeypatch.setenv("BENCH_PROFILES", "reference,fast")
    assert Bench().two_hosts_skipped() == "not in BENCH_PROFILES"
    monkeypatch.setenv("BENCH_TWO_HOSTS_KINDS", "host_lost,poweroff,bogus")
    assert Bench().kinds[bcfg.TWO_HOSTS] == ("host_lost", "poweroff")


def test_leftovers_are_looked_for_on_every_hypervisor(monkeypatch):
    from bench import lab

    held = {"qemu:///system": "", "qemu+ssh://hv1/system?keyfile=k": "bench-2h-x-lb01\nother-web01"}
    monkeypatch.setattr(lab, "virsh", lambda *args, uri=lab.URI, **_: held[uri] if args[0] == "list" else "")
    assert lab.libvirt_objects("bench-2h-x", tuple(held)) == ["domain bench-2h-x-lb01 on qemu+ssh://hv1/system"]


def host_lost_round(i, gap, failed, back):
    return {"round": i, "steps": {"host_lost": {
        "kind": "host_lost", "role": "load", "requests": 300, "failed_requests": failed, "max_latency_s": 3.1,
        "p99_latency_s": 1.0, "no_holder_s": gap, "two_holders_s": 0.0, "returned_after_s": back, "host": "hv1",
        "holder_changes": [[0.0, []], [gap, ["lb02"]]], "nodes_lost": ["lb01", "web01"]}}}


def test_host_lost_rows_and_targets_from_fake_results():
    res = sample_results()
    rounds = [host_lost_round(i, g, f, b) for i, (g, f, b) in enumerate(
        [(3.2, 0, 61.0), (2.8, 1, 58.0), (2.6, 0, 75.0), (3.0, 2, 60.0), (2.7, 0, 59.5)], 1)]
    res["failover"]["two-hosts"] = {"summary": report.failover_summary(rounds)}
    res["deploy"]["two_hosts"] = {"stack": "bench-2h-x", "subnet": "192.168.85.0/24", "cycles": [
        {"cycle": 1, "failover_drill": True, "up_cold_s": 412.5, "phases": {"vms_s": 70.0},
         "verification": {"wait_s": 90.0, "drill_s": 80.0}, "destroy_s": 12.0},
        *({"cycle": i, "failover_drill": False, "up_cold_s": t} for i, t in ((2, 90.0), (3, 100.0)))]}
    res["deploy"]["cycles"] = [{"cycle": 1, "failover_drill": True, "up_cold_s": 150.0},
                               *({"cycle": i, "failover_drill": False, "up_cold_s": t} for i, t in ((2, 80.0), (3, 90.0)))]
    load = res["failover"]["two-hosts"]["summary"]["host_lost"]["load"]
    assert load["no_holder_s"] == {"median": 2.8, "min": 2.6, "max": 3.2, "n": 5}
    assert load["returned_after_s"]["median"] == 60.0 and load["failed_requests"]["median"] == 0
    v = {x.key: x for x in report.evaluate(res)}
    assert v["two_hosts_host_lost_gap"].value == 2.8 and v["two_hosts_host_lost_gap"].met
    assert v["two_hosts_host_lost_failed"].value == 0 and v["two_hosts_host_lost_failed"].met
    md = report.render(res)
    assert ("| two-hosts | the MASTER's hypervisor lost (lb01 + web01 frozen 10 s, killed, down 10 s, started) | "
            "0 / 2 (of 300) | 3.10 s / 3.10 s | 2.80 s / 0.00 s | 60.0 s | 5 |") in md
    assert ("| cold `pulumi up` across 2 hypervisors (dev2 config), cycles without the drill | 95.0 s | 90.0 s | "
            "100.0 s | 2 | stack bench-2h-x on 192.168.85.0/24: 1.12× the one-host median (85.0 s, same run) |") in md
    assert ("| ↳ 2 hypervisors, cycle 1: cold up (full verification incl. failover drill and host_lost) | 412.5 s |"
            "  |  | 1 | VMs defined+started at 70.0 s") in md
    for line in md.splitlines():
        assert not line.startswith("|") or line.endswith("|")


def test_a_skipped_two_hosts_profile_says_why_in_the_report():
    res = sample_results()
    res["skipped"] = {"two-hosts": "the lab has no hypervisors (/run/hacluster-lab/hosts/hv1 is missing: make lab HOSTS=2)"}
    md = report.render(res)
    assert "| cold `pulumi up` across 2 hypervisors (dev2 config) | – |" in md
    assert md.count("skipped: the lab has no hypervisors") == 2  # the deploy row and the drill row
    v = {x.key: x for x in report.evaluate(res)}
    assert v["two_hosts_host_lost_gap"].met is None and "not measured" in v["two_hosts_host_lost_gap"].detail


def test_two_hosts_fast_config_takes_the_fast_vrrp_profile_on_the_same_addresses():
    dev2 = (ROOT / "Pulumi.dev2.yaml").read_text()
    ref, fast = bcfg.two_hosts_config(dev2, "bench-2h-x"), bcfg.two_hosts_config(dev2, "bench-2h-x", False, fast=True)
    assert fast["hacluster:vrrp"] == {"profile": "fast", "virtualRouterId": bcfg.TWO_HOSTS_VRID}
    assert ref["hacluster:vrrp"]["advertInt"] == 1 and ref["hacluster:vrrp"]["virtualRouterId"] == bcfg.TWO_HOSTS_VRID
    assert {k: v for k, v in fast.items() if k not in ("hacluster:vrrp", "hacluster:verify")} == \
        {k: v for k, v in ref.items() if k not in ("hacluster:vrrp", "hacluster:verify")}
    assert bcfg.subnet(bcfg.TWO_HOSTS_FAST) == bcfg.subnet(bcfg.TWO_HOSTS)


def test_two_hosts_fast_rows_have_their_own_targets():
    res = sample_results()
    rounds = [host_lost_round(i, g, f, b) for i, (g, f, b) in enumerate([(0.3, 0, 30.0), (0.6, 0, 31.0), (0.3, 1, 29.0)], 1)]
    res["failover"]["two-hosts-fast"] = {"summary": report.failover_summary(rounds)}
    v = {x.key: x for x in report.evaluate(res)}
    assert v["two_hosts_fast_host_lost_gap"].value == 0.3 and v["two_hosts_fast_host_lost_gap"].met
    assert v["two_hosts_fast_host_lost_failed"].met and v["two_hosts_host_lost_gap"].met is None
    assert "| two-hosts-fast | the MASTER's hypervisor lost" in report.render(res)


def test_rolling_rows_feed_three_targets_and_a_table():
    from bench import rolling
    rows = [{"change": "memory 512 -> 640 (restart)", "up_s": 206.0, "requests": 2101, "failed": 0, "errors": [],
             "longest_no_answer_s": 0.98, "max_latency_s": 1.06, "order": ["web01", "web02", "lb02", "lb01"],
             "boots_s": {"web01": 29.0, "web02": 31.0, "lb02": 28.0, "lb01": 27.0}, "target_s": 195.0},
            {"change": "nginx clientMaxBodySize (day 2)", "up_s": 30.0, "requests": 300, "failed": 1, "errors": ["x"],
             "longest_no_answer_s": 0.4, "max_latency_s": 0.5, "order": [], "boots_s": {}, "target_s": None}]
    res = {"rolling": {"stack": "bench-ref-x", "rows": rows, "summary": rolling.summary(rows)}}
    v = {x.key: x for x in report.evaluate(res)}
    assert (v["rolling_failed"].value, v["rolling_failed"].met) == (1, False)
    assert (v["rolling_gap"].value, v["rolling_gap"].met) == (0.98, True)
    assert v["rolling_time"].value == round(206 / 195, 3) and v["rolling_time"].met is False
    md = report.render(res)
    assert "### Rolling changes" in md and "web01 (29.0 s)" in md and "none (in place)" in md
