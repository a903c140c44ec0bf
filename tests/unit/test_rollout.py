"""The rolling plan (model/rollout.py) and how the program chains the nodes (components/tiers.py, mocks).

A change is compared with the stack's previous deployment: which nodes restart (same disk) or are replaced
(fresh disk and seed), in which order, and what is refused before any resource is touched."""

from __future__ import annotations

import json

import pulumi
import pytest
from google.protobuf import json_format
from pulumi.runtime.mocks import MockMonitor

from model import rollout
from model.images import ImageSet
from model.settings import HostFacts, load
from tests.conftest import ROOT
from tests.unit.test_graph_mocks import MockLibvirt

TCG = HostFacts(True, False)
IMAGES = ImageSet("a" * 64, "b" * 64, "c" * 64)


def settings(raw=None):
    return load(raw or {}, "t", ROOT, TCG)


def identities(s, images=IMAGES):
    return {n.name: rollout.vm_identity(s, n, images, f"seed of {n.name} {s.network.dns}", "<xsl/>") for n in s.nodes}


def as_output(v):
    """A value as the stack's outputs give it back: null members dropped, numbers as floats."""
    if isinstance(v, dict):
        return {k: as_output(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [as_output(x) for x in v]
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


def deployed(raw=None, images=IMAGES) -> dict:
    s = settings(raw)
    return as_output(rollout.record(s, identities(s, images)))


def plan(raw, previous):
    s = settings(raw)
    return rollout.plan(s, identities(s), previous)


def actions(steps):
    return [(st.node, st.action) for st in steps]


def test_order_is_web_nodes_then_backup_then_master():
    s = settings({"balancers": [{"name": "lb01", "ip": "192.168.81.210", "state": "BACKUP", "priority": 100},
                                {"name": "lb02", "ip": "192.168.81.220", "state": "MASTER", "priority": 150}]})
    assert [n.name for n in rollout.order(s)] == ["web01", "web02", "lb01", "lb02"]


def test_a_cold_up_creates_every_node_and_rolls_nothing():
    steps, problems = plan({}, None)
    assert actions(steps) == [("web01", "create"), ("web02", "create"), ("lb02", "create"), ("lb01", "create")]
    assert problems == []


def test_no_change_rolls_nothing_and_a_config_change_is_day_two_only():
    assert {st.action for st in plan({}, deployed())[0]} == {"same"}
    # nginx, keepalived, keys: pushed in place by day 2 (the VMs' identities do not change)
    for raw in ({"nginx": {"clientMaxBodySize": "100m"}}, {"vrrp": {"advertInt": 2}},
                {"sshAuthorizedKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDuXkXHq2yQe6R1mVz8BiJ4l8mGmB6wFBzvR3G7wS5tF x"]}):
        steps, problems = plan(raw, deployed())
        assert {st.action for st in steps} == {"same"} and problems == [], raw


def test_memory_and_vcpus_restart_in_place_and_name_what_changed():
    steps, problems = plan({"vm": {"memory": 640}}, deployed())
    assert actions(steps) == [("web01", "restart"), ("web02", "restart"), ("lb02", "restart"), ("lb01", "restart")]
    assert steps[0].changes == ("restart.memory 512 -> 640",) and problems == []  # read back as 512.0: the same
    steps, _ = plan({"webNodes": [{"name": "web01", "ip": "192.168.81.230", "vcpus": 2},
                                  {"name": "web02", "ip": "192.168.81.240"}]}, deployed())
    assert actions(steps)[:2] == [("web01", "restart"), ("web02", "same")]
    line = steps[0].line(1, 1, settings())
    assert line.startswith("roll 1/1: web01 (web): drain, restart in place") and "vcpus 1 -> 2" in line


def test_a_bigger_disk_restarts_in_place_and_a_smaller_one_is_refused_naming_node_and_sizes():
    steps, problems = plan({"vm": {"diskGiB": 8}}, deployed())
    assert {a for _, a in actions(steps)} == {"restart"} and problems == []
    assert steps[0].changes == ("restart.diskGiB null -> 8",)
    assert plan({}, deployed())[0][0].action == "same"  # unset: not in the record, as before the setting existed
    eight = {"vm": {"diskGiB": 8}}
    webs = [{"name": "web01", "ip": "192.168.81.230", "diskGiB": 6}, {"name": "web02", "ip": "192.168.81.240"}]
    _, problems = plan({**eight, "webNodes": webs}, deployed(eight))
    assert problems == ["webNodes[0].diskGiB = 6: web01's disk is 8 GiB on the deployed stack and a disk only grows "
                        "(shrinking would cut its filesystem); set it to 8 or more"]
    _, problems = plan({}, deployed(eight))  # unset again: the disks would stay 8 GiB while the settings say less
    assert len(problems) == 4 and all(p.startswith("vm.diskGiB = null: ") and "is 8 GiB" in p for p in problems)
    steps, problems = plan({"vm": {"diskGiB": 16}}, deployed(eight))
    assert {a for _, a in actions(steps)} == {"restart"} and problems == []


def test_a_replaced_node_gets_a_fresh_disk_of_any_size():
    eight = {"vm": {"diskGiB": 8}}
    s = settings({"vm": {"diskGiB": 6}})
    steps, problems = rollout.plan(s, identities(s, ImageSet("d" * 64, "b" * 64, "c" * 64)), deployed(eight))
    assert {a for _, a in actions(steps)} == {"replace"} and problems == []


def test_a_new_image_or_network_setting_replaces_every_node_in_order():
    s = settings()
    newer = rollout.plan(s, identities(s, ImageSet("d" * 64, "b" * 64, "c" * 64)), deployed())[0]
    assert [a for _, a in actions(newer)] == ["replace"] * 4
    assert newer[-1].changes == (f"replace.image {'a' * 12} -> {'d' * 12}",)
    assert "(MASTER)" in newer[-1].line(4, 4, s) and "(BACKUP)" in newer[-2].line(3, 4, s)
    dns = plan({"network": {"dns": ["192.168.81.1"]}}, deployed())[0]
    assert {a for _, a in actions(dns)} == {"replace"}  # a fresh seed (network-config)


def test_a_new_node_is_created_and_a_removed_one_is_not_in_the_plan():
    three = {"webNodes": [{"name": "web01", "ip": "192.168.81.230"}, {"name": "web02", "ip": "192.168.81.240"},
                          {"name": "web03", "ip": "192.168.81.250"}]}
    steps, problems = plan(three, deployed())
    assert ("web03", "create") in actions(steps) and problems == []
    steps, problems = plan({}, deployed(three))
    assert "web03" not in [n for n, _ in actions(steps)] and problems == []


@pytest.mark.parametrize("raw, key", [
    ({"network": {"cidr": "192.168.82.0/24"}, "vip": "192.168.82.100",
      "balancers": [{"name": "lb01", "ip": "192.168.82.210", "state": "MASTER", "priority": 150},
                    {"name": "lb02", "ip": "192.168.82.220", "state": "BACKUP", "priority": 100}],
      "webNodes": [{"name": "web01", "ip": "192.168.82.230"}, {"name": "web02", "ip": "192.168.82.240"}]},
     "network.cidr"),
    ({"network": {"name": "other-net"}}, "network.name"),
    ({"vm": {"adminUser": "admin"}}, "vm.adminUser"),
    ({"vm": {"installPackages": True}}, "vm.installPackages"),
    ({"vm": {"poolPath": "/srv/pools"}}, "vm.poolPath"),
    ({"vm": {"libvirtUri": "qemu+unix:///system"}}, "vm.libvirtUri"),
])
def test_a_change_that_would_rebuild_everything_at_once_is_refused_naming_the_key(raw, key):
    _, problems = plan(raw, deployed())
    assert len(problems) == 1 and problems[0].startswith(f"{key} = "), problems
    assert "cannot change on a deployed stack" in problems[0]


def test_a_tier_or_pool_with_one_node_is_not_rolled_without_allow_downtime():
    one = {"webNodes": [{"name": "web01", "ip": "192.168.81.230"}]}
    _, problems = plan({**one, "vm": {"memory": 640}}, deployed(one))
    assert len(problems) == 1 and problems[0].startswith('webNodes = ["web01"]: restarting or replacing web01')
    assert "rollout.allowDowntime" in problems[0]
    _, problems = plan({**one, "vm": {"memory": 640}, "rollout": {"allowDowntime": True}}, deployed(one))
    assert problems == []
    _, problems = plan({**one, "nginx": {"clientMaxBodySize": "1m"}}, deployed(one))
    assert problems == []  # day 2 reloads in place: nothing rolls
    pools = {"nginx": {"routing": {"pools": {"iphone": ["web01"], "default": ["web01", "web02"]},
                                   "rules": [{"match": "iphone", "pool": "iphone"}]}}}
    _, problems = plan({**pools, "vm": {"memory": 640}}, deployed(pools))
    assert [p.split(":")[0] for p in problems] == ['nginx.routing.pools.iphone = ["web01"]']


# ---- the resource graph: the chain of a deployed stack, none on a cold up ------------------------------
class DependencyMonitor(MockMonitor):
    """Records each resource's dependencies (by name)."""

    def __init__(self, mocks):
        super().__init__(mocks)
        self.deps: dict[str, set[str]] = {}

        self.inputs: dict[str, dict] = {}

    def RegisterResource(self, request):
        self.deps[request.name] = {d.rsplit("::", 1)[1] for d in request.dependencies}
        self.inputs[request.name] = json_format.MessageToDict(request.object)
        return super().RegisterResource(request)


def graph(previous):
    from components import HaCluster, HaClusterArgs
    mocks = MockLibvirt()
    monitor = DependencyMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="hacluster", stack="t", preview=False, monitor=monitor)
    cluster = HaCluster("hacluster", HaClusterArgs(settings(), previous=previous))
    return monitor, pulumi.Output.all(*cluster.domain_names, cluster.verification)


@pulumi.runtime.test
def test_a_deployed_stack_rolls_one_node_after_the_other():
    monitor, done = graph({"nodes": {"web01": {}}, "rollout": deployed()})

    def check(_):
        d = monitor.deps
        assert "web01-config" in d["web02-drain"] and "web02-config" in d["lb02-drain"]
        assert "lb02-config" in d["lb01-drain"]
        for n in ("web01", "web02", "lb01", "lb02"):
            assert f"{n}-drain" in d[f"{n}-disk"] and f"{n}-drain" in d[f"{n}-seed"] and f"{n}-drain" in d[f"{n}-domain"]
    return done.apply(check)


@pulumi.runtime.test
def test_a_cold_up_makes_every_node_at_once():
    monitor, done = graph(None)

    def check(_):
        d = monitor.deps
        assert not any(x.endswith("-config") for x in d["web02-drain"] | d["lb02-drain"] | d["lb01-drain"])
    return done.apply(check)


@pulumi.runtime.test
def test_adding_a_web_node_leaves_the_others_drain_and_config_be():
    """A drain's update (what a change of the pools it reads runs) drains nothing; a web node's config
    does not carry the pools, so a new pool member changes nothing of web01's."""
    monitor, done = graph({"nodes": {"web01": {}}, "rollout": deployed()})

    def check(_):
        drain, config = monitor.inputs["web01-drain"], monitor.inputs["web01-config"]
        assert drain["update"] == "true" and drain["create"].endswith("-m day2 drain")
        assert "update" not in config  # a change of its files runs the day-2 push again
        assert json.loads(drain["environment"]["HACLUSTER_DAY2_SPEC"])["pools"] == [["web01", "web02"]]
        assert json.loads(config["environment"]["HACLUSTER_DAY2_SPEC"])["pools"] == []
    return done.apply(check)
