"""Issue 14 part 3, the drill "hypervisor lost" (host_lost): its spec keys and refusals, the actions' safety
(lab namespaces only, qemu processes only; fake proc dir, fake os.kill, fake `ip netns pids`), the scenario
over fake actions and a fake prober, verifier_spec for two hosts and one."""

import json
import signal
import subprocess

import pytest

from components import cluster
from tests.conftest import known_hosts
from tests.unit.test_drill_kinds import SPEC
from verifier import actions, run, scenarios
from verifier.actions import ActionError, Actions, SshActions
from verifier.http import Probe
from verifier.spec import SpecError, from_dict

HVS = {"hv1": {"uri": "qemu+ssh://root@127.0.0.1:2221/system", "netns": "halab-hv1"},
       "hv2": {"uri": "qemu+ssh://root@127.0.0.1:2222/system", "netns": "halab-hv2"}}
PLACED = {"lb01": "hv1", "lb02": "hv2", "web01": "hv1", "web02": "hv2"}
MACS = {"lb01": "52:54:00:00:00:01", "lb02": "52:54:00:00:00:02"}


def two_host_spec(placed=PLACED, hypervisors=HVS, **kw) -> dict:
    """SPEC on two lab hypervisors: lb01 (MASTER) + web01 on hv1, lb02 + web02 on hv2."""
    with_host = lambda n: {"domain": f"s-{n['name']}", "mac": MACS.get(n["name"]), **n,  # noqa: E731
                           "host": placed[n["name"]]}
    return {**SPEC, "netns": "halab", "hypervisors": hypervisors, "drillKinds": ["host_lost"],
            "balancers": [with_host(b) for b in SPEC["balancers"]], "webNodes": [with_host(w) for w in SPEC["webNodes"]],
            **kw}


def refusal(raw) -> str:
    with pytest.raises(SpecError) as e:
        from_dict(raw)
    return str(e.value)


# ---- the spec --------------------------------------------------------------------------------------
def test_two_host_spec_parses_hosts_hypervisors_and_timings():
    s = from_dict(two_host_spec(hostFreezeSeconds=5, hostDownSeconds=7))
    assert s.drill_kinds == ("host_lost",)
    assert s.hypervisors["hv2"].netns == "halab-hv2" and s.hypervisors["hv1"].uri.endswith(":2221/system")
    assert s.master.host == "hv1" and [n.name for n in s.on_host("hv1")] == ["lb01", "web01"]
    assert (s.host_freeze_seconds, s.host_down_seconds) == (5.0, 7.0)
    assert from_dict(two_host_spec()).host_freeze_seconds == 10.0 and from_dict(SPEC).host_down_seconds == 10.0


def test_one_host_spec_has_no_hypervisors_and_no_hosts():
    s = from_dict(SPEC)
    assert s.hypervisors == {} and all(n.host == "" for n in (*s.balancers, *s.web_nodes)) and s.on_host("") == []


@pytest.mark.parametrize(("raw", "words"), [
    ({**SPEC, "drillKinds": ["host_lost"]}, "host_lost needs at least two hypervisors with a netns"),
    (two_host_spec(hypervisors={"hv1": HVS["hv1"], "hv2": {"uri": "qemu:///system"}}),
     "host_lost needs at least two hypervisors with a netns"),
    (two_host_spec(placed={**PLACED, "web01": "hv2"}), "host_lost needs a web node on the MASTER's host hv1"),
    (two_host_spec(placed={**PLACED, "lb01": ""}), "host_lost needs the MASTER lb01 on a hypervisor with a netns"),
    (two_host_spec(placed={**PLACED, "lb01": "hv3"}), "lb01: host 'hv3' is not one of the hypervisors"),
    (two_host_spec(hypervisors={"hv1": {"netns": "x"}}), "hypervisors: {name: {uri, netns}} with a uri for each"),
    (two_host_spec(hostFreezeSeconds=0), "hostFreezeSeconds = 0: must be a number in 1..600"),
    (two_host_spec(hostDownSeconds=601), "hostDownSeconds = 601: must be a number in 1..600"),
])
def test_host_lost_refusals_are_one_clear_line(raw, words):
    msg = refusal(raw)
    assert words in msg and "\n" not in msg


def test_host_lost_needs_ssh_actions():
    hosts = {b: {"netns": f"ns-{b}", "keepalived": {"pidFile": "/x", "start": ["k"]},
                 "nginx": {"pidFile": "/y", "start": ["n"]}} for b in ("lb01", "lb02")}
    assert "host_lost needs ssh actions" in refusal(two_host_spec(actions="netns", hosts=hosts))


# ---- the actions: lab namespaces and qemu processes only ----------------------------------------------
class FakeLab:
    """A fake lab: a proc dir (comm, stat), the marker files, `ip netns pids` and virsh answers, os.kill."""

    def __init__(self, tmp_path, monkeypatch):
        self.proc, self.run_dir = tmp_path / "proc", tmp_path / "run"
        (self.run_dir / "hosts").mkdir(parents=True)
        self.ns_pids: dict[str, list[int]] = {}
        self.elsewhere: set[int] = set()  # pids that left the namespace between the listing and the signal
        self.signals: list[tuple[int, str]] = []
        self.argv: list[list[str]] = []
        self.virsh_errors: list[str] = []  # stderr of the next virsh calls, one each ("" = success)
        monkeypatch.setenv("HACLUSTER_LAB_RUN_DIR", str(self.run_dir))
        monkeypatch.setattr(actions, "PROC", str(self.proc))
        monkeypatch.setattr(actions, "_run", self.mock_run)
        monkeypatch.setattr(actions.netns, "process_in", self.mock_process_in)
        monkeypatch.setattr(actions.os, "kill", self.mock_kill)
        monkeypatch.setattr(actions.time, "sleep", lambda _s: None)

    def host(self, name: str, netns: str, marker: str | None = None) -> None:
        (self.run_dir / "hosts" / name).write_text((netns if marker is None else marker) + "\n")

    def process(self, netns: str, pid: int, comm: str) -> None:
        (self.proc / str(pid)).mkdir(parents=True)
        (self.proc / str(pid) / "comm").write_text(comm + "\n")
        (self.proc / str(pid) / "stat").write_text(f"{pid} ({comm}) S 1 2 3\n")
        self.ns_pids.setdefault(netns, []).append(pid)

    def mock_run(self, argv, timeout, stdin=None):
        self.argv.append(argv)
        if argv[:3] == ["ip", "netns", "pids"]:
            return subprocess.CompletedProcess(argv, 0, "\n".join(map(str, self.ns_pids.get(argv[3], []))), "")
        err = self.virsh_errors.pop(0) if self.virsh_errors else ""
        return subprocess.CompletedProcess(argv, 1 if err else 0, "", err)

    def mock_process_in(self, pid, name):
        return pid in self.ns_pids.get(name, []) and pid not in self.elsewhere

    def mock_kill(self, pid, sig):
        self.signals.append((pid, signal.Signals(sig).name))
        if sig == signal.SIGKILL:
            (self.proc / str(pid) / "stat").write_text(f"{pid} (qemu-system-x86) Z 1 2 3\n")


@pytest.fixture
def lab(tmp_path, monkeypatch):
    fake = FakeLab(tmp_path, monkeypatch)
    fake.host("hv1", "halab-hv1")
    fake.host("hv2", "halab-hv2")
    fake.process("halab-hv1", 101, "qemu-system-x86")
    fake.process("halab-hv1", 102, "libvirtd")
    fake.process("halab-hv1", 103, "qemu-system-x86")
    fake.process("halab-hv2", 201, "qemu-system-x86")
    return fake


def ssh(**kw) -> SshActions:
    spec = from_dict(two_host_spec(**kw))
    return SshActions(spec, "/tmp/key-mock", known_hosts({b.name: b.ip for b in spec.balancers}))


def test_freeze_thaw_kill_signal_only_the_hosts_qemu_processes(lab):
    a = ssh()
    a.host_freeze("hv1")
    assert lab.signals == [(101, "SIGSTOP"), (103, "SIGSTOP")]  # not libvirtd, not hv2's qemu
    assert lab.argv[0] == ["ip", "netns", "pids", "halab-hv1"]
    a.host_thaw("hv1")
    assert lab.signals[2:] == [(101, "SIGCONT"), (103, "SIGCONT")]
    a.host_kill("hv1")
    assert lab.signals[4:] == [(101, "SIGKILL"), (103, "SIGKILL")]


def test_a_pid_that_left_the_namespace_is_not_signalled(lab):
    lab.elsewhere.add(103)
    ssh().host_freeze("hv1")
    assert lab.signals == [(101, "SIGSTOP")]


@pytest.mark.parametrize(("netns", "setup", "words"), [
    ("other", lambda lab: None, "namespace 'other' of hv1 is not a lab hypervisor's (halab-*)"),
    ("halab-hv1", lambda lab: (lab.run_dir / "hosts" / "hv1").unlink(),
     "hosts/hv1 is missing: halab-hv1 is not a known lab hypervisor"),
    ("halab-hv1", lambda lab: lab.host("hv1", "halab-hv1", marker="halab-hv2"), "names 'halab-hv2', not 'halab-hv1'"),
])
def test_actions_refuse_a_namespace_that_is_not_provably_a_lab_hosts(lab, netns, setup, words):
    setup(lab)
    a = ssh(hypervisors={**HVS, "hv1": {**HVS["hv1"], "netns": netns}})
    for act in (a.host_freeze, a.host_kill, a.host_thaw, lambda h: a.host_return(h, ["s-lb01"])):
        with pytest.raises(ActionError) as e:
            act("hv1")
        assert words in str(e.value)
    assert lab.signals == [] and lab.argv == []


def test_the_spec_namespace_itself_or_a_host_without_netns_is_refused(lab):
    with pytest.raises(ActionError, match="not a lab hypervisor's"):
        ssh(hypervisors={**HVS, "hv1": {**HVS["hv1"], "netns": "halab-"}}).host_freeze("hv1")
    with pytest.raises(ActionError, match="has no lab namespace in the spec"):
        ssh().host_freeze("hv9")
    assert lab.signals == []


def test_no_qemu_process_is_an_error(lab):
    lab.ns_pids["halab-hv2"] = []
    with pytest.raises(ActionError, match="no qemu-system process in namespace halab-hv2"):
        ssh().host_freeze("hv2")


def test_kill_waits_for_the_processes_and_gives_up_bounded(lab, monkeypatch):
    monkeypatch.setattr(actions, "HOST_KILL_WAIT", 0.0)
    lab.mock_kill = lambda pid, sig: lab.signals.append((pid, signal.Signals(sig).name))  # they never die
    monkeypatch.setattr(actions.os, "kill", lab.mock_kill)
    with pytest.raises(ActionError, match=r"hv1: qemu pids \[101, 103\] still running 0 s after SIGKILL"):
        ssh().host_kill("hv1")


def test_return_starts_the_domains_again_while_libvirt_still_calls_them_running(lab):
    lab.virsh_errors = ["error: Requested operation is not valid: domain is already running", "", ""]
    ssh().host_return("hv1", ["s-lb01", "s-web01"])
    uri = HVS["hv1"]["uri"]
    assert lab.argv == [["virsh", "-q", "-c", uri, "start", "s-lb01"]] * 2 + [["virsh", "-q", "-c", uri, "start", "s-web01"]]


def test_return_reports_every_domain_that_did_not_start(lab, monkeypatch):
    monkeypatch.setattr(actions, "HOST_RETURN_WAIT", 0.0)
    lab.virsh_errors = ["error: domain is already running", "error: no such domain"]
    with pytest.raises(ActionError, match=r"hv1 back, but virsh start s-lb01: .*already running; virsh start s-web01: "):
        ssh().host_return("hv1", ["s-lb01", "s-web01"])


def test_return_wants_domain_names(lab):
    with pytest.raises(ActionError, match="hv1: a node without a libvirt domain name"):
        ssh().host_return("hv1", ["s-lb01", ""])
    assert lab.argv == []


def test_other_actions_refuse_the_host_actions():
    a = Actions()
    for act in (a.host_freeze, a.host_kill, a.host_thaw, lambda h: a.host_return(h, [])):
        with pytest.raises(ActionError, match="needs a lab hypervisor namespace: ssh actions only"):
            act("hv1")


# ---- the scenario over a fake two-host cluster ---------------------------------------------------------
class FakeClock:
    """Stands in for the time module in verifier.scenarios: sleeping advances it, nothing waits."""

    def __init__(self):
        self.now = 1000.0
        self.on_tick = []  # called after each sleep: the fake prober's clock-driven requests

    def monotonic(self):
        return self.now

    def time(self):
        return self.now

    def sleep(self, s):
        self.now += max(s, 0.05)
        for tick in self.on_tick:
            tick()


class FakeHosts(Actions):
    """Two hypervisors: the VIP on the highest-priority balancer whose host runs; a killed host's VMs boot
    `boot_s` after their return (`returns` False: they never do); the BACKUP takes over `takeover_s` after
    the MASTER's host froze (VRRP's timeout)."""

    poll_interval = 0.5

    def __init__(self, spec, clock, boot_s=6.0, returns=True, fail=None, takeover_s=0.0):
        self.spec, self.clock, self.boot_s, self.returns, self.fail = spec, clock, boot_s, returns, fail
        self.takeover_s, self.frozen_at = takeover_s, -1e9
        self.state = {h: "up" for h in spec.hypervisors}
        self.back_at: dict[str, float] = {}
        self.calls: list[str] = []

    def up(self, node) -> bool:
        if self.state[node.host] == "returned" and self.clock.now >= self.back_at[node.host]:
            self.state[node.host] = "up"
        return self.state[node.host] == "up"

    def holder(self):
        up = [b for b in self.spec.balancers if self.up(b)]
        if self.spec.master not in up and self.clock.now < self.frozen_at + self.takeover_s:
            return None
        return max(up, key=lambda b: b.priority).name if up else None

    def serving(self):
        return [w.name for w in self.spec.web_nodes if self.up(w)]

    def ready(self, lb):
        return None if self.up(lb) else f"{lb.name} does not answer"

    def addresses(self, lb):
        if not self.up(lb):
            raise ActionError(f"{lb.name} does not answer")
        return f"2: eth0    inet {self.spec.vip}/24 scope global eth0\n" if self.holder() == lb.name else ""

    def _act(self, verb, host, state):
        self.calls.append(f"{verb} {host}")
        if self.fail == verb:
            raise ActionError(f"{verb} went wrong")
        self.state[host] = state

    def host_freeze(self, host):
        self._act("freeze", host, "frozen")
        self.frozen_at = self.clock.now

    def who_has(self, _ip, window):
        """ARP: the holder's MAC, after `window` s of the fake clock."""
        self.clock.sleep(window)
        holder = self.holder()
        return {next(b.mac for b in self.spec.balancers if b.name == holder)} if holder else set()

    def host_kill(self, host):
        self._act("kill", host, "killed")

    def host_thaw(self, host):
        self._act("thaw", host, "up")

    def host_return(self, host, domains):
        self._act(f"return {','.join(domains)}", host, "returned" if self.returns else "killed")
        self.back_at[host] = self.clock.now + self.boot_s


class FakeLoadProber:
    """Stands in for verifier.http.Prober: a request every `interval` s of the fake clock, answered when the
    cluster has a holder and a serving web node (round robin)."""

    hosts: FakeHosts

    def __init__(self, _vip, _name, interval, *_a, **_kw):
        self.interval, self.probes, self.last = interval, [], None

    def __enter__(self):
        self.last = self.hosts.clock.now
        self.hosts.clock.on_tick.append(self.fill)
        return self

    def __exit__(self, *exc):
        self.hosts.clock.on_tick.remove(self.fill)

    def snapshot(self):
        return list(self.probes)

    def fill(self):
        h = self.hosts
        while self.last + self.interval <= h.clock.now:
            self.last += self.interval
            webs, holder = h.serving(), h.holder()
            node = webs[len(self.probes) % len(webs)] if webs and holder else None
            self.probes.append(Probe(self.last, node is not None, holder, None if node else "timed out", node, 0.01))


@pytest.fixture
def drill(monkeypatch):
    def make(**kw):
        clock = FakeClock()
        spec = from_dict(two_host_spec(hostFreezeSeconds=4, hostDownSeconds=4, rejoinTimeout=30, stepTimeout=2))
        hosts = FakeHosts(spec, clock, **kw)
        FakeLoadProber.hosts = hosts
        monkeypatch.setattr(scenarios, "time", clock)
        monkeypatch.setattr(scenarios, "Prober", FakeLoadProber)
        monkeypatch.setattr(scenarios.arp, "who_has", mock_who_has)
        monkeypatch.setattr(run.time, "sleep", lambda _s: None)  # restore()'s polls
        v = run.Verifier(spec, hosts, log=lambda _m: None)
        return v, hosts
    return make


def test_the_vip_gap_is_measured_by_arp(drill, monkeypatch):
    v, hosts = drill(takeover_s=3.0)
    monkeypatch.setattr(scenarios.arp, "who_has", hosts.who_has)
    v.drill(["host_lost"])
    got = checks(v)
    g = v.gaps["host_lost"]  # (the fake prober fails a request while nobody holds the VIP: 30 fail here)
    assert 2.5 <= g["no_holder_s"] <= 3.5 and g["unreadable_samples"] == 0  # ARP windows of 0.3 s
    assert [h for _, h in g["holder_changes"]] == [[], ["lb02"], ["lb01"]]
    assert f"{g['no_holder_s']:g} s with no holder (the VIP gap)" in got["drill_host_lost"][1]


def mock_who_has(_ip, _wait):
    raise OSError("no ARP here (a unit test): the holders are read through the actions")


def checks(v):
    v._pool.shutdown()
    return {c.name: (c.passed, c.detail) for c in v.checks}


def test_host_lost_passes_when_the_cluster_keeps_serving_and_the_host_returns(drill):
    v, hosts = drill()
    v.drill(["host_lost"])
    got = checks(v)
    assert got["drill_host_lost"][0], got
    assert hosts.calls == ["freeze hv1", "kill hv1", "return s-lb01,s-web01 hv1"]
    g = v.gaps["host_lost"]
    assert g["host"] == "hv1" and g["nodes_lost"] == ["lb01", "web01"]
    assert g["failed_requests"] == 0 and g["no_holder_s"] == 0 and g["two_holders_s"] == 0
    assert 6 <= g["returned_after_s"] <= 8  # boot_s, then the next sample
    changes = [h for _, h in g["holder_changes"]]
    assert changes[0] == ["lb02"] and changes[-1] == ["lb01"]  # (the fake VIP moves at once; lb01 unreadable while it boots)
    detail = got["drill_host_lost"][1]
    assert detail.startswith("hypervisor hv1 lost (lb01, web01): frozen 4 s, killed, down 4 s, then started, 10 req/s")
    assert "0 s with no holder (the VIP gap)" in detail
    assert "lb01 alone holds the VIP, web01 serves again, lb01 answers again" in detail
    assert got["cluster_restored"][0]


def test_a_host_that_never_returns_fails_the_drill(drill):
    v, _ = drill(returns=False)
    v.drill(["host_lost"])
    passed, detail = checks(v)["drill_host_lost"]
    assert not passed and "not recovered within 30 s of the return (holders at the end: unreadable)" in detail
    assert v.gaps["host_lost"]["returned_after_s"] is None


def test_a_failed_kill_thaws_the_frozen_host(drill):
    v, hosts = drill(fail="kill")
    v.drill(["host_lost"])
    passed, detail = checks(v)["drill_host_lost"]
    assert not passed and detail.endswith("the action failed: kill went wrong")
    assert hosts.calls == ["freeze hv1", "kill hv1", "thaw hv1"] and hosts.state["hv1"] == "up"


def test_an_interrupted_drill_after_the_kill_starts_the_domains(drill):
    v, hosts = drill()
    loads = scenarios.LoadDrills(v)

    def interrupted(*_a):
        if hosts.state["hv1"] == "killed":
            raise KeyboardInterrupt

    loads._hold_arp = interrupted
    with pytest.raises(KeyboardInterrupt):
        loads.host_lost()
    v._pool.shutdown()
    assert hosts.calls == ["freeze hv1", "kill hv1", "return s-lb01,s-web01 hv1"]


def test_many_failed_requests_fail_the_drill(drill):
    v, hosts = drill()
    serving = hosts.serving
    hosts.serving = lambda: [] if hosts.state["hv1"] == "frozen" else serving()  # nobody serves while frozen
    v.drill(["host_lost"])
    passed, detail = checks(v)["drill_host_lost"]
    assert not passed and v.gaps["host_lost"]["failed_requests"] > 1 and "requests failed (timed out)" in detail
    assert detail.endswith("recovered 6.0 s after the return: lb01 alone holds the VIP, web01 serves again, lb01 answers again")


# ---- verifier_spec: two hosts get the drill, one host's spec does not change ------------------------------
def dev2(web_hosts=(None, None), **verify) -> dict:
    import yaml

    from bench.config import raw_settings
    from components.cluster import verifier_spec
    from model.settings import HostFacts, load
    from tests.conftest import ROOT

    raw = raw_settings(yaml.safe_load((ROOT / "Pulumi.dev2.yaml").read_text())["config"])
    raw["verify"] = {**raw.get("verify", {}), **verify}
    raw["webNodes"] = [{**w, **({"host": h} if h else {})} for w, h in zip(raw["webNodes"], web_hosts, strict=True)]
    return verifier_spec(load(raw, "dev2", ROOT, host=HostFacts(False, False)))


def test_two_lab_hosts_spec_names_hosts_namespaces_and_adds_host_lost():
    spec = dev2(loadDrills=True)
    assert spec["hypervisors"] == {
        "hv1": {"uri": "qemu+ssh://root@127.0.0.1:2221/system?keyfile=/var/lib/hacluster-lab/ssh/id_ed25519&no_verify=1",
                "netns": "halab-hv1"},
        "hv2": {"uri": "qemu+ssh://root@127.0.0.1:2222/system?keyfile=/var/lib/hacluster-lab/ssh/id_ed25519&no_verify=1",
                "netns": "halab-hv2"}}
    assert {n["name"]: n["host"] for n in [*spec["balancers"], *spec["webNodes"]]} == PLACED
    assert spec["drillKinds"][-1] == "host_lost" and spec["drillKinds"][:-1] == cluster.LOAD_DRILLS["drillKinds"]
    assert (spec["hostFreezeSeconds"], spec["hostDownSeconds"]) == (5, 5)
    s = from_dict(spec)
    assert s.master.host == "hv1" and [n.name for n in s.on_host("hv1")] == ["lb01", "web01"]


def test_two_lab_hosts_without_load_drills_end_the_default_drill_with_host_lost():
    spec = dev2()
    assert spec["drillKinds"] == ["keepalived", "nginx", "hard", "host_lost"] and spec["hostFreezeSeconds"] == 5
    assert from_dict(spec).hard_failure


def test_no_host_lost_without_the_drill_or_a_web_node_beside_the_master():
    spec = dev2(failoverDrill=False)
    assert "hypervisors" in spec and "drillKinds" not in spec and "hostFreezeSeconds" not in spec
    from_dict(spec)
    spec = dev2(web_hosts=("hv2", "hv2"), loadDrills=True)  # nothing to lose beside the MASTER: not drilled
    assert "host_lost" not in spec["drillKinds"] and "hostFreezeSeconds" not in spec
    from_dict(spec)
    spec = dev2(web_hosts=("hv2", "hv2"))
    assert "drillKinds" not in spec


def test_two_hosts_outside_the_lab_have_no_namespaces():
    from model.settings import HostFacts, load
    from tests.unit.test_placement import BRIDGED, TWO

    spec = cluster.verifier_spec(load({"hypervisors": TWO, **BRIDGED}, "t", ".", host=HostFacts(False, False)))
    assert spec["hypervisors"] == {"a": {"uri": TWO["a"]["uri"]}, "b": {"uri": TWO["b"]["uri"]}}
    assert from_dict(spec).hypervisors["a"].netns == ""


def test_a_one_host_stacks_spec_is_unchanged_byte_for_byte():
    """Pulumi.dev.yaml as it is, and with the load drills: the spec recorded before issue 14's hosts."""
    import yaml

    from bench.config import raw_settings
    from model.settings import HostFacts, load
    from tests.conftest import ROOT

    want = json.loads((ROOT / "tests" / "unit" / "data" / "verifier-spec-one-host.json").read_text())
    raw = raw_settings(yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"])
    got = {"dev": cluster.verifier_spec(load(raw, "dev", ROOT, host=HostFacts(False, False)))}
    raw["verify"] = {"failoverDrill": True, "loadDrills": True}
    got["dev_load_drills"] = cluster.verifier_spec(load(raw, "dev", ROOT, host=HostFacts(False, False)))
    for name in want:  # as components.check serialises it
        assert json.dumps(got[name], sort_keys=True) == json.dumps(want[name], sort_keys=True), name
