"""Clean cancel (verifier/cancel.py): a SIGTERM mid-drill runs the drill's restore, a signal during the
restore does not cut it short, what an interrupted drill left behind is undone at the start of the next
run, key files live in a private directory that goes away however the run ends, and the cancel budget
fits in the command plugin's kill grace. The cluster is a mock (MockCancelCluster, over the drill's
FakeCluster): no network, no daemons; the signals are real ones, sent to this process."""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import ROOT, known_hosts, ssh_key
from tests.unit.test_drill_kinds import SPEC, FakeCluster, FakeProber
from verifier import actions, cancel, run, scenarios
from verifier.actions import ActionError, parse_residue_probe
from verifier.cancel import CANCEL, Cancelled, Canceller
from verifier.spec import from_dict


@pytest.fixture(autouse=True)
def _fresh_cancel():
    CANCEL.reset()
    yield
    CANCEL.reset()


# ---- the canceller -----------------------------------------------------------------------------------
class MockClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_first_signal_raises_later_ones_only_say_how_long_is_left():
    lines, clock = [], MockClock()
    c = Canceller(log=lines.append, budget=20, clock=clock)
    with pytest.raises(Cancelled) as e:
        c.handle(signal.SIGTERM)
    assert e.value.exit_code == 128 + signal.SIGTERM
    clock.t += 5
    c.handle(signal.SIGINT)  # no raise
    assert lines == ["SIGTERM: cancelling; restoring what was changed (at most 20 s), then exiting",
                     "SIGINT again: still restoring, 15 s left"]
    assert c.bound(60) == 15 and c.bound(3) == 3
    clock.t += 30
    assert c.bound(60) == cancel.MIN_STEP_S  # out of budget: one short try, not none


def test_a_signal_in_a_shielded_block_takes_effect_at_its_end():
    c = Canceller(log=lambda _m: None)
    done = []
    with pytest.raises(Cancelled):
        with c.shielded():
            c.handle(signal.SIGHUP)  # does not raise here
            done.append("restored")
    assert done == ["restored"]
    assert c.bound(60) <= cancel.BUDGET_S


def test_without_a_signal_nothing_is_bounded():
    assert Canceller().bound(60) == 60 and Canceller().remaining() == float("inf")


def test_installed_handles_the_three_signals_and_puts_the_old_handlers_back():
    before = {s: signal.getsignal(s) for s in cancel.SIGNALS}
    with CANCEL.installed(lambda _m: None):
        assert all(signal.getsignal(s) == CANCEL.handle for s in cancel.SIGNALS)
        with pytest.raises(Cancelled):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs in this (the main) thread at once
    assert {s: signal.getsignal(s) for s in cancel.SIGNALS} == before


def test_the_budget_fits_in_the_command_plugins_kill_grace():
    """The plugin SIGKILLs a cancelled command's process group `killGrace` after SIGTERM: the verifier's
    restore budget must end well before (one SSH connect timeout to spare)."""
    text = (ROOT / "toolchain" / "provider-command" / "run.go").read_text()
    m = re.search(r"^(?:const )?\s*killGrace\s*=\s*(\d+)\s*\*\s*time\.Second", text, re.MULTILINE)
    assert m, "killGrace not found in run.go"
    grace = int(m.group(1))
    connect_timeout = 15  # verifier.actions.ssh_argv ConnectTimeout
    assert cancel.BUDGET_S + 5 <= grace and cancel.BUDGET_S >= connect_timeout
    assert actions.CANCEL is CANCEL  # every action's subprocess time-out is capped by the same budget


# ---- a SIGTERM mid-drill ---------------------------------------------------------------------------------
class MockCancelCluster(FakeCluster):
    """FakeCluster that sends this process SIGTERM from inside one action (`on`), like a cancelled
    `pulumi up` whose plugin signals the verifier's process group in the middle of a drill step; and that
    can cut VRRP (both then hold the VIP)."""

    def __init__(self, spec, on: str):
        super().__init__(spec)
        self.on, self.cut = on, False

    def _signal(self, what: str):
        if what == self.on:
            self.on = None  # once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the main thread takes it meanwhile

    def pause(self, lb):
        super().pause(lb)
        self._signal("pause")

    def resume(self, lb):
        self._signal("resume")  # during the restore: must not cut it short
        super().resume(lb)

    def set_priority(self, lb, priority):
        super().set_priority(lb, priority)
        if priority != lb.priority:
            self._signal("lower")

    def vrrp_cut(self, lb, cut):
        self.calls.append(f"{'cut' if cut else 'heal'} {lb.name}")
        self.cut = cut
        if cut:
            self._signal("cut")

    def addresses(self, lb):
        if self.cut and lb.name not in self.frozen:
            return f"2: eth0    inet {self.spec.vip}/24 scope global eth0\n"
        return super().addresses(lb)


@pytest.fixture
def mock_drill(monkeypatch):
    def make(on: str, **spec_kw):
        spec = from_dict({**SPEC, "stepTimeout": 2, **spec_kw})
        cluster = MockCancelCluster(spec, on)
        FakeProber.cluster = cluster
        monkeypatch.setattr(run, "Prober", FakeProber)
        monkeypatch.setattr(scenarios, "Prober", FakeProber)
        monkeypatch.setattr(run, "SETTLE_AFTER_STEP", 0.0)
        monkeypatch.setattr(run, "STABLE_S", 0.2)
        monkeypatch.setattr(scenarios, "BASELINE_S", 0.0)
        lines: list[str] = []
        v = run.Verifier(spec, cluster, log=lines.append)
        v.holder = "lb01"
        return v, cluster, lines
    return make


def checks(v):
    return {c.name: (c.passed, c.detail) for c in v.checks}


@pytest.mark.parametrize(("kind", "on", "undo"), [
    ("hard", "pause", "resume lb01"),
    ("switchover", "lower", "priority lb01 150"),
])
def test_sigterm_mid_drill_runs_the_restore(mock_drill, kind, on, undo):
    v, cluster, _ = mock_drill(on)
    with CANCEL.installed(lambda _m: None), pytest.raises(Cancelled):
        v.drill([kind])
    v._pool.shutdown()
    assert cluster.calls[-1] == undo, cluster.calls
    assert not cluster.down and cluster.prio == {"lb01": 150, "lb02": 100}
    passed, detail = checks(v)["cluster_restored"]
    assert passed, detail
    assert cluster.holder() == "lb01"


def test_sigterm_during_a_vrrp_cut_heals_it(mock_drill):
    v, cluster, lines = mock_drill("cut", drillKinds=["vrrp_cut"], cutSeconds=5)
    with CANCEL.installed(lambda _m: None), pytest.raises(Cancelled):
        v.drill(["vrrp_cut"])
    v._pool.shutdown()
    assert cluster.calls == ["cut lb01", "heal lb01"] and not cluster.cut
    assert "healed the VRRP cut on lb01 (drill cut short)" in lines


def test_a_signal_during_the_restore_does_not_cut_it_short(mock_drill):
    v, cluster, _ = mock_drill("resume")
    with CANCEL.installed(lambda _m: None), pytest.raises(Cancelled):
        v.drill(["hard"])  # the signal comes while the drill's repair step resumes lb01
    v._pool.shutdown()
    assert cluster.calls == ["pause lb01", "resume lb01"]
    assert not cluster.down and cluster.holder() == "lb01"


def test_the_cancelled_report_says_so_and_keeps_the_restore(mock_drill):
    from verifier import cli

    v, _, _ = mock_drill("pause")
    with CANCEL.installed(lambda _m: None), pytest.raises(Cancelled) as e:
        v.drill(["hard"])
    v._pool.shutdown()
    report = cli.interrupted(v.report(), e.value)
    assert not report["passed"]
    names = [c["name"] for c in report["checks"]]
    assert names[-1] == "interrupted" and "cluster_restored" in names
    assert report["checks"][-1]["detail"] == ("the verifier was cancelled by SIGTERM; the drill's changes were "
                                              "undone (cluster_restored)")


# ---- residue of a drill that was killed ---------------------------------------------------------------
class MockResidue(FakeCluster):
    """A pair that a SIGKILLed drill left with lb01 paused, VRRP cut and its priority lowered."""

    def __init__(self, spec, fail: str | None = None):
        super().__init__(spec)
        self.fail = fail

    def domain_residue(self):
        return [("lb01", "paused", "domain s-lb01 paused")]

    def node_residue(self):
        return [("lb01", "vrrp_cut", "nft table inet hacluster_drill_cut drops VRRP"),
                ("lb01", "priority", "keepalived priority 99, deployed 150")]

    def vrrp_cut(self, lb, cut):
        if self.fail == "heal":
            raise ActionError("nft: permission denied")
        self.calls.append(f"{'cut' if cut else 'heal'} {lb.name}")


def test_residue_is_undone_one_line_each():
    spec = from_dict(SPEC)
    cluster, lines = MockResidue(spec), []
    v = run.Verifier(spec, cluster, log=lines.append)
    v.clear_residue()
    v._pool.shutdown()
    assert cluster.calls == ["resume lb01", "heal lb01", "priority lb01 150"]
    assert lines[:3] == [
        "left by an interrupted drill: lb01: domain s-lb01 paused; resumed",
        "left by an interrupted drill: lb01: nft table inet hacluster_drill_cut drops VRRP; VRRP cut removed",
        "left by an interrupted drill: lb01: keepalived priority 99, deployed 150; deployed priority restored"]
    assert checks(v)["drill_residue"][0]


def test_residue_that_cannot_be_undone_fails_one_check():
    spec = from_dict(SPEC)
    v = run.Verifier(spec, MockResidue(spec, fail="heal"), log=lambda _m: None)
    v.clear_residue()
    v._pool.shutdown()
    passed, detail = checks(v)["drill_residue"]
    assert not passed and "nft: permission denied" in detail and "by hand" in detail


def test_no_residue_no_check():
    spec = from_dict(SPEC)
    v = run.Verifier(spec, FakeCluster(spec), log=lambda _m: None)
    v.clear_residue()
    v._pool.shutdown()
    assert not v.checks


def test_the_ssh_residue_probe_is_parsed():
    spec = from_dict(SPEC)
    lb = spec.balancers[0]
    assert parse_residue_probe(lb, "cut=1\nprio=99\n") == [
        ("lb01", "vrrp_cut", "nft table inet hacluster_drill_cut drops VRRP"),
        ("lb01", "priority", "keepalived priority 99, deployed 150")]
    assert parse_residue_probe(lb, "cut=0\nprio=150\n") == []
    assert parse_residue_probe(lb, "cut=0\nprio=\n") == []  # no priority line: nothing to say


def test_ssh_residue_looks_at_domains_then_balancers(monkeypatch):
    spec = from_dict(SPEC)
    seen = []

    def fake_run(argv, timeout=None, **_kw):
        seen.append(argv)
        verb = next((w for w in argv if w in ("domstate", "schedinfo")), "")
        out = {"domstate": "paused\n" if argv[-1] == "s-lb01" else "running\n",
               "schedinfo": "Scheduler      : posix\nvcpu_quota     : 10000\n"}.get(verb, "")
        if argv[0] == "ssh":
            out = "cut=1\nprio=150\n" if "ops@192.168.81.210" in argv else "cut=0\nprio=99\n"
        return subprocess.CompletedProcess(argv, 0, out, "")

    monkeypatch.setattr(actions.subprocess, "run", fake_run)
    a = actions.SshActions(spec, "/tmp/key-mock", known_hosts({b.name: b.ip for b in spec.balancers}))
    assert a.domain_residue() == [("lb01", "paused", "domain s-lb01 paused"),
                                  ("lb02", "starved", "domain s-lb02 vcpu_quota 10000")]
    assert a.node_residue() == [("lb01", "vrrp_cut", "nft table inet hacluster_drill_cut drops VRRP"),
                                ("lb02", "priority", "keepalived priority 99, deployed 100")]
    assert seen[0][:5] == ["virsh", "-q", "-c", "qemu:///system", "domstate"]


# ---- key files -------------------------------------------------------------------------------------------
def test_the_runs_known_hosts_in_the_key_dir_goes_away_with_the_key_on_a_signal(tmp_path, monkeypatch):
    """The pinned host keys (verifier/hostkeys.py) of a run live in its private key dir: a cancel removes both."""
    from verifier.hostkeys import KnownHosts

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with CANCEL.installed(lambda _m: None), pytest.raises(Cancelled):
        with cancel.private_key("-----BEGIN KEY-----\nmock\n-----END KEY-----", "hacluster-day2") as path:
            d = os.path.dirname(path)
            with KnownHosts({"lb01": ssh_key("", fill=1)}, {"lb01": "192.168.81.210"}, d) as kh:
                assert os.path.dirname(kh.path) == d and stat.S_IMODE(os.stat(kh.path).st_mode) == 0o600
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
    assert not os.path.exists(d) and os.listdir(tmp_path) == []


def test_private_key_dir_is_0700_and_goes_away_on_a_signal(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with CANCEL.installed(lambda _m: None), pytest.raises(Cancelled):
        with cancel.private_key("-----BEGIN KEY-----\nmock\n-----END KEY-----", "hacluster-verify") as path:
            d = os.path.dirname(path)
            assert stat.S_IMODE(os.stat(d).st_mode) == 0o700 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert os.path.basename(d).startswith(f"hacluster-verify-{os.getpid()}-")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert not list(tmp_path.iterdir())


def test_stale_key_dirs_of_dead_processes_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = tmp_path / f"hacluster-day2-{dead}-abc"
    live = tmp_path / f"hacluster-day2-{os.getpid()}-def"
    other = tmp_path / f"hacluster-verify-{dead}-ghi"  # another program's prefix: not this sweep's
    for d in (stale, live, other):
        d.mkdir(mode=0o700)
        (d / "id").write_text("mock key")
    lines = []
    assert cancel.sweep_stale("hacluster-day2", str(tmp_path), lines.append) == [str(stale)]
    assert not stale.exists() and live.exists() and other.exists()
    assert lines == [f"removed 1 key directory left by a killed run: {stale}"]


# ---- day 2 ---------------------------------------------------------------------------------------------
def test_day2_sigterm_removes_its_key_and_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    import day2.__main__ as day2

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    keys = []

    def booting(spec, ssh, known):  # a cancelled `pulumi up` while day 2 waits for the node's boot
        keys.extend([ssh[ssh.index("-i") + 1], known.path])
        assert os.path.exists(keys[0]) and os.path.dirname(known.path) == os.path.dirname(keys[0])
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
        raise AssertionError("not reached: the signal ends the wait")

    monkeypatch.setattr(day2, "wait_booted", booting)
    monkeypatch.setattr(sys, "argv", ["day2"])
    monkeypatch.setenv("HACLUSTER_DAY2_SPEC", json.dumps({"node": "web01", "ip": "192.168.81.230", "sshUser": "ops"}))
    monkeypatch.setenv("HACLUSTER_SSH_KEY", "-----BEGIN KEY-----\nmock\n-----END KEY-----")
    monkeypatch.setenv("HACLUSTER_HOST_KEYS", json.dumps({"web01": ssh_key("", fill=1)}))
    assert day2.guarded() == 128 + signal.SIGTERM
    assert keys and not any(os.path.exists(k) for k in keys) and not list(tmp_path.iterdir())
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("day2: web01: cancelled by SIGTERM (the deployment was cancelled or ended "
                                            "early); run `pulumi up` again to finish this node's change")


class MockNodes:
    """day2.gate.Nodes without SSH: the balancers' agents see web01 and web02 serve, and `on` (an op) gets
    this process SIGTERM, as a cancelled `pulumi up` would, while it runs."""

    def __init__(self, on: str):
        self.on, self.ops = on, []

    def _answer(self, op):
        self.ops.append(op)
        if op == self.on:
            self.on = None
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        return {"agent": {"healthy": ["web01", "web02"]}, "met": True, "vip": False, "keepalived": "active",
                "nginx": "active", "healthz": 200}

    def many(self, hosts, op="look", **_req):
        return {name: self._answer(op) for name in hosts}

    def call(self, _host, op="look", **_req):
        return self._answer(op)


GATE_SPEC = {"node": "web01", "ip": "192.168.81.230", "role": "web", "drain": True, "allowDowntime": False,
             "pools": [["web01", "web02"]], "drainTimeout": 5, "vip": "192.168.81.100", "interface": "eth0",
             "balancers": [{"name": "lb01", "ip": "192.168.81.210"}, {"name": "lb02", "ip": "192.168.81.220"}]}


def test_day2_cancelled_mid_drain_admits_the_web_node_again(capsys):
    from day2 import gate

    nodes = MockNodes(on="drain")
    with CANCEL.installed(lambda _m: None), pytest.raises(Cancelled):
        gate.drain(dict(GATE_SPEC), nodes)
    assert nodes.ops == ["look", "look", "drain", "undrain", "undrain"]  # the SIGTERM came during the first drain
    assert "day2: web01: cancelled while it was drained: admitted again on lb01, lb02" in capsys.readouterr().err


def test_day2_cancelled_while_a_balancer_is_taken_out_starts_its_keepalived(capsys):
    from day2 import gate

    nodes = MockNodes(on="stop-keepalived")
    with CANCEL.installed(lambda _m: None), pytest.raises(Cancelled):
        gate.drain({**GATE_SPEC, "node": "lb01", "ip": "192.168.81.210", "role": "lb"}, nodes)
    assert nodes.ops[-2:] == ["stop-keepalived", "start-keepalived"]
    assert "day2: lb01: cancelled while it was taken out: keepalived started again" in capsys.readouterr().err
