"""The drill's ways to break the VIP holder (verifier.run.KINDS): the spec's drillKinds, the SSH command
lines of the new actions, and the drill's orchestration over fake actions and a fake prober (no network)."""

import subprocess
import time

import pytest

from model import render
from model.settings import HostFacts, load
from tests.conftest import known_hosts
from verifier import actions, run
from verifier.actions import KEEPALIVED_CONF, ActionError, Actions, SshActions, with_priority
from verifier.http import Probe
from verifier.spec import DRILL_KINDS, SpecError, from_dict

SPEC = {"vip": "192.168.81.100", "serverName": "www.example.local", "settle": 0,
        "balancers": [{"name": "lb01", "ip": "192.168.81.210", "priority": 150, "state": "MASTER", "domain": "s-lb01"},
                      {"name": "lb02", "ip": "192.168.81.220", "priority": 100, "state": "BACKUP", "domain": "s-lb02"}],
        "webNodes": [{"name": "web01", "ip": "192.168.81.230"}, {"name": "web02", "ip": "192.168.81.240"}]}
NETNS_HOSTS = {b: {"netns": f"ns-{b}", "keepalived": {"pidFile": "/x", "start": ["k"]},
                   "nginx": {"pidFile": "/y", "start": ["n"]}} for b in ("lb01", "lb02")}


# ---- the spec --------------------------------------------------------------------------------------
def test_default_kinds_follow_health_check_and_hard_failure():
    assert from_dict(SPEC).drill_kinds == ("keepalived", "nginx")
    assert from_dict({**SPEC, "healthCheck": False, "hardFailure": True}).drill_kinds == ("keepalived", "hard")
    assert from_dict({**SPEC, "drillKinds": ["poweroff", "switchover"]}).drill_kinds == ("poweroff", "switchover")


def test_every_kind_has_break_and_repair_steps():
    assert set(run.KINDS) == set(DRILL_KINDS)
    steps = [s for k in run.KINDS.values() for s in (k.break_step, k.restore_step)]
    assert len(steps) == len(set(steps))
    assert run.KINDS["nginx"].break_step == "nginx_stop" and run.KINDS["hard"].restore_step == "hard_resume"


def test_one_registry_gives_every_list_of_kinds():
    """verifier/drills.py: every kind once; the verifier, the stack's quick form and the bench read it."""
    from bench import config as bench_config
    from bench import report
    from components.cluster import HOST_LOST_DRILL, LOAD_DRILLS
    from verifier import drills
    from verifier.scenarios import LoadDrills
    names = [d.name for d in drills.DRILLS]
    assert len(names) == len(set(names))
    assert set(run.KINDS) == {d.name for d in drills.DRILLS if not d.under_load}
    assert all(hasattr(LoadDrills, run.LOAD_RUNS.get(k, "web")) for k in drills.LOAD_KINDS)
    assert report.LOAD_KIND_ORDER == drills.LOAD_KINDS and bench_config.KINDS == drills.BENCH_KINDS
    assert "host_lost" not in LOAD_DRILLS["drillKinds"] and "host_lost" in bench_config.TWO_HOSTS_KINDS
    # The quick form reaches the spec, and without it the spec has the registry's full lengths.
    quick = from_dict({**SPEC, **LOAD_DRILLS, **HOST_LOST_DRILL, "drillKinds": ["web_freeze", "vrrp_cut"]})
    full = from_dict({**SPEC, "drillKinds": ["web_freeze", "vrrp_cut"]})
    for d in drills.DRILLS:
        for key, (short, long) in d.seconds.items():
            field = "".join("_" + c.lower() if c.isupper() else c for c in key)
            assert (getattr(quick, field), getattr(full, field)) == (short, long), key


@pytest.mark.parametrize(("kinds", "words"), [
    (["reboot"], "drillKinds = ['reboot']"),
    ([], "drillKinds = []"),
    ("keepalived", "drillKinds = 'keepalived'"),
])
def test_bad_kinds_are_refused(kinds, words):
    with pytest.raises(SpecError, match="drillKinds") as e:
        from_dict({**SPEC, "drillKinds": kinds})
    assert words in str(e.value)


def test_poweroff_needs_ssh_actions():
    with pytest.raises(SpecError, match="poweroff needs ssh actions"):
        from_dict({**SPEC, "actions": "netns", "netns": "client", "hosts": NETNS_HOSTS, "drillKinds": ["poweroff"]})


# ---- ssh command lines -----------------------------------------------------------------------------
@pytest.fixture
def calls(monkeypatch):
    seen = []

    def mock_run(argv, timeout, stdin=None):
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(actions, "_run", mock_run)
    return seen


def test_kill_poweroff_and_priority_command_lines(calls):
    spec = from_dict({**SPEC, "libvirtUri": "qemu:///system"})
    ssh = SshActions(spec, "/tmp/key-mock", known_hosts({b.name: b.ip for b in spec.balancers}))
    ssh.kill(spec.master, "nginx")
    assert calls[-1][-1] == "sudo -n systemctl kill --signal=SIGKILL nginx"
    ssh.power_off(spec.master)
    assert calls[-1] == ["virsh", "-q", "-c", "qemu:///system", "destroy", "s-lb01"]
    ssh.power_on(spec.master)
    assert calls[-1] == ["virsh", "-q", "-c", "qemu:///system", "start", "s-lb01"]
    ssh.set_priority(spec.master, 99)
    cmd = calls[-1][-1]
    assert cmd.startswith("sudo -n sed -i -E ") and cmd.endswith("&& sudo -n systemctl reload keepalived")
    assert "\\199/" in cmd and KEEPALIVED_CONF in cmd and "grep -Eqx ' *priority 99'" in cmd
    with pytest.raises(ActionError):
        ssh.set_priority(spec.master, 0)


def test_virsh_goes_to_each_nodes_own_hypervisor(calls):
    """Several hypervisors: a node's host's uri in the spec wins over the spec's libvirtUri."""
    from components.cluster import verifier_spec
    from tests.unit.test_placement import BRIDGED, TWO

    s = load({"hypervisors": TWO, **BRIDGED}, "t", ".", host=HostFacts(False, False))
    spec = from_dict(verifier_spec(s))
    ssh = SshActions(spec, "/tmp/key-mock", known_hosts({b.name: b.ip for b in spec.balancers}))
    uri = {n.name: s.hypervisor(n).uri for n in s.nodes}
    assert uri["lb01"] != uri["lb02"]  # spread
    for lb in spec.balancers:
        ssh.power_off(lb)
        assert calls[-1] == ["virsh", "-q", "-c", uri[lb.name], "destroy", f"t-{lb.name}"]
    ssh.web_pause(spec.web_nodes[1])
    assert calls[-1][3] == uri["web02"]
    # one host: the spec carries one URI and no node names its own (the spec of today's stacks is unchanged)
    one = verifier_spec(load({}, "dev", ".", host=HostFacts(False, False)))
    assert all("libvirtUri" not in n for n in [*one["balancers"], *one["webNodes"]])


def test_sed_of_set_priority_rewrites_only_the_priority_line(tmp_path, calls):
    """The exact sed expression SshActions sends, run here on a rendered keepalived.conf: lowered, then restored."""
    s = load({}, "dev", ".", host=HostFacts(False, False))
    conf = tmp_path / "keepalived.conf"
    original = render.keepalived_conf(s, s.balancers[0], "pw")
    conf.write_text(original)
    spec = from_dict(SPEC)
    ssh = SshActions(spec, "/tmp/key-mock", known_hosts({b.name: b.ip for b in spec.balancers}))
    for prio, want in ((99, with_priority(original, 99)), (150, original)):
        ssh.set_priority(spec.master, prio)
        sed = calls[-1][-1].split(" && ")[0].replace("sudo -n ", "").replace(KEEPALIVED_CONF, str(conf))
        subprocess.run(["sh", "-c", sed], check=True)
        assert conf.read_text() == want
    assert "priority 99" in with_priority(original, 99) and "priority 150" not in with_priority(original, 99)


def test_keepalived_conf_path_is_the_rendered_one():
    assert KEEPALIVED_CONF == render.VM_PATHS.keepalived_conf


def test_with_priority_wants_exactly_one_priority_line():
    with pytest.raises(ActionError, match="found 0"):
        with_priority("vrrp_instance VI_1 {\n}\n", 50)


# ---- the drill over fake actions ---------------------------------------------------------------------
class FakeCluster(Actions):
    """A pair whose VIP moves like keepalived's would: to the highest-priority balancer that is up."""

    poll_interval = 0.01
    IP = "2: eth0    inet 192.168.81.210/24 brd 192.168.81.255 scope global eth0\n"

    def __init__(self, spec):
        self.spec = spec
        self.prio = {b.name: b.priority for b in spec.balancers}
        self.down: set[str] = set()  # keepalived or nginx stopped, paused, powered off
        self.frozen: set[str] = set()
        self.calls: list[str] = []

    def holder(self) -> str | None:
        up = [b for b in self.prio if b not in self.down]
        return max(up, key=self.prio.get) if up else None

    def addresses(self, lb):
        if lb.name in self.frozen:
            raise ActionError(f"{lb.name} does not answer")
        return f"2: eth0    inet {self.spec.vip}/24 scope global eth0\n" if self.holder() == lb.name else self.IP

    def _do(self, verb, lb, broken, frozen=False):
        self.calls.append(f"{verb} {lb.name}")
        (self.down.add if broken else self.down.discard)(lb.name)
        if frozen:
            (self.frozen.add if broken else self.frozen.discard)(lb.name)

    def stop(self, lb, service):
        self._do(f"stop {service}", lb, True)

    def start(self, lb, service):
        self._do(f"start {service}", lb, False)

    def kill(self, lb, service):
        self._do(f"kill {service}", lb, True)

    def pause(self, lb):
        self._do("pause", lb, True, frozen=True)

    def resume(self, lb):
        self._do("resume", lb, False, frozen=True)

    def power_off(self, lb):
        self._do("power_off", lb, True, frozen=True)

    def power_on(self, lb):
        self._do("power_on", lb, False, frozen=True)

    def set_priority(self, lb, priority):
        self.calls.append(f"priority {lb.name} {priority}")
        self.prio[lb.name] = priority


class FakeProber:
    """Stands in for verifier.http.Prober: every probe answered by whoever holds the VIP right now."""

    cluster: FakeCluster

    def __init__(self, *_a, **_kw):
        self.probes: list[Probe] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def snapshot(self):
        h = self.cluster.holder()
        self.probes.append(Probe(time.monotonic(), h is not None, h, None, "web01"))
        return list(self.probes)


@pytest.fixture
def fake(monkeypatch):
    def make(**spec_kw):
        spec = from_dict({**SPEC, "stepTimeout": 2, **spec_kw})
        cluster = FakeCluster(spec)
        FakeProber.cluster = cluster
        monkeypatch.setattr(run, "Prober", FakeProber)
        monkeypatch.setattr(run, "SETTLE_AFTER_STEP", 0.0)
        monkeypatch.setattr(run.time, "sleep", lambda _s: None)
        v = run.Verifier(spec, cluster, log=lambda _m: None)
        v.holder = "lb01"
        return v, cluster
    return make


def test_every_kind_breaks_and_repairs_the_master(fake):
    v, cluster = fake()
    v.drill(list(DRILL_KINDS))
    v._pool.shutdown()
    failed = {c.name: c.detail for c in v.checks if not c.passed}
    assert not failed, failed
    assert cluster.calls == [
        "stop keepalived lb01", "start keepalived lb01", "stop nginx lb01", "start nginx lb01",
        "kill nginx lb01", "start nginx lb01", "pause lb01", "resume lb01", "power_off lb01", "power_on lb01",
        "priority lb01 99", "priority lb01 150"]
    assert {"nginx_kill", "nginx_restart", "poweroff", "poweron", "switchover", "switchback"} <= set(v.gaps)
    assert v.timeline and all(p.ok for p in v.timeline)
    assert cluster.prio == {"lb01": 150, "lb02": 100} and v.holder == "lb01"


def test_a_switchover_that_does_not_move_the_vip_fails_and_is_restored(fake):
    v, cluster = fake()
    cluster.set_priority = lambda lb, p: cluster.calls.append(f"priority {lb.name} {p}")  # reload ignored
    v.drill(["switchover", "keepalived"])
    v._pool.shutdown()
    failed = {c.name: c.detail for c in v.checks if not c.passed}
    assert "stayed on lb01" in failed["drill_switchover"]
    assert failed["drill_keepalived_stop"].startswith("not run")
    assert cluster.calls[-1] == "priority lb01 150"  # restore() put the priority back


def test_switchover_needs_preempt(fake):
    v, cluster = fake(preempt=False)
    v.drill(["switchover"])
    v._pool.shutdown()
    assert any(c.name == "drill_switchover" and "needs preempt" in c.detail for c in v.checks)
    assert not cluster.calls
