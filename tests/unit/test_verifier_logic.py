"""The verifier's pure decisions: gaps from probe timelines, spread tolerance, User-Agent routing, holders,
and the spec it receives from components.cluster.verifier_spec."""

import json
import os
import stat
import subprocess
import tempfile
import time

import pytest

from tests.conftest import known_hosts
from verifier import actions, cli, logic
from verifier.actions import Actions, SshActions
from verifier.run import Verifier
from verifier.spec import SpecError, from_dict, parse


# ---- gaps ------------------------------------------------------------------------------------------
def timeline(start: float, pattern: str, step: float = 0.1):
    """'..xx.' -> probes every `step` s from `start`: '.' answered 200, 'x' failed."""
    return [(round(start + i * step, 3), c == ".") for i, c in enumerate(pattern)]


def test_no_failures_no_gap():
    gap = logic.longest_gap(timeline(0, "........"), 0, 1)
    assert gap == logic.Gap(0.0, 0, True)


def test_gap_runs_from_first_failure_to_first_success():
    gap = logic.longest_gap(timeline(10, "...xxxxxx..."), 10, 12)
    assert gap.gap_s == pytest.approx(0.6)
    assert gap.failed_probes == 6 and gap.recovered


def test_longest_of_several_runs_and_all_failures_counted():
    gap = logic.longest_gap(timeline(0, ".xx..xxxx.x."), 0, 2)
    assert gap.gap_s == pytest.approx(0.4)
    assert gap.failed_probes == 7


def test_window_excludes_probes_outside_it():
    probes = timeline(0, "xxxx......xx")  # failures before the window and after it
    gap = logic.longest_gap(probes, 0.4, 0.95)
    assert gap == logic.Gap(0.0, 0, True)


def test_unrecovered_run_counts_until_window_end():
    gap = logic.longest_gap(timeline(0, "..xxxx"), 0, 3.0)
    assert gap.gap_s == pytest.approx(2.8)
    assert not gap.recovered


def test_unordered_probes_are_sorted():
    probes = list(reversed(timeline(0, "..xxx..")))
    assert logic.longest_gap(probes, 0, 1).gap_s == pytest.approx(0.3)


def test_first_after_wants_a_200_from_the_target():
    probes = [(1.0, True, "lb01"), (1.1, False, None), (1.2, True, "lb01"), (1.3, True, "lb02")]
    assert logic.first_after(probes, 1.05, "lb02") == 1.3
    assert logic.first_after(probes, 1.05, "lb01") == 1.2
    assert logic.first_after(probes, 1.35, "lb02") is None


# ---- distribution ----------------------------------------------------------------------------------
def test_even_spread_passes():
    ok, detail = logic.distribution_verdict({"web01": 15, "web02": 15}, {"web01": 1, "web02": 1})
    assert ok, detail


def test_a_node_never_reached_fails():
    ok, detail = logic.distribution_verdict({"web01": 30}, {"web01": 1, "web02": 1})
    assert not ok and "web02 never answered" in detail


def test_share_outside_tolerance_fails_and_inside_passes():
    weights = {"web01": 1, "web02": 1}
    assert logic.tolerance(0.5, 30) == pytest.approx(0.2739, abs=1e-3)
    assert logic.distribution_verdict({"web01": 22, "web02": 8}, weights)[0]  # 73 % vs 50 %: within 27 %
    ok, detail = logic.distribution_verdict({"web01": 25, "web02": 5}, weights)
    assert not ok and "web01 got 83%" in detail


def test_weights_shape_the_expected_share():
    weights = {"web01": 3, "web02": 1}
    assert logic.distribution_verdict({"web01": 30, "web02": 10}, weights)[0]
    assert not logic.distribution_verdict({"web01": 10, "web02": 30}, weights)[0]


def test_without_proportions_only_reach_counts():
    ok, _ = logic.distribution_verdict({"web01": 28, "web02": 2}, {"web01": 1, "web02": 1}, proportional=False)
    assert ok


def test_answer_from_outside_the_pool_fails():
    ok, detail = logic.distribution_verdict({"web01": 10, "web03": 1}, {"web01": 1})
    assert not ok and "web03" in detail


def test_tolerance_has_a_floor():
    assert logic.tolerance(0.5, 10_000) == 0.2


# ---- User-Agent routing ----------------------------------------------------------------------------
RULES = [("iphone|ipad", "apple"), ("android", "android"), ("chrome", "desktop")]


@pytest.mark.parametrize(("family", "pool"), [
    ("iphone", "apple"),
    ("android", "android"),  # its UA also says Chrome: the first matching rule wins
    ("chrome", "desktop"),
    ("firefox", "default"),
    ("curl", "default"),
])
def test_expected_pool_first_match_case_insensitive(family, pool):
    assert logic.expected_pool(logic.USER_AGENTS[family], RULES, "default") == pool


def test_no_rules_means_default_pool():
    assert logic.expected_pool(logic.USER_AGENTS["iphone"], [], "web") == "web"


# ---- holders ---------------------------------------------------------------------------------------
IP_OUT = ("2: eth0    inet 192.168.81.210/24 brd 192.168.81.255 scope global eth0\\       valid_lft forever\n"
          "2: eth0    inet 192.168.81.100/24 scope global secondary eth0\\       valid_lft forever\n")


def test_has_address_matches_whole_addresses():
    assert logic.has_address(IP_OUT, "192.168.81.100")
    assert not logic.has_address(IP_OUT, "192.168.81.10")
    assert not logic.has_address("", "192.168.81.100")


def test_one_steady_holder_is_the_expected_master():
    samples = [{"lb01": True, "lb02": False}] * 3
    assert logic.holder_verdict(samples, "lb01")[:2] == (True, True)
    single, expected, detail, holder = logic.holder_verdict(samples, "lb02")
    assert single and not expected and holder == "lb01" and "expected the MASTER lb02" in detail


def test_two_holders_in_any_sample_is_split_brain():
    samples = [{"lb01": True, "lb02": False}, {"lb01": True, "lb02": True}, {"lb01": True, "lb02": False}]
    single, _, detail, _ = logic.holder_verdict(samples, "lb01")
    assert not single and detail.startswith("split brain: lb01 and lb02")


def test_no_holder_fails_and_names_unreadable_balancers():
    single, _, detail, holder = logic.holder_verdict([{"lb01": False, "lb02": None}], "lb01")
    assert not single and holder is None
    assert detail == "no balancer holds the VIP (could not read lb02)"


def test_a_moving_vip_is_flapping():
    samples = [{"lb01": True, "lb02": False}, {"lb01": False, "lb02": True}]
    single, _, detail, _ = logic.holder_verdict(samples, None)
    assert not single and "flapping" in detail


def test_nopreempt_accepts_any_single_holder():
    assert logic.holder_verdict([{"lb01": False, "lb02": True}], None)[:2] == (True, True)


# ---- the holder check over pluggable actions --------------------------------------------------------
class FakeActions(Actions):
    """Answers `ip -o addr` from a fixed map; no network, no processes."""

    poll_interval = 0.01

    def __init__(self, vip_on: set[str]):
        self.vip_on = vip_on

    def addresses(self, lb):
        return IP_OUT if lb.name in self.vip_on else IP_OUT.splitlines()[0]


SPEC = {"vip": "192.168.81.100", "serverName": "www.example.local", "settle": 0, "converge": 0.3,
        "balancers": [{"name": "lb01", "ip": "192.168.81.210", "priority": 150, "state": "MASTER"},
                      {"name": "lb02", "ip": "192.168.81.220", "priority": 100, "state": "BACKUP"}],
        "webNodes": [{"name": "web01", "ip": "192.168.81.230"}, {"name": "web02", "ip": "192.168.81.240"}]}


@pytest.mark.parametrize(("vip_on", "passed", "words"), [
    ({"lb01"}, True, "lb01 holds the VIP"),
    ({"lb01", "lb02"}, False, "split brain"),
    (set(), False, "no balancer holds the VIP"),
    ({"lb02"}, False, "expected the MASTER lb01"),
])
def test_holder_check_with_fake_actions(vip_on, passed, words):
    v = Verifier(from_dict(SPEC), FakeActions(vip_on), log=lambda _msg: None)
    assert v.check_holder() is passed
    assert any(words in c.detail for c in v.checks)
    v._pool.shutdown()


class ConvergingActions(FakeActions):
    """A pair right after a reboot: the BACKUP took the VIP first, then the MASTER preempts (both hold it
    for a moment), then the MASTER alone: one holder per call of the sequence, then the last for good."""

    def __init__(self, sequence: list[set[str]]):
        super().__init__(sequence[0])
        self.sequence, self.calls = sequence, 0

    def addresses(self, lb):
        self.vip_on = self.sequence[min(self.calls // 2, len(self.sequence) - 1)]  # two balancers a sample
        self.calls += 1
        return super().addresses(lb)


def test_a_converging_pair_passes_once_it_settles():
    v = Verifier(from_dict({**SPEC, "converge": 30}), ConvergingActions([{"lb02"}, {"lb01", "lb02"}, {"lb01"}]),
                 log=lambda _msg: None)
    assert v.check_holder() is True
    detail = next(c.detail for c in v.checks if c.name == "single_holder")
    assert "lb01 holds the VIP" in detail and "settled after" in detail, detail
    v._pool.shutdown()


class SlowConvergingActions(ConvergingActions):
    """The MASTER still booting: each sample of it takes longer than the whole converge time (ssh waits)."""

    def addresses(self, lb):
        if lb.name == "lb01" and self.calls < 2:
            time.sleep(0.4)
        return super().addresses(lb)


def test_a_window_slowed_past_converge_still_gets_another():
    v = Verifier(from_dict({**SPEC, "settle": 0.5, "converge": 0.3}), SlowConvergingActions([{"lb02"}, {"lb01"}]),
                 log=lambda _msg: None)
    assert v.check_holder() is True
    detail = next(c.detail for c in v.checks if c.name == "single_holder")
    assert "settled after" in detail and "flapping" in detail, detail
    v._pool.shutdown()


def test_split_brain_that_lasts_past_converge_fails():
    v = Verifier(from_dict({**SPEC, "converge": 0.3}), ConvergingActions([{"lb01", "lb02"}]), log=lambda _msg: None)
    assert v.check_holder() is False
    detail = next(c.detail for c in v.checks if c.name == "single_holder")
    assert detail.startswith("split brain: lb01 and lb02 both hold the VIP (for "), detail
    v._pool.shutdown()


# ---- the spec --------------------------------------------------------------------------------------
def test_spec_from_the_stack_settings_parses():
    from components.cluster import verifier_spec
    from model.settings import HostFacts, load

    spec = parse(json.dumps(verifier_spec(load({}, "dev", ".", host=HostFacts(False, False)))))
    assert spec.master.name == "lb01" and spec.backup.name == "lb02"
    assert spec.netns == "halab" and spec.actions == "ssh" and spec.preempt and spec.health_check
    assert spec.pools == {"web": ["web01", "web02"]} and spec.default_pool == "web"


def test_spec_problems_are_listed_together():
    with pytest.raises(SpecError) as e:
        from_dict({"vip": "192.168.81.100", "balancers": [{"name": "lb01", "ip": "x", "priority": 1}],
                   "webNodes": [], "actions": "telnet", "timeout": -1})
    msg = str(e.value)
    for words in ("serverName: required", "exactly two", "webNodes: required", "actions = 'telnet'", "timeout = -1"):
        assert words in msg


def test_netns_actions_need_hosts_and_a_client_namespace():
    with pytest.raises(SpecError, match=r"hosts\.lb01") as e:
        from_dict({**SPEC, "actions": "netns"})
    assert "needs netns" in str(e.value)


# ---- ssh actions and the key file (no network: the command line is captured) -------------------------
def test_ssh_actions_use_the_key_only_and_pin_the_host_key(monkeypatch):
    calls = []

    def mock_run(argv, timeout, stdin=None):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, IP_OUT, "")

    monkeypatch.setattr(actions, "_run", mock_run)
    spec = from_dict({**SPEC, "sshUser": "ops"})
    kh = known_hosts({b.name: b.ip for b in spec.balancers})
    ssh = SshActions(spec, "/tmp/key-mock", kh)
    assert logic.has_address(ssh.addresses(spec.master), spec.vip)
    ssh.stop(spec.master, "keepalived")
    argv = calls[-1]
    opts = " ".join(argv)
    for words in ("-i /tmp/key-mock", "BatchMode=yes", "StrictHostKeyChecking=yes", f"UserKnownHostsFile={kh.path}",
                  "GlobalKnownHostsFile=/dev/null", "HostKeyAlias=192.168.81.210", "HostKeyAlgorithms=ssh-ed25519",
                  "ConnectTimeout=15", "IdentitiesOnly=yes"):
        assert words in opts, words
    assert "StrictHostKeyChecking=no" not in opts and "UserKnownHostsFile=/dev/null" not in opts
    assert argv[-2:] == ["ops@192.168.81.210", "sudo -n systemctl stop keepalived"]
    assert calls[0][-1] == "ip -o addr show dev eth0"


def test_key_file_is_private_and_removed(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv(cli.KEY_ENV, "-----BEGIN OPENSSH PRIVATE KEY-----\nmock\n-----END OPENSSH PRIVATE KEY-----")
    with cli.key_file() as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        assert os.path.dirname(os.path.dirname(path)) == str(tmp_path)
        assert open(path).read().endswith("-----\n")
    assert not list(tmp_path.iterdir()), "the key directory must be gone"
    monkeypatch.setenv(cli.KEY_ENV, "")
    with cli.key_file() as path:
        assert path is None


def test_bad_spec_still_prints_one_json_report(monkeypatch, capsys):
    monkeypatch.setenv(cli.SPEC_ENV, "{not json")
    assert cli.main([]) == 2
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["passed"] is False and "not JSON" in report["checks"][0]["detail"]
    assert err.startswith("FAILED environment:")


# ---- firewall_closed -------------------------------------------------------------------------------
def test_firewall_probe_sources_and_verdict():
    import ipaddress

    from verifier import firewall as fwc
    from verifier.spec import Firewall

    own = ipaddress.IPv4Interface("192.168.81.1/24")
    lbs = ["192.168.81.210", "192.168.81.220"]
    taken = {*lbs, "192.168.81.230", "192.168.81.240", "192.168.81.100", "192.168.81.254"}
    # the nat default: SSH only from the gateway (this namespace), so SSH is probed from a spare address
    p = fwc.plan(own, Firewall(), lbs, taken)
    assert p == fwc.Plan(ssh_src="192.168.81.253", http_src="192.168.81.1", spare="192.168.81.253")
    ok, detail = fwc.verdict(p, {"lb01": False, "lb02": False, "web01": False, "web02": False},
                             {"web01": False, "web02": False})
    assert ok and detail == ("ssh (22) from 192.168.81.253 (outside firewall.sshFrom) refused/dropped on lb01, lb02, "
                             "web01, web02; http (80) from 192.168.81.1 (not a balancer) refused/dropped on web01, web02")
    ok, detail = fwc.verdict(p, {"lb01": False, "web01": True}, {"web01": False, "web02": True})
    assert not ok and "ssh (22) from 192.168.81.253 (outside firewall.sshFrom) accepted by web01" in detail, detail
    assert "http (80) from 192.168.81.1 (not a balancer) accepted by web02" in detail, detail
    # webHttpFrom holds the gateway (the bench's direct baseline): HTTP is probed from the spare address
    p = fwc.plan(own, Firewall(ssh_from=("10.0.0.0/8",), web_http_from=("192.168.81.1/32",)), lbs, taken)
    assert p == fwc.Plan(ssh_src="192.168.81.1", http_src="192.168.81.253", spare="192.168.81.253")
    # nothing needs the spare one: it is not added
    assert fwc.plan(own, Firewall(ssh_from=("10.0.0.0/8",)), lbs, taken).spare is None
    # bridge mode's default: the whole subnet may SSH in, so that part is not probed (and says so)
    p = fwc.plan(own, Firewall(ssh_from=("192.168.81.0/24",)), lbs, taken)
    assert p.ssh_src is None and p.http_src == "192.168.81.1"
    ok, detail = fwc.verdict(p, {}, {"web01": False})
    assert ok and detail.startswith("ssh (22) not probed: every address of the lab namespace may connect"), detail


def test_firewall_check_probes_every_node_and_port_it_must_close(monkeypatch):
    """The check with its network parts stubbed: who is probed, from where, and the extra address added only
    inside the spec's namespace."""
    import ipaddress

    from verifier import firewall as fwc

    calls, added = [], []
    monkeypatch.setattr(fwc, "lab_side", lambda ips: ("virbr1", ipaddress.IPv4Interface("192.168.81.1/24")))
    monkeypatch.setattr(fwc.netns, "check_inside", lambda ns: added.append(("inside", ns)))
    monkeypatch.setattr(fwc, "_ip", lambda *argv: added.append(argv) or "")
    monkeypatch.setattr(fwc, "in_use", lambda: {"192.168.81.1", "192.168.81.254"})  # .254: a neighbour answered
    spec = from_dict({**SPEC, "netns": "halab"})

    def fake_connect(src, dst, port):
        calls.append((src, dst, port))
        return dst == "192.168.81.240" and port == 80  # web02 answers HTTP from anyone
    ok, detail = fwc.check(spec, fake_connect)
    assert not ok and "http (80) from 192.168.81.1 (not a balancer) accepted by web02" in detail, detail
    assert sorted(calls) == sorted([("192.168.81.253", ip, 22) for ip in (
        "192.168.81.210", "192.168.81.220", "192.168.81.230", "192.168.81.240")] + [
        ("192.168.81.1", "192.168.81.230", 80), ("192.168.81.1", "192.168.81.240", 80)])
    assert added == [("inside", "halab"), ("inside", "halab"), ("addr", "add", "192.168.81.253/32", "dev", "virbr1"),
                     ("addr", "del", "192.168.81.253/32", "dev", "virbr1")]


def test_firewall_check_refuses_outside_the_lab_namespace_and_without_a_free_address():
    """The unit tests run in the root namespace: the real guard refuses before any probe."""
    import ipaddress
    import re

    from verifier import firewall as fwc
    from verifier.spec import Firewall

    probes = []

    def fake_connect(*a):
        probes.append(a)
        return True
    with pytest.raises(fwc.ProbeError, match="refusing: this process is in the root network namespace, not in 'halab'"):
        fwc.check(from_dict({**SPEC, "netns": "halab"}), fake_connect)
    assert probes == []  # nothing was sent

    own = ipaddress.IPv4Interface("192.168.81.1/24")
    full = {f"192.168.81.{i}" for i in range(230, 255)}
    with pytest.raises(fwc.ProbeError, match=re.escape(
            "no free address among the top 16 of 192.168.81.0/24 to probe from outside firewall.sshFrom")):
        fwc.plan(own, Firewall(), ["192.168.81.210", "192.168.81.220"], full)
    # no spare is needed where the whole subnet may SSH in: no error
    assert fwc.plan(own, Firewall(ssh_from=("192.168.81.0/24",)), ["192.168.81.210"], full).ssh_src is None


def test_the_spec_carries_the_firewall_only_where_it_differs_from_the_nat_default():
    from components.cluster import verifier_spec
    from model.settings import HostFacts, load

    def spec(raw):
        return verifier_spec(load(raw, "dev", ".", host=HostFacts(False, False)))
    assert "firewall" not in spec({}) and from_dict(spec({})).firewall.ssh_from is None
    assert "firewall" not in spec({"firewall": {"sshFrom": ["192.168.81.1/32"]}})
    off = spec({"firewall": {"enabled": False}})
    assert off["firewall"]["enabled"] is False and not from_dict(off).firewall.enabled
    bench = spec({"firewall": {"webHttpFrom": ["192.168.81.1/32"]}})
    assert bench["firewall"] == {"enabled": True, "sshFrom": ["192.168.81.1/32"], "webHttpFrom": ["192.168.81.1/32"]}
    assert from_dict(bench).firewall.web_http_from == ("192.168.81.1/32",)
    real = {"labNetns": "", "vm": {"libvirtUri": "qemu+ssh://kvm1/system"}, "firewall": {"sshFrom": ["10.0.0.0/8"]}}
    assert "firewall" not in spec(real)  # no lab namespace to probe from: the check does not run
    with pytest.raises(SpecError):
        from_dict({**SPEC, "firewall": {"sshFrom": ["not-a-cidr"]}})
