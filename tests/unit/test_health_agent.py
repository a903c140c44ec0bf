"""The health agent's decisions (agent/health.py), its rendered input, and the load drills' arithmetic:
pure functions fed made-up results. The real agent runs in tests/integration/test_ha_under_load.py."""

import importlib.util
import json

from model import render
from model.settings import HostFacts, load
from tests.conftest import ROOT
from verifier.http import Probe
from verifier.scenarios import holder_changes, holder_seconds, load_stats

_spec = importlib.util.spec_from_file_location("health", ROOT / "agent" / "health.py")
health = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(health)


def settings(raw=None):
    return load(raw or {}, "t", ROOT, HostFacts(True, False))


def test_tracker_hysteresis():
    t = health.Tracker(fall=2, rise=3)
    assert t.feed(True) and t.healthy is True  # the first result decides
    assert not t.feed(False) and t.healthy  # one failure is not enough
    assert not t.feed(True)  # the run is broken
    assert not t.feed(False) and t.feed(False) and t.healthy is False
    assert not t.feed(True) and not t.feed(True) and t.feed(True) and t.healthy


def test_fault_only_while_the_peer_serves():
    assert health.track_value(None, True) is None  # nothing known: keepalived's init_file rules
    assert health.track_value(True, True) == 0
    assert health.track_value(True, False) == 0
    assert health.track_value(False, True) == health.FAULT == -254
    assert health.track_value(False, False) == 0  # both unhealthy: the VIP stays where it is


def test_the_peer_serves_only_after_rise_good_answers_in_a_row():
    peer = health.peer_tracker(rise=2)
    assert peer.healthy is False
    peer.feed(True)
    assert peer.healthy is False  # one lucky answer from a starved peer: no FAULT yet
    peer.feed(False)
    peer.feed(True)
    assert peer.healthy is False  # the run was broken
    peer.feed(True)
    assert peer.healthy is True
    peer.feed(False)
    assert peer.healthy is False  # the first miss ends it


def test_slow_but_serving_is_busy_not_stuck(tmp_path):
    log = tmp_path / "site.access.log"
    log.write_text("")
    stuck = health.Stuck(str(log))
    assert stuck.feed(health.SLOW, 100.0) == 0.0
    assert stuck.feed(health.SLOW, 103.0) == 3.0  # slow and nothing completed: stuck for 3 s
    with log.open("a") as f:
        f.write("GET / 200\n")  # nginx completed a client request meanwhile: busy, the clock restarts
    assert stuck.feed(health.SLOW, 104.0) == 0.0
    assert stuck.feed(health.SLOW, 110.0) == 6.0
    assert stuck.feed(health.OK, 111.0) == 0.0 and stuck.since is None
    assert health.Stuck(str(tmp_path / "missing.log")).feed(health.SLOW, 1.0) == 0.0  # no log: plain slowness


def test_holder_changes_keep_only_transitions():
    samples = [(10.0, ["lb01"]), (11.0, ["lb01"]), (12.0, []), (13.0, ["lb02"]), (14.0, None), (15.0, ["lb02"])]
    assert holder_changes(samples, 10.0) == [[0.0, ["lb01"]], [2.0, []], [3.0, ["lb02"]], [4.0, None], [5.0, ["lb02"]]]


def test_slowness_counts_only_when_sustained_and_not_starved():
    assert health.local_verdict(health.OK, 0, 5, False) is True
    assert health.local_verdict(health.DEAD, 0, 5, True) is False  # a refusal is evidence even when late
    assert health.local_verdict(health.SLOW, 2.0, 5, False) is None
    assert health.local_verdict(health.SLOW, 5.5, 5, False) is False
    assert health.local_verdict(health.SLOW, 9.0, 5, True) is None  # we woke up late: no evidence


def test_never_ejects_the_last_member_of_a_pool():
    pools = [["web01", "web02"], ["web01"]]
    assert health.ejectable({"web02"}, pools) == {"web02"}
    assert health.ejectable({"web01"}, pools) == set()  # web01 alone serves the second pool
    assert health.ejectable({"web01", "web02"}, [["web01", "web02"]]) == set()
    assert health.ejectable(set(), pools) == set()


def test_rendered_health_conf_and_keepalived_track_file():
    s = settings()
    lb01, lb02 = s.balancers
    conf = json.loads(render.health_conf(s, lb01))
    assert conf["vrrp"]["peerIp"] == lb02.ip and conf["vrrp"]["trackFile"] == render.VM_PATHS.track_file
    assert (conf["vrrp"]["interval"], conf["vrrp"]["fall"], conf["vrrp"]["slowFall"]) == (0.5, 2, 10)
    assert [n["ip"] for n in conf["upstream"]["nodes"]] == [w.ip for w in s.web_nodes]
    assert conf["upstream"]["reload"] == ["systemctl", "reload", "nginx"] and conf["requireNetns"] is False
    ka = render.keepalived_conf(s, lb01, "secret1")
    assert f'file "{render.VM_PATHS.track_file}"' in ka and "init_file -254" in ka and "hc_nginx" in ka
    assert "vrrp_script" not in ka
    fast = json.loads(render.health_conf(settings({"vrrp": {"profile": "fast"}}), lb01))
    assert (fast["vrrp"]["interval"], fast["vrrp"]["fall"]) == (0.2, 1)
    off = render.keepalived_conf(settings({"vrrp": {"healthCheck": False}}), lb01, "secret1")
    assert "track_file" not in off


def test_node_files_carry_the_agent_and_units_on_vms_only():
    s = settings()
    lb = s.balancers[0]
    vm = {f.path for f in render.node_files(s, lb, "secret1")}
    assert {render.VM_PATHS.health_agent, render.VM_PATHS.health_conf,
            "/etc/systemd/system/hacluster-health.service",
            "/etc/systemd/system/keepalived.service.d/10-hacluster.conf",
            "/etc/systemd/system/nginx.service.d/10-hacluster.conf"} <= vm
    web = {f.path for f in render.node_files(s, s.web_nodes[0], None)}
    assert "/etc/systemd/system/nginx.service.d/10-hacluster.conf" in web and render.VM_PATHS.health_agent not in web
    ns = render.node_files(s, lb, "secret1", render.VM_PATHS.under("/run/x"))
    assert not [f for f in ns if "systemd" in f.path]
    assert json.loads(next(f.content for f in ns if f.path.endswith("health.json")))["requireNetns"] is True


def test_load_stats_and_holder_seconds():
    probes = [Probe(1.0, True, "lb01", None, "web01", 0.01), Probe(1.1, False, None, "TimeoutError", None, 10.0),
              Probe(1.2, True, "lb01", None, "web02", 2.5), Probe(9.0, True, "lb01", None, "web02", 0.02)]
    st = load_stats(probes, 0.5, 5.0)
    assert (st.requests, st.failed, st.max_latency_s) == (3, 1, 10.0) and st.errors == ["TimeoutError"]
    samples = [(0.0, ["lb01"]), (1.0, []), (1.5, ["lb01", "lb02"]), (2.5, None), (3.0, ["lb01"])]
    assert holder_seconds(samples, 4.0) == (0.5, 1.0, 1)


def test_arp_request_and_reply_frames():
    from verifier import arp
    own = bytes.fromhex("525400a851d2")
    req = arp.request(own, "192.168.81.1", "192.168.81.100")
    assert req[:6] == b"\xff" * 6 and req[6:12] == own and len(req) == 42
    # the reply a holder sends: op 2, sender = its MAC + the VIP
    holder = bytes.fromhex("525400a851d2")
    reply = (own + holder + b"\x08\x06" + bytes.fromhex("0001080006040002") + holder
             + bytes([192, 168, 81, 100]) + own + bytes([192, 168, 81, 1]))
    assert arp.parse_reply(reply, "192.168.81.100") == "52:54:00:a8:51:d2"
    assert arp.parse_reply(reply, "192.168.81.101") is None
    assert arp.parse_reply(req, "192.168.81.100") is None  # a request is not an answer


def test_probe_connect_timeout_bounds_the_handshake_only(monkeypatch):
    """A node that never completes the handshake is given up after connect_timeout, not timeout."""
    seen = []

    class FakeSocket:
        def __init__(self, *a):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def setsockopt(self, *a):
            pass

        def settimeout(self, t):
            seen.append(t)

        def connect(self, addr):
            raise TimeoutError

    monkeypatch.setattr(health.socket, "socket", FakeSocket)
    assert health.probe("192.0.2.1", 80, "/healthz", 1.0, health.PROBE_MARK, 0.5) == health.SLOW
    assert seen == [0.5]


def test_a_drain_never_empties_a_pool_and_keeps_what_is_drained_already():
    drainable = health.drainable
    pools = [["web01", "web02"], ["web01"]]
    assert drainable(set(), set(), {"web02"}, pools) == {"web02"}
    assert drainable(set(), set(), {"web01"}, pools) == set()  # the only member of pool 2
    two = [["web01", "web02", "web03"]]
    assert drainable(set(), {"web02"}, {"web01", "web02"}, two) == {"web01", "web02"}
    assert drainable({"web03"}, {"web02"}, {"web01", "web02"}, two) == {"web02"}  # drained first stays
    assert drainable({"web03"}, set(), {"web01", "web02"}, two) == {"web01"}
