"""The verifier against real nginx + keepalived in network namespaces: a healthy pair passes the drill,
and broken deployments fail it for the right reason. Timings are printed, never asserted."""

import json
import subprocess
import sys

from model.settings import load
from tests.integration.harness import ROOT
from verifier.guard import REFUSED

DRILL_STEPS = ("keepalived_stop", "keepalived_start", "nginx_stop", "nginx_start")


def settings(raw=None):
    return load(raw or {}, "it", ROOT)


def failed(report: dict) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in report["checks"] if not c["passed"]}


def show_gaps(title: str, report: dict) -> None:
    print(f"\n{title}: holder {report['holder']}, distribution {report['distribution']}, durations {report['durations']}")
    for step, g in report["gaps"].items():
        print(f"  {step:17} gap {g['gap_s']:.2f} s, {g['failed_probes']:3d} failed probes, "
              f"VIP moved after {g['moved_after_s']} s, served after {g['served_after_s']} s")


def test_healthy_pair_passes_the_drill(lab_factory):
    lab = lab_factory(settings())
    rc, report, _ = lab.verify(lab.spec(hardFailure=True))
    show_gaps("healthy pair", report)
    assert report["passed"], failed(report)
    assert rc == 0
    assert report["holder"] == "lb01"
    assert set(report["distribution"]) == {"web01", "web02"}
    for step in (*DRILL_STEPS, "hard_pause", "hard_resume"):
        gap = report["gaps"][step]
        assert gap["recovered"] and gap["moved_after_s"] is not None, (step, gap)
        assert isinstance(gap["gap_s"], float) and isinstance(gap["failed_probes"], int)
    names = {c["name"] for c in report["checks"]}
    assert {"single_holder", "expected_master", "proxy_headers", "cluster_restored"} <= names
    assert lab.holders() == ["lb01"], "the drill must leave the VIP where it found it"


def test_fast_profile_passes_the_drill(lab_factory):
    """VRRPv3 with 100 ms adverts and a one-strike nginx check: the same drill, shorter gaps (printed)."""
    lab = lab_factory(settings({"vrrp": {"profile": "fast"}}))
    rc, report, _ = lab.verify(lab.spec())
    show_gaps("fast profile", report)
    assert report["passed"] and rc == 0, failed(report)
    assert set(DRILL_STEPS) <= set(report["gaps"])


ROUTING = {"nginx": {"persistence": "cookie:sid", "routing": {
    "pools": {"apple": ["web01"], "robots": ["web02"], "default": ["web01", "web02"]},
    "rules": [{"match": "iphone|ipad", "pool": "apple"}, {"match": "^curl/", "pool": "robots"}],
    "default": "default"}}}


def test_routing_and_cookie_persistence(lab_factory):
    lab = lab_factory(settings(ROUTING))
    rc, report, _ = lab.verify(lab.spec(drill=False))
    print(json.dumps({c["name"]: c["detail"] for c in report["checks"]}, indent=1))
    assert report["passed"] and rc == 0, failed(report)
    names = {c["name"] for c in report["checks"]}
    assert {"ua_routing", "persistence", "distribution"} <= names


def test_nopreempt_leaves_the_vip_where_it_failed_over(lab_factory):
    raw = {"vrrp": {"nopreempt": True},
           "balancers": [{"name": "lb01", "ip": "192.168.81.210", "state": "BACKUP", "priority": 150},
                         {"name": "lb02", "ip": "192.168.81.220", "state": "BACKUP", "priority": 100}]}
    lab = lab_factory(settings(raw))
    first = lab.holders()
    rc, report, _ = lab.verify(lab.spec())
    show_gaps("nopreempt", report)
    assert report["passed"] and rc == 0, failed(report)
    assert set(DRILL_STEPS) <= set(report["gaps"])
    # keepalived pair on the first holder moves the VIP away for good; the nginx pair then moves it back.
    assert len(first) == 1 and lab.holders() == first == [report["holder"]]


def test_missing_routing_is_detected(lab_factory):
    """Deployed without the User-Agent map, checked against settings that have it."""
    lab = lab_factory(settings())
    rc, report, _ = lab.verify(lab.spec(settings(ROUTING), drill=False))
    bad = failed(report)
    print(bad)
    assert rc == 1 and set(bad) >= {"ua_routing", "persistence"}, bad
    assert "UA expected pool" in bad["ua_routing"]  # e.g. iphone UA expected pool apple (web01) but got web02


def test_split_brain_is_detected(lab_factory):
    """Different VRRP passwords: each balancer drops the other's adverts, so both become MASTER."""
    lab = lab_factory(settings(), auth_passes={"lb01": "itpass", "lb02": "other"})
    rc, report, stderr = lab.verify(lab.spec())
    bad = failed(report)
    print(bad)
    assert rc == 1 and not report["passed"]
    assert "split brain" in bad["single_holder"]
    assert "lb01" in bad["single_holder"] and "lb02" in bad["single_holder"]
    assert "failover_drill" in bad  # no drill on a broken pair
    assert "FAILED single_holder: split brain" in stderr


def test_killed_master_keepalived_leaves_a_duplicate_vip(lab_factory):
    """kill -9 keepalived on the MASTER: the VIP stays on its interface while the BACKUP takes over."""
    lab = lab_factory(settings())
    lab.kill_keepalived("lb01")
    rc, report, _ = lab.verify(lab.spec(settle=8))
    bad = failed(report)
    print(bad)
    assert rc == 1 and "split brain: lb01 and lb02 both hold the VIP" in bad["single_holder"]


def test_missing_health_check_fails_the_nginx_step(lab_factory):
    """Deployed without the vrrp_script, checked against the intended settings: when nginx dies on the MASTER
    the VIP stays there."""
    lab = lab_factory(settings({"vrrp": {"healthCheck": False}}))
    rc, report, _ = lab.verify(lab.spec(settings(), stepTimeout=8))
    show_gaps("no health check", report)
    bad = failed(report)
    print(bad)
    assert rc == 1 and not report["passed"]
    assert "drill_nginx_stop" in bad, bad
    assert all(v.startswith("not run") for k, v in bad.items() if k != "drill_nginx_stop"), bad
    assert "stayed on lb01" in bad["drill_nginx_stop"]
    assert not report["gaps"]["nginx_stop"]["recovered"]
    assert lab.holders() == ["lb01"]


def test_no_keepalived_means_no_vip_holder(lab_factory):
    lab = lab_factory(settings())
    for lb in ("lb01", "lb02"):
        lab.stop(lb, "keepalived")
    rc, report, _ = lab.verify(lab.spec(timeout=6))
    bad = failed(report)
    print(bad)
    assert rc == 1 and not report["passed"]
    assert "no balancer holds the VIP" in bad["single_holder"]
    assert "vip_http" in bad


def test_missing_namespace_is_refused():
    raw = {"netns": "hait-no-such-namespace", "actions": "netns", "vip": "192.168.81.100", "serverName": "x",
           "balancers": [{"name": "lb01", "ip": "192.168.81.210", "priority": 150},
                         {"name": "lb02", "ip": "192.168.81.220", "priority": 100}],
           "webNodes": [{"name": "web01", "ip": "192.168.81.230"}],
           "hosts": {n: {"netns": "x", "keepalived": {"pidFile": "p", "start": ["true"]},
                         "nginx": {"pidFile": "p", "start": ["true"]}} for n in ("lb01", "lb02")}}
    r = subprocess.run([sys.executable, "-m", "verifier"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HACLUSTER_VERIFY_SPEC": json.dumps(raw)})
    assert r.returncode == 2
    report = json.loads(r.stdout)
    assert not report["passed"] and "does not exist" in report["checks"][0]["detail"]


def test_guard_refuses_outside_its_namespace(lab_factory):
    """verifier.guard must not exec its command from the root namespace, nor from another lab namespace."""
    lab = lab_factory(settings())
    target = lab.hosts["lb01"].ns
    guard = [sys.executable, "-m", "verifier.guard", target, "--", "true"]
    r = subprocess.run(guard, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == REFUSED and "root network namespace" in r.stderr, r.stderr
    r = subprocess.run(["ip", "netns", "exec", lab.hosts["web01"].ns, *guard], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == REFUSED and "not in network namespace" in r.stderr, r.stderr
    r = subprocess.run(["ip", "netns", "exec", target, *guard], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_firewall_lets_only_balancers_reach_web_nodes(lab_factory):
    """The nodes' own nftables rules, loaded in their namespaces: a web node answers HTTP from a balancer
    and refuses it from any other address (the client); the VIP still answers the client."""
    lab = lab_factory(settings())
    web = lab.hosts["web01"].ip

    def curl(host: str, url: str) -> str:
        r = subprocess.run(["ip", "netns", "exec", lab.hosts[host].ns, "curl", "-s", "-m", "3", "-o", "/dev/null",
                            "-w", "%{http_code}", url], capture_output=True, text=True, timeout=10)
        return r.stdout

    assert curl("lb02", f"http://{web}/healthz") == "200"
    assert curl("client", f"http://{web}/healthz") == "000"  # reset by the web node's firewall
    assert curl("client", f"http://{lab.settings.vip}/healthz") == "200"
