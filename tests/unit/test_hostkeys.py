"""Pinned SSH host keys (verifier/hostkeys.py): the per-run known_hosts, the ssh options, the one-line refusal."""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

import day2.__main__ as day2
from day2 import gate
from tests.conftest import known_hosts, ssh_key
from tests.unit.test_drill_kinds import SPEC as DRILL_SPEC
from verifier import actions, cli, hostkeys
from verifier.actions import HostKeyRefused, SshActions
from verifier.spec import from_dict

SPEC = {**DRILL_SPEC, "actions": "ssh"}


class FakeSubprocess:
    """Stands in for one module's `subprocess` (day2's, the gate's): its ssh gets `answer`, while ssh-keygen
    (hostkeys.fingerprint) stays the real one."""

    TimeoutExpired = subprocess.TimeoutExpired
    CompletedProcess = subprocess.CompletedProcess

    def __init__(self, answer: subprocess.CompletedProcess):
        self.answer = answer

    def run(self, *a, **kw):
        return self.answer


def fingerprint_of(key: str) -> str:
    r = subprocess.run(["ssh-keygen", "-lf", "-"], input=key + "\n", capture_output=True, text=True, check=True)
    return r.stdout.split()[1]


def ssh_changed_stderr(got: str) -> str:
    """What OpenSSH 9.2 prints (LogLevel=ERROR, StrictHostKeyChecking=yes) when the key it got is not the
    pinned one (captured from a real ssh against a real sshd, the fingerprint replaced)."""
    return ("@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
            "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
            "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n"
            "The fingerprint for the ED25519 key sent by the remote host is\n"
            f"{got}.\nPlease contact your system administrator.\n"
            "Host key for 192.168.81.210 has changed and you have requested strict checking.\n"
            "Host key verification failed.\n")


def test_known_hosts_is_private_pins_each_node_by_ip_and_is_removed():
    kh = hostkeys.KnownHosts({"lb01": ssh_key("c", fill=1), "web01": ssh_key(fill=2)},
                             {"lb01": "192.168.81.210", "web01": "192.168.81.230"})
    try:
        assert stat.S_IMODE(os.stat(kh.dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(kh.path).st_mode) == 0o600
        assert Path(kh.path).read_text() == (f"192.168.81.210 {ssh_key('', fill=1)}\n"
                                             f"192.168.81.230 {ssh_key('', fill=2)}\n")  # comments dropped
    finally:
        kh.close()
    assert not os.path.exists(kh.dir)
    with pytest.raises(ValueError, match="IPv4"):  # a line of known_hosts has a grammar too
        hostkeys.KnownHosts({"lb01": ssh_key()}, {"lb01": "192.168.81.210 ssh-rsa"})


def test_env_parse_wants_an_ed25519_key_for_every_node():
    good = json.dumps({"lb01": ssh_key(fill=1), "lb02": ssh_key(fill=2)})
    assert hostkeys.parse(good, ["lb01", "lb02"]) == {"lb01": ssh_key("", fill=1), "lb02": ssh_key("", fill=2)}
    for text, why in ((json.dumps({"lb01": ssh_key()}), "no host key for lb02"),
                      (json.dumps({"lb01": ssh_key(), "lb02": ssh_key(kind="ssh-rsa")}), "the host key of lb02"),
                      ("[1]", "JSON object"), ("{", "not JSON"), ("", "no host key for lb01")):
        with pytest.raises(hostkeys.HostKeyError, match=why):
            hostkeys.parse(text, ["lb01", "lb02"])


def test_the_refusal_names_the_node_and_both_fingerprints():
    want, got = ssh_key(fill=1), ssh_key(fill=2)
    line = hostkeys.refusal("lb01", "192.168.81.210", want, ssh_changed_stderr(fingerprint_of(got)))
    assert line.startswith(f"lb01 (192.168.81.210) presents SSH host key {fingerprint_of(got)}, the stack expects "
                           f"{fingerprint_of(want)}: refused"), line
    assert "\n" not in line and fingerprint_of(want) != fingerprint_of(got)
    # no ed25519 key at all (ssh's other words), and plain connection failures are no refusal
    other = hostkeys.refusal("lb01", "192.168.81.210", want, "No ED25519 host key is known for 192.168.81.210 and "
                             "you have requested strict checking.\nHost key verification failed.\n")
    assert "presents SSH host key no ed25519 host key, the stack expects" in other
    for stderr in ("ssh: connect to host 192.168.81.210 port 22: Connection refused\n",
                   "Connection timed out during banner exchange\n", ""):
        assert hostkeys.refusal("lb01", "192.168.81.210", want, stderr) is None


def test_ssh_actions_refuse_a_node_with_another_key_at_once(monkeypatch):
    spec = from_dict(SPEC)
    kh = known_hosts({b.name: b.ip for b in spec.balancers})
    got = ssh_key(fill=99)
    calls = []

    def fake_run(argv, timeout, stdin=None):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 255, "", ssh_changed_stderr(fingerprint_of(got)))
    monkeypatch.setattr(actions, "_run", fake_run)
    ssh = SshActions(spec, "/tmp/key-mock", kh)
    with pytest.raises(HostKeyRefused, match=f"^lb01 \\(192.168.81.210\\) presents SSH host key {fingerprint_of(got)}"):
        ssh.ready(spec.master)  # not "still booting": ready() does not swallow it
    assert len(calls) == 1
    argv = calls[0]
    assert f"UserKnownHostsFile={kh.path}" in argv
    assert "HostKeyAlias=192.168.81.210" in argv and "StrictHostKeyChecking=yes" in argv
    with pytest.raises(actions.ActionError, match="HACLUSTER_HOST_KEYS"):
        SshActions(spec, "/tmp/key-mock", None)


def test_verifier_without_host_keys_is_one_line_and_no_ssh(monkeypatch, capsys):
    monkeypatch.setenv("HACLUSTER_VERIFY_SPEC", json.dumps(SPEC))
    monkeypatch.setenv("HACLUSTER_SSH_KEY", "k")
    monkeypatch.setenv("HACLUSTER_HOST_KEYS", json.dumps({"lb01": ssh_key()}))
    monkeypatch.setattr(actions, "_run", lambda *a, **kw: pytest.fail("no ssh without every pinned key"))
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err == ("FAILED environment: env HACLUSTER_HOST_KEYS has no host key for lb02: refusing to connect to it "
                   "unpinned\n")


def test_day2_refuses_a_node_with_another_key_in_one_line(monkeypatch):
    kh = known_hosts({"web01": "192.168.81.230", "lb01": "192.168.81.210", "lb02": "192.168.81.220"})
    got = ssh_key(fill=77)
    wrong = subprocess.CompletedProcess([], 255, "", ssh_changed_stderr(fingerprint_of(got)))
    monkeypatch.setattr(day2, "subprocess", FakeSubprocess(wrong))
    with pytest.raises(gate.Refused, match=f"^web01 \\(192.168.81.230\\) presents SSH host key {fingerprint_of(got)}"):
        day2.probe("web01", ["ssh"], kh)
    with pytest.raises(gate.Refused, match=r"^web01 \(192.168.81.230\) presents SSH host key"):
        day2.apply({"node": "web01", "ip": "192.168.81.230", "timeout": 60}, ["ssh"], "[]", kh)
    monkeypatch.setattr(gate, "subprocess", FakeSubprocess(wrong))
    nodes = gate.Nodes("ops", "/tmp/key-mock", [], kh)
    try:
        with pytest.raises(gate.Refused, match=r"^lb02 \(192.168.81.220\) presents SSH host key"):
            nodes.call("192.168.81.220")
        assert f"UserKnownHostsFile={kh.path}" in nodes._argv("192.168.81.220")
    finally:
        nodes.close()


# ---- a stack deployed before pinned host keys ------------------------------------------------------
class FakeSsh:
    """Stands in for the gate's `subprocess`: the balancer at `unknown` presents another host key; every
    other node answers node_gate.py's look with `answer`."""

    TimeoutExpired = subprocess.TimeoutExpired

    def __init__(self, unknown: str, answer: dict):
        self.unknown, self.answer, self.asked = unknown, answer, []

    def run(self, argv, **kw):
        ip = argv[-2].split("@")[1]
        self.asked.append(ip)
        if ip == self.unknown:
            return subprocess.CompletedProcess(argv, 255, "", ssh_changed_stderr(fingerprint_of(ssh_key(fill=66))))
        return subprocess.CompletedProcess(argv, 0, json.dumps(self.answer) + "\n", "")


def lb_spec(allow: bool) -> dict:
    return {"node": "lb02", "ip": "192.168.81.220", "role": "lb", "master": "lb01", "vip": "192.168.81.100",
            "interface": "eth0", "timeout": 5, "allowDowntime": allow, "drain": True, "drainTimeout": 5,
            "balancers": [{"name": "lb01", "ip": "192.168.81.210"}, {"name": "lb02", "ip": "192.168.81.220"}]}


@pytest.mark.parametrize("allow", [False, True])
def test_a_peer_with_an_unknown_key_refuses_the_gate_unless_downtime_is_accepted(monkeypatch, capsys, allow):
    """lb02 was replaced (its pinned key answers); lb01 still has the key of its first boot. The admit gate
    waits for both: the refusal must come out of the wait as the host key line, not as "not admitted"."""
    kh = known_hosts({"lb01": "192.168.81.210", "lb02": "192.168.81.220"})
    fake = FakeSsh("192.168.81.210", {"keepalived": "active", "nginx": "active", "healthz": 200, "vip": False})
    monkeypatch.setattr(gate, "subprocess", fake)
    nodes = gate.Nodes("ops", "/tmp/key-mock", [], kh)
    try:
        if allow:
            gate.admit(lb_spec(True), nodes)
            err = capsys.readouterr().err
            assert err.startswith("day2: lb02: admit gate skipped (rollout.allowDowntime): lb01 (192.168.81.210) "
                                  "presents SSH host key SHA256:"), err
        else:
            with pytest.raises(gate.HostKeyUnknown, match=r"^lb01 \(192.168.81.210\) presents SSH host key"):
                gate.admit(lb_spec(False), nodes)
        assert fake.asked.count("192.168.81.210") == 1  # refused once, never asked again
    finally:
        nodes.opened.clear()  # nothing to close: no real ssh ran
        nodes.close()


def test_a_stack_deployed_before_pinned_keys_replaces_every_node_and_wants_downtime_accepted():
    from model import rollout
    from tests.unit.test_rollout import deployed, plan

    old = deployed()
    for node in old["nodes"].values():
        del node["replace"]["hostKey"]  # what such a stack recorded
    steps, problems = plan({}, old)
    assert [(st.node, st.action) for st in steps] == [(n, "replace") for n in ("web01", "web02", "lb02", "lb01")]
    assert all(st.changes == ('replace.hostKey null -> "ed25519-from-stack"',) for st in steps), steps
    assert problems == ["nodes web01, web02, lb02, lb01: deployed before pinned SSH host keys, so the stack does not "
                        "know their host keys and the rolling gates (drain, admit) cannot log in to them; each is "
                        "replaced to get its pinned key: set rollout.allowDowntime true for this one `pulumi up` "
                        "(the gates are skipped where a node's key is unknown), then set it back"]
    assert plan({"rollout": {"allowDowntime": True}}, old)[1] == []
    assert plan({}, deployed())[1] == []  # pinned already: nothing to say
    assert rollout.HOST_KEYS in str(deployed())
