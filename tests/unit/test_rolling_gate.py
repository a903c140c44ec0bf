"""day2/gate.py, the health gates of a rolling change, against MockCluster: a mock of the nodes' answers
(node_gate.py's JSON) that keeps the state the real ops would change (drain file, keepalived, the VIP).
The real gate on real nginx/keepalived: tests/integration (drained web node) and tests/e2e (rolls)."""

from __future__ import annotations

import pytest

from day2 import gate

LB = {"lb01": "10.0.0.210", "lb02": "10.0.0.220"}
WEB = {"web01": "10.0.0.230", "web02": "10.0.0.240"}


class MockCluster:
    """Stands in for gate.Nodes: call(host, op, **req) -> node_gate.py's answer, or None (no answer)."""

    def __init__(self, healthy=("web01", "web02"), holder="lb01", peer_ok=True, vip_moves=True):
        self.healthy = {lb: set(healthy) for lb in LB}
        self.drained = {lb: set() for lb in LB}
        self.keepalived = dict.fromkeys(LB, "active")
        self.holder, self.peer_ok, self.vip_moves = holder, peer_ok, vip_moves
        self.ops: list[tuple[str, str]] = []
        self.kept: set[str] = set()  # balancers with the VIP on lo (keep-vip)
        self.vip_flows = dict.fromkeys(LB, 0)  # connections accepted on the VIP still open

    def name(self, host):
        return next(n for n, ip in {**LB, **WEB}.items() if ip == host)

    def call(self, host, op="look", **req):
        node = self.name(host)
        self.ops.append((node, op))
        if op in ("drain", "undrain"):
            (self.drained[node].add if op == "drain" else self.drained[node].discard)(req["node"])
        elif op == "stop-keepalived":
            if self.holder == node:
                self.kept.add(node)
            self.keepalived[node] = "inactive"
            if self.holder == node and self.vip_moves:
                self.holder = next(n for n in LB if n != node)
        elif op == "start-keepalived":
            self.keepalived[node] = "active"
            if node == "lb01":
                self.holder = "lb01"  # preempt
        elif op == "keep-vip":
            self.kept.add(node)
        elif op == "release-vip":
            if not self.vip_flows[node]:
                self.kept.discard(node)
        answer = {"agent": {"healthy": sorted(self.healthy[node]), "ejected": [], "drained": sorted(self.drained[node])}
                  if node in LB else None, "keepalived": self.keepalived.get(node, "inactive"),
                  "nginx": "active" if self.peer_ok or node != "lb02" else "failed",
                  "vip": self.holder == node and self.keepalived.get(node) == "active", "flows": 0,
                  "vipFlows": self.vip_flows.get(node, 0), "keptVip": node in self.kept,
                  "healthz": 200 if self.peer_ok or node != "lb02" else 0}
        until, who = req.get("until"), req.get("node")
        if until:
            answer["met"] = {"drained": who in self.drained.get(node, ()), "undrained": who not in self.drained.get(node, ()),
                             "healthy": who in self.healthy.get(node, ()), "noflows": True}[until]
        if op == "release-vip":
            answer["met"] = not self.vip_flows[node]
        return answer

    def many(self, hosts, op="look", **req):
        return {n: self.call(h, op, **req) for n, h in hosts.items()}


def spec(node, **kw):
    role = "web" if node.startswith("web") else "lb"
    return {"node": node, "role": role, "ip": {**LB, **WEB}[node], "vip": "10.0.0.100", "interface": "eth0",
            "balancers": [{"name": n, "ip": ip} for n, ip in LB.items()], "pools": [["web01", "web02"]],
            "master": "lb01", "drain": True, "drainTimeout": 1, "allowDowntime": False, "timeout": 2, **kw}


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(gate, "POLL_S", 0.0)
    monkeypatch.setattr(gate, "VIP_MOVE_S", 0.5)


def test_a_web_node_is_drained_on_both_balancers_and_admitted_again():
    c = MockCluster()
    gate.drain(spec("web01"), c)
    assert c.drained == {"lb01": {"web01"}, "lb02": {"web01"}}
    gate.admit(spec("web01"), c)
    assert c.drained == {"lb01": set(), "lb02": set()}
    assert ("lb01", "undrain") in c.ops and ("lb02", "undrain") in c.ops


def test_the_last_serving_member_of_a_pool_is_refused_and_nothing_is_drained():
    c = MockCluster(healthy=("web01",))  # web02 down: web01 is all its pool has
    with pytest.raises(gate.Refused) as e:
        gate.drain(spec("web01"), c)
    assert "no other member of its pool (web01, web02) serves" in str(e.value) and "rollout.allowDowntime" in str(e.value)
    assert not any(op == "drain" for _, op in c.ops) and c.drained == {"lb01": set(), "lb02": set()}
    gate.drain(spec("web01", allowDowntime=True), c)  # the opt-in drains it anyway
    assert c.drained["lb01"] == {"web01"}


def test_a_web_node_not_drained_anywhere_is_not_touched_by_admit():
    c = MockCluster()
    gate.admit(spec("web02"), c)
    assert not any(op == "undrain" for _, op in c.ops)


def test_a_balancer_is_taken_out_only_when_its_peer_serves():
    c = MockCluster(peer_ok=False)
    with pytest.raises(gate.Refused) as e:
        gate.drain(spec("lb01"), c)
    assert "its peer lb02 does not serve" in str(e.value)
    assert c.keepalived["lb01"] == "active" and ("lb01", "stop-keepalived") not in c.ops


def test_the_master_hands_the_vip_over_and_takes_it_back_on_admit():
    c = MockCluster()
    gate.drain(spec("lb01"), c)
    assert c.holder == "lb02" and c.keepalived["lb01"] == "inactive"
    gate.admit(spec("lb01"), c)
    assert c.holder == "lb01" and c.keepalived["lb01"] == "active"


def test_the_requests_in_flight_on_the_vip_finish_on_both_balancers_across_a_master_roll(capsys):
    c = MockCluster()
    gate.drain(spec("lb01"), c)
    # lb01 kept the VIP on lo for its stop and dropped it once its connections on it ended; lb02 keeps it
    # on lo for the MASTER's return (its preempt takes the VIP off lb02's interface)
    assert c.kept == {"lb02"} and ("lb01", "release-vip") in c.ops
    assert c.ops.index(("lb01", "stop-keepalived")) < c.ops.index(("lb02", "keep-vip"))
    assert "lb01: its requests in flight on the VIP finished" in capsys.readouterr().err
    gate.admit(spec("lb01"), c)
    assert ("lb02", "release-vip") in c.ops and c.kept == set()


def test_a_backup_roll_keeps_no_vip_and_connections_that_outlive_the_drain_are_named(capsys):
    c = MockCluster()
    gate.drain(spec("lb02"), c)
    assert c.kept == set() and ("lb01", "keep-vip") not in c.ops
    c = MockCluster()
    c.vip_flows["lb01"] = 3
    gate.drain(spec("lb01"), c)
    assert "3 connections on the VIP still open after rollout.drainTimeout (1 s): cut by its stop" in capsys.readouterr().err


def test_a_vip_that_does_not_move_restarts_keepalived_and_refuses():
    c = MockCluster(vip_moves=False)
    with pytest.raises(gate.Refused) as e:
        gate.drain(spec("lb01"), c)
    assert "did not take the VIP" in str(e.value)
    assert c.ops[-1] == ("lb01", "start-keepalived") and c.keepalived["lb01"] == "active"


def test_a_balancer_is_not_admitted_while_the_wrong_one_holds_the_vip():
    c = MockCluster(holder="lb02")
    c.keepalived["lb01"] = "inactive"
    c.call(LB["lb01"], "start-keepalived")
    c.holder = "lb02"  # the MASTER does not preempt: it must not be called admitted
    c.call = (lambda real: lambda host, op="look", **req: real(host, "look" if op == "start-keepalived" else op, **req))(c.call)
    with pytest.raises(gate.Refused) as e:
        gate.admit(spec("lb01"), c)
    assert "VIP held by lb02 (want lb01)" in str(e.value)


def test_the_backup_is_admitted_while_a_vrrp_timing_change_splits_them_the_master_is_not():
    c = MockCluster()
    real = c.call

    def split(host, op="look", **req):  # lb02 has advert_int 2, lb01 still 1: lb02 drops its adverts
        a = real(host, op, **req)
        if c.name(host) == "lb02":
            a["vip"] = True
        return a
    c.call = split
    gate.admit(spec("lb02"), c)  # admitted: lb01's new config (next) ends the split
    with pytest.raises(gate.Refused) as e:
        gate.admit(spec("lb01"), c)
    assert "VIP held by lb01, lb02 (want lb01)" in str(e.value)


def test_a_held_backup_is_started_by_the_masters_admission():
    c = MockCluster()
    assert gate.may_hold(spec("lb02"), c) is True and gate.may_hold(spec("lb01"), c) is False
    c.keepalived["lb02"] = "inactive"
    real = c.call

    def with_hold(host, op="look", **req):
        a = real(host, op, **req)
        a["held"] = c.name(host) == "lb02" and c.keepalived["lb02"] == "inactive"
        return a
    c.call = with_hold
    gate.admit(spec("lb02"), c, held=True)  # the BACKUP waits for nothing
    assert c.keepalived["lb02"] == "inactive"
    gate.admit(spec("lb01"), c)
    assert c.keepalived["lb02"] == "active" and ("lb02", "start-keepalived") in c.ops and c.holder == "lb01"


def test_nothing_is_held_while_the_master_does_not_hold_the_vip():
    c = MockCluster(holder="lb02")
    assert gate.may_hold(spec("lb02"), c) is False
