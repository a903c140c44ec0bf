"""Issue 14 part 3, the drill "hypervisor lost" (host_lost): its spec keys and refusals, the actions' safety
(lab namespaces only, qemu processes only; fake proc dir, fake os.kill, fake `ip netns pids`), the scenario
over fake actions and a fake prober, verifier_spec for two hosts and one."""

import pytest

from tests.unit.test_drill_kinds import SPEC
from verifier.spec import SpecError, from_dict

HVS = {"hv1": {"uri": "qemu+ssh://root@127.0.0.1:2221/system", "netns": "halab-hv1"},
       "hv2": {"uri": "qemu+ssh://root@127.0.0.1:2222/system", "netns": "halab-hv2"}}
PLACED = {"lb01": "hv1", "lb02": "hv2", "web01": "hv1", "web02": "hv2"}


def two_host_spec(placed=PLACED, hypervisors=HVS, **kw) -> dict:
    """SPEC on two lab hypervisors: lb01 (MASTER) + web01 on hv1, lb02 + web02 on hv2."""
    with_host = lambda n: {**n, "host": placed[n["name"]]}  # noqa: E731
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
