"""HA under load, with the real nginx + keepalived + health agent in namespaces: a health check never
empties the VIP, a hung or dead MASTER nginx moves it, a returning MASTER takes it only once it serves,
and a frozen or unplugged web node costs the clients (almost) nothing. Timings are printed, never asserted."""

import json
import os
import signal
import subprocess
import sys
import time

from model.settings import load
from tests.integration.harness import ROOT, wait_for
from verifier.actions import _children, read_pid


def settings(raw=None):
    return load(raw or {}, "it", ROOT)


def failed(report: dict) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in report["checks"] if not c["passed"]}


def holders_over(lab, seconds: float, every: float = 0.25) -> list[list[str]]:
    out = []
    for _ in range(int(seconds / every)):
        out.append(lab.holders())
        time.sleep(every)
    return out


def nginx_pids(lab, host: str) -> list[int]:
    master = read_pid(lab.hosts[host].service("nginx")["pidFile"])
    return [master, *_children(master)] if master else []


def signal_nginx(lab, host: str, sig: int) -> None:
    for pid in nginx_pids(lab, host):
        os.kill(pid, sig)


def agent_state(lab, host: str) -> dict:
    path = lab.hosts[host].prefix / "health-state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def agent_events(lab, host: str) -> list[str]:
    return [e["what"] for e in agent_state(lab, host).get("events", [])]


def test_both_nginx_dead_keeps_the_vip(lab_factory):
    """A shared outage (nginx down on both balancers): the VIP stays on the MASTER, it is not emptied."""
    lab = lab_factory(settings())
    for lb in ("lb01", "lb02"):
        lab.stop(lb, "nginx")
    seen = holders_over(lab, 6)
    print("holders with nginx down on both:", {tuple(h) for h in seen})
    assert all(h == ["lb01"] for h in seen), seen


def test_both_nginx_slow_keeps_the_vip_a_hung_master_loses_it(lab_factory):
    """nginx frozen (accepting, never answering) on both balancers, longer than checkSlowFall rounds: the
    VIP stays. Frozen on the MASTER alone: the VIP moves to the BACKUP, and comes back when it thaws."""
    s = settings()
    lab = lab_factory(s)
    slow_for = s.vrrp.check_slow_fall * s.vrrp.check_interval + s.vrrp.check_timeout + 3
    for lb in ("lb01", "lb02"):
        signal_nginx(lab, lb, signal.SIGSTOP)
    try:
        seen = holders_over(lab, slow_for)
    finally:
        for lb in ("lb01", "lb02"):
            signal_nginx(lab, lb, signal.SIGCONT)
    print("holders with nginx hung on both:", {tuple(h) for h in seen})
    assert all(h == ["lb01"] for h in seen), seen
    assert wait_for(lambda: lab.holders() == ["lb01"], 10)
    # nginx was failing (slow) on both: wait until lb01's agent has seen it serve again (rise checks)
    assert wait_for(lambda: agent_state(lab, "lb01").get("local") is True, 20)

    signal_nginx(lab, "lb01", signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        moved = wait_for(lambda: lab.holders() == ["lb02"], 3 * slow_for)
        print(f"hung MASTER nginx: VIP on lb02 after {time.monotonic() - t0:.1f} s")
    finally:
        signal_nginx(lab, "lb01", signal.SIGCONT)
    assert moved, lab.holders()
    assert wait_for(lambda: lab.holders() == ["lb01"], 30), lab.holders()
    assert any("FAULT" in e for e in agent_events(lab, "lb01"))


def test_returning_master_takes_the_vip_only_once_it_serves(lab_factory):
    s = settings()
    lab = lab_factory(s)
    lab.stop("lb01", "keepalived")
    lab.stop("lb01", "nginx")
    assert wait_for(lambda: lab.holders() == ["lb02"], 15)
    lab.start("lb01", "keepalived")  # keepalived back, nginx still down: lb01 must stay out
    seen = holders_over(lab, 6)
    print("holders while lb01 runs keepalived without nginx:", {tuple(h) for h in seen})
    assert all(h == ["lb02"] for h in seen), seen

    probe = subprocess.Popen(["ip", "netns", "exec", lab.client.ns, sys.executable, "-m", "tests.integration.probe",
                              s.vip, s.nginx.server_name.split()[0], "12"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        lab.start("lb01", "nginx")
        out, _ = probe.communicate(timeout=60)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    probes = json.loads(out)
    failed_probes = [p for p in probes if not p[1]]
    by = [p[2] for p in probes if p[1]]
    print(f"lb01 returns: {len(failed_probes)} failed of {len(probes)} probes; last answered by {by[-1:]}")
    assert lab.holders() == ["lb01"] and by[-1] == "lb01"
    assert len(failed_probes) <= 1, failed_probes


LOAD_SPEC = {"drillKinds": ["nginx_kill", "web_freeze", "web_poweroff", "vrrp_cut"], "webFreezeSeconds": 6,
             "cutSeconds": 5, "rejoinTimeout": 30, "loadRate": 10, "loadTimeout": 10, "stepTimeout": 20}


def show(title: str, report: dict) -> None:
    print(f"\n{title}:")
    for step, g in report["gaps"].items():
        print(f"  {step:15} {json.dumps(g, sort_keys=True)}")


def test_load_drills_pass(lab_factory):
    """Under 10 requests/s: nginx SIGKILLed on the MASTER, web01 frozen, web01 unplugged, VRRP cut and
    healed. Each costs at most one failed request (probe), and the pair ends with one holder."""
    lab = lab_factory(settings())
    rc, report, _ = lab.verify(lab.spec(**LOAD_SPEC), timeout=400)
    show("load drills (reference)", report)
    assert report["passed"] and rc == 0, failed(report)
    for kind in ("web_freeze", "web_poweroff"):
        assert report["gaps"][kind]["failed_requests"] <= 1, report["gaps"][kind]
        assert report["gaps"][kind]["rejoined_after_s"] is not None
    assert report["gaps"]["vrrp_cut"]["failed_probes_after_heal"] <= 1
    events = agent_events(lab, "lb01")
    assert any(e.startswith("ejected web01") for e in events), events
    assert any(e.startswith("web01 rejoined") for e in events), events
    assert lab.holders() == ["lb01"]


def test_fast_profile_load_drills_pass(lab_factory):
    lab = lab_factory(settings({"vrrp": {"profile": "fast"}}))
    rc, report, _ = lab.verify(lab.spec(**{**LOAD_SPEC, "loadTimeout": 5}), timeout=400)
    show("load drills (fast)", report)
    assert report["passed"] and rc == 0, failed(report)


def test_without_active_checks_a_frozen_web_node_costs_requests(lab_factory):
    """The control: with nginx.upstream.activeCheck off, nginx alone (passive max_fails, 30 s connect
    timeout) keeps sending requests to the frozen node; they wait for it to thaw (TCP's SYN retries),
    and a client that waits 5 s loses them: the web_freeze drill fails."""
    lab = lab_factory(settings({"nginx": {"upstream": {"activeCheck": {"enabled": False}}}}))
    spec = {**LOAD_SPEC, "drillKinds": ["web_freeze"], "webFreezeSeconds": 8, "loadTimeout": 5}
    rc, report, _ = lab.verify(lab.spec(**spec), timeout=400)
    show("no active checks", report)
    bad = failed(report)
    assert rc == 1 and "drill_web_freeze" in bad, bad
    assert report["gaps"]["web_freeze"]["failed_requests"] > 1


def nodes_through_vip(lab, n: int) -> list[str]:
    """The web node behind each of `n` GETs through the VIP (from the client namespace), '' for a failure."""
    out = []
    for _ in range(n):
        r = subprocess.run(["ip", "netns", "exec", lab.client.ns, "curl", "-s", "-m", "5", "-o", "/dev/null", "-D", "-",
                            "-H", f"Host: {lab.settings.nginx.server_name.split()[0]}", f"http://{lab.settings.vip}/"],
                           capture_output=True, text=True, timeout=30)
        out.append(next((ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines()
                         if ln.lower().startswith("x-node:")), ""))
    return out


def test_a_drained_web_node_gets_no_new_requests_and_comes_back_when_admitted(lab_factory):
    """The health agents' drain file (a rolling change writes it, day2/gate.py): a drained web node gets no
    new connection from either balancer, no request fails meanwhile, and it serves again once it leaves the
    file. Draining the last serving member of the pool is refused by the agent (it stays in)."""
    lab = lab_factory(settings())
    assert set(nodes_through_vip(lab, 10)) == {"web01", "web02"}
    for lb in ("lb01", "lb02"):
        (lab.hosts[lb].prefix / "drain.json").write_text('["web01"]')
    assert wait_for(lambda: all(agent_state(lab, lb).get("drained") == ["web01"] for lb in ("lb01", "lb02")), 10)
    # The agent reloads nginx after it sets the nft drain set; until the old workers have handed over,
    # one of them may still send a request down its idle keepalive connection to web01 (an established
    # one: the drain lets those finish, and day 2's gate waits for them). Then none goes there.
    assert wait_for(lambda: nodes_through_vip(lab, 4) == ["web02"] * 4, 10)
    seen = nodes_through_vip(lab, 20)
    print("through the VIP with web01 drained:", seen)
    assert seen == ["web02"] * 20
    # the last serving member stays in: web02 drained too is kept, web01 still drained
    (lab.hosts["lb01"].prefix / "drain.json").write_text('["web01", "web02"]')
    time.sleep(2)
    assert agent_state(lab, "lb01").get("drained") == ["web01"]
    for lb in ("lb01", "lb02"):
        (lab.hosts[lb].prefix / "drain.json").write_text("[]")
    assert wait_for(lambda: all(agent_state(lab, lb).get("drained") == [] for lb in ("lb01", "lb02")), 10)
    assert wait_for(lambda: "web01" in nodes_through_vip(lab, 6), 10)
    events = agent_events(lab, "lb01")
    assert any(e.startswith("drained web01") for e in events) and any(e.startswith("web01 admitted") for e in events)
