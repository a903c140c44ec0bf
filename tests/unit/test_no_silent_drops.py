"""No silent drops: every stack setting either reaches the running nodes, or is refused when it changes.

The walk below visits every leaf of the stack config (model/config.py) and names the path that carries a
change of it; each case then changes that one setting and checks that the named path really sees it:
- day2     a file day 2 pushes in place (nginx, keepalived, agent, firewall, web root, authorized_keys);
- restart  the VM identity's restart part (libvirt redefines the domain, it restarts cleanly, rolled);
- replace  the VM identity's replace part (a fresh disk and seed, rolled);
- libvirt  a libvirt object's in-place input (autostart);
- nodes    the set of nodes (a new node is created, a removed one deleted, after the balancers dropped it);
- verify   the verifier's spec (the post-deploy check re-runs);
- rollout  how the roll itself goes (drain time, the downtime opt-in), in every node's gate spec;
- fixed    refused on a deployed stack, naming the key (model.rollout.fixed);
- opt-in   reaches nothing running: it lets validation accept a setting it refuses otherwise.
"""

from __future__ import annotations

import dataclasses

import pytest

from components.cluster import verifier_spec
from components.tiers import day2_spec
from model import render, rollout
from model.config import StackConfig
from model.images import image_set
from model.settings import HostFacts, SettingsError, inner_model, is_a, load
from tests.conftest import ROOT, ssh_key
from tests.unit.test_rollout import deployed

TCG = HostFacts(True, False)
HV = {"network": {"mode": "bridge", "bridge": "br0", "cidr": "192.168.85.0/24", "gateway": "192.168.85.1"},
      "hypervisors": {"hv1": {"uri": "qemu+ssh://root@h1/system"}, "hv2": {"uri": "qemu+ssh://root@h2/system"}},
      "vip": "192.168.85.100",
      "balancers": [{"name": "lb01", "ip": "192.168.85.210", "state": "MASTER", "priority": 150},
                    {"name": "lb02", "ip": "192.168.85.220", "state": "BACKUP", "priority": 100}],
      "webNodes": [{"name": "web01", "ip": "192.168.85.230"}, {"name": "web02", "ip": "192.168.85.240"}]}
LBS = [{"name": "lb01", "ip": "192.168.81.210", "state": "MASTER", "priority": 150},
       {"name": "lb02", "ip": "192.168.81.220", "state": "BACKUP", "priority": 100}]
WEBS = [{"name": "web01", "ip": "192.168.81.230"}, {"name": "web02", "ip": "192.168.81.240"}]
ROUTED = {"nginx": {"routing": {"pools": {"a": ["web01"], "default": ["web01", "web02"]},
                                "rules": [{"match": "iphone", "pool": "a"}], "default": "default"}}}


def lb(i, **kw):
    return [{**b, **kw} if j == i else b for j, b in enumerate(LBS)]


def web(i, **kw):
    return [{**w, **kw} if j == i else w for j, w in enumerate(WEBS)]


def _nginx(**kw):
    return {"nginx": kw}


# leaf: (base config, changed config, carrier)
CASES = {
    "vip": ({}, {"vip": "192.168.81.101"}, "day2"),
    "network.mode": ({}, {"network": {"mode": "bridge", "bridge": "br0"}}, "fixed"),
    "network.cidr": ({}, {"network": {"cidr": "192.168.80.0/23"}}, "fixed"),
    "network.gateway": (HV, {**HV, "network": {**HV["network"], "gateway": "192.168.85.2"}}, "replace"),
    "network.name": ({}, {"network": {"name": "other"}}, "fixed"),
    "network.bridge": (HV, {**HV, "network": {**HV["network"], "bridge": "br1"}}, "fixed"),
    "network.dns": ({}, {"network": {"dns": ["192.168.81.1"]}}, "replace"),
    "balancers[].name": ({}, {"balancers": lb(1, name="lb03")}, "nodes"),
    "balancers[].ip": ({}, {"balancers": lb(1, ip="192.168.81.221")}, "replace"),
    "balancers[].state": ({}, {"balancers": lb(0, state="BACKUP"), "vrrp": {"preemptDelay": 5}}, "day2"),
    "balancers[].priority": ({}, {"balancers": lb(1, priority=99)}, "day2"),
    "balancers[].routerId": ({}, {"balancers": lb(1, routerId="r2")}, "day2"),
    "balancers[].vcpus": ({}, {"balancers": lb(1, vcpus=2)}, "restart"),
    "balancers[].memory": ({}, {"balancers": lb(1, memory=640)}, "restart"),
    "balancers[].diskGiB": ({}, {"balancers": lb(1, diskGiB=8)}, "restart"),
    "balancers[].host": (HV, {**HV, "balancers": [{**HV["balancers"][0], "host": "hv2"},
                                                  {**HV["balancers"][1], "host": "hv1"}]}, "replace"),
    "webNodes[].name": ({}, {"webNodes": web(1, name="web03")}, "nodes"),
    "webNodes[].ip": ({}, {"webNodes": web(1, ip="192.168.81.241")}, "replace"),
    "webNodes[].weight": ({}, {"webNodes": web(1, weight=3)}, "day2"),
    "webNodes[].vcpus": ({}, {"webNodes": web(1, vcpus=2)}, "restart"),
    "webNodes[].memory": ({}, {"webNodes": web(1, memory=640)}, "restart"),
    "webNodes[].diskGiB": ({}, {"webNodes": web(1, diskGiB=8)}, "restart"),
    "webNodes[].host": (HV, {**HV, "webNodes": [{**HV["webNodes"][0], "host": "hv2"}, HV["webNodes"][1]]}, "replace"),
    "vrrp.profile": ({}, {"vrrp": {"profile": "fast"}}, "day2"),
    "vrrp.virtualRouterId": ({}, {"vrrp": {"virtualRouterId": 52}}, "day2"),
    "vrrp.advertInt": ({}, {"vrrp": {"advertInt": 2}}, "day2"),
    "vrrp.version": ({}, {"vrrp": {"version": 3, "authType": "none"}}, "day2"),
    "vrrp.authType": ({"vrrp": {"version": 3, "authType": "none"}}, {"vrrp": {"version": 2, "authType": "PASS"}}, "day2"),
    "vrrp.transport": ({}, {"vrrp": {"transport": "multicast"}}, "day2"),
    "vrrp.interface": ({}, {"vrrp": {"interface": "eth1"}}, "replace"),
    "vrrp.nopreempt": ({}, {"vrrp": {"nopreempt": True}, "balancers": lb(0, state="BACKUP")}, "day2"),
    "vrrp.preemptDelay": ({}, {"vrrp": {"preemptDelay": 5}, "balancers": lb(0, state="BACKUP")}, "day2"),
    "vrrp.garpMasterRefresh": ({}, {"vrrp": {"garpMasterRefresh": 30}}, "day2"),
    "vrrp.garpMasterRepeat": ({}, {"vrrp": {"garpMasterRepeat": 10}}, "day2"),
    "vrrp.healthCheck": ({}, {"vrrp": {"healthCheck": False}}, "day2"),
    "vrrp.checkFall": ({}, {"vrrp": {"checkFall": 3}}, "day2"),
    "vrrp.checkRise": ({}, {"vrrp": {"checkRise": 3}}, "day2"),
    "vrrp.checkInterval": ({}, {"vrrp": {"checkInterval": 1}}, "day2"),
    "vrrp.checkTimeout": ({}, {"vrrp": {"checkTimeout": 3}}, "day2"),
    "vrrp.checkSlowFall": ({}, {"vrrp": {"checkSlowFall": 5}}, "day2"),
    "nginx.serverName": ({}, _nginx(serverName="www.example.org"), "day2"),
    "nginx.clientMaxBodySize": ({}, _nginx(clientMaxBodySize="100m"), "day2"),
    "nginx.upstream.weight": ({}, _nginx(upstream={"weight": 2}), "day2"),
    "nginx.upstream.maxFails": ({}, _nginx(upstream={"maxFails": 5}), "day2"),
    "nginx.upstream.failTimeout": ({}, _nginx(upstream={"failTimeout": 30}), "day2"),
    "nginx.upstream.activeCheck.enabled": ({}, _nginx(upstream={"activeCheck": {"enabled": False}}), "day2"),
    "nginx.upstream.activeCheck.interval": ({}, _nginx(upstream={"activeCheck": {"interval": 1}}), "day2"),
    "nginx.upstream.activeCheck.timeout": ({}, _nginx(upstream={"activeCheck": {"timeout": 2}}), "day2"),
    "nginx.upstream.activeCheck.fall": ({}, _nginx(upstream={"activeCheck": {"fall": 3}}), "day2"),
    "nginx.upstream.activeCheck.rise": ({}, _nginx(upstream={"activeCheck": {"rise": 3}}), "day2"),
    "nginx.proxy.connectTimeout": ({}, _nginx(proxy={"connectTimeout": 5}), "day2"),
    "nginx.proxy.sendTimeout": ({}, _nginx(proxy={"sendTimeout": 5}), "day2"),
    "nginx.proxy.readTimeout": ({}, _nginx(proxy={"readTimeout": 5}), "day2"),
    "nginx.proxy.buffering": ({}, _nginx(proxy={"buffering": False}), "day2"),
    "nginx.proxy.bufferSize": ({}, _nginx(proxy={"bufferSize": "128k"}), "day2"),
    "nginx.proxy.buffers": ({}, _nginx(proxy={"buffers": "8 256k"}), "day2"),
    "nginx.persistence": ({}, _nginx(persistence="ip_hash"), "day2"),
    "nginx.routing.pools": ({}, ROUTED, "day2"),
    "nginx.routing.rules[].match": (ROUTED, {"nginx": {"routing": {**ROUTED["nginx"]["routing"], "rules": [
        {"match": "android", "pool": "a"}]}}}, "day2"),
    "nginx.routing.rules[].pool": (ROUTED, {"nginx": {"routing": {**ROUTED["nginx"]["routing"], "rules": [
        {"match": "iphone", "pool": "default"}]}}}, "day2"),
    "nginx.routing.default": (ROUTED, {"nginx": {"routing": {**ROUTED["nginx"]["routing"], "default": "a"}}}, "day2"),
    "vm.image": ({}, {"vm": {"image": "/srv/images/other.qcow2"}}, "replace"),
    "vm.kernel": ({}, {"vm": {"kernel": "/srv/images/vmlinuz-2"}}, "replace"),
    "vm.initrd": ({}, {"vm": {"initrd": "/srv/images/initrd-2"}}, "replace"),
    "vm.vcpus": ({}, {"vm": {"vcpus": 2}}, "restart"),
    "vm.memory": ({}, {"vm": {"memory": 640}}, "restart"),
    "vm.diskGiB": ({}, {"vm": {"diskGiB": 8}}, "restart"),
    "vm.domainType": ({}, {"vm": {"domainType": "kvm"}}, "replace"),
    "vm.libvirtUri": ({}, {"vm": {"libvirtUri": "qemu+unix:///system"}}, "fixed"),
    "vm.poolPath": ({}, {"vm": {"poolPath": "/srv/pools"}}, "fixed"),
    "vm.installPackages": ({}, {"vm": {"installPackages": True}}, "fixed"),
    "vm.adminUser": ({}, {"vm": {"adminUser": "admin"}}, "fixed"),
    "vm.operatorUser": ({}, {"vm": {"operatorUser": "admin"}}, "fixed"),
    "vm.autostart": ({}, {"vm": {"autostart": True}}, "libvirt"),
    "vm.insecureTcp": ({"labNetns": "", "vm": {"libvirtUri": "qemu+tcp://kvm1/system", "insecureTcp": True}},
                       {"labNetns": "", "vm": {"libvirtUri": "qemu+tcp://kvm1/system"}}, "opt-in"),
    "hypervisors.NAME.uri": (HV, {**HV, "hypervisors": {**HV["hypervisors"], "hv2": {"uri": "qemu+ssh://root@h3/system"}}},
                             "fixed"),
    "hypervisors.NAME.bridge": (HV, {**HV, "hypervisors": {**HV["hypervisors"], "hv2": {
        "uri": "qemu+ssh://root@h2/system", "bridge": "br9"}}}, "replace"),
    "hypervisors.NAME.poolPath": (HV, {**HV, "hypervisors": {**HV["hypervisors"], "hv2": {
        "uri": "qemu+ssh://root@h2/system", "poolPath": "/srv/pools"}}}, "fixed"),
    "hypervisors.NAME.domainType": (HV, {**HV, "hypervisors": {**HV["hypervisors"], "hv2": {
        "uri": "qemu+ssh://root@h2/system", "domainType": "qemu"}}}, "replace"),
    "hypervisors.NAME.insecureTcp": ({**HV, "hypervisors": {**HV["hypervisors"], "hv2": {
        "uri": "qemu+tcp://h2/system", "insecureTcp": True}}}, {**HV, "hypervisors": {**HV["hypervisors"], "hv2": {
            "uri": "qemu+tcp://h2/system"}}}, "opt-in"),
    "verify.enabled": ({}, {"verify": {"enabled": False}}, "verify"),
    "verify.failoverDrill": ({}, {"verify": {"failoverDrill": False}}, "verify"),
    "verify.loadDrills": ({}, {"verify": {"loadDrills": True}}, "verify"),
    "verify.timeout": ({}, {"verify": {"timeout": 300}}, "verify"),
    "firewall.enabled": ({}, {"firewall": {"enabled": False}}, "day2"),
    "firewall.sshFrom": ({}, {"firewall": {"sshFrom": ["10.0.0.0/8"]}}, "day2"),
    "firewall.webHttpFrom": ({}, {"firewall": {"webHttpFrom": ["10.0.0.0/8"]}}, "day2"),
    "rollout.drainTimeout": ({}, {"rollout": {"drainTimeout": 5}}, "rollout"),
    "rollout.allowDowntime": ({}, {"rollout": {"allowDowntime": True}}, "rollout"),
    "labNetns": ({}, {"labNetns": "otherlab"}, "fixed"),
    "sshAuthorizedKeys": ({}, {"sshAuthorizedKeys": [ssh_key("op")]}, "day2"),
    "vrrpAuthPass": ({}, {"vrrpAuthPass": "s3cret"}, "day2"),
}


def leaves(cls=StackConfig, prefix=""):
    for n, f in cls.model_fields.items():
        key, sub = prefix + (f.alias or n), inner_model(f.annotation)
        if sub is None or key == "nginx.routing.pools":
            yield key
        elif is_a(f.annotation, list):
            yield from leaves(sub, key + "[].")
        elif is_a(f.annotation, dict):
            yield from leaves(sub, key + ".NAME.")
        else:
            yield from leaves(sub, key + ".")


def test_every_setting_names_the_path_that_carries_it():
    assert sorted(leaves()) == sorted(CASES), "add the new setting to CASES with the path that carries its change"


def carriers(raw: dict) -> dict:
    """What each path sees of a config."""
    s = load(raw, "t", ROOT, TCG, path_exists=lambda p: True)
    images = image_set(s.vm.image, s.vm.kernel, s.vm.initrd)
    ident = {n.name: rollout.vm_identity(s, n, images, render.network_config(s, n) + render.meta_data(s, n), None)
             for n in s.nodes}
    return {
        "day2": {n.name: [dataclasses.asdict(f) for f in render.node_files(
            s, n, s.vrrp_auth_pass or "generated", ssh_keys=[ssh_key("stack"), *s.ssh_authorized_keys])]
                 for n in s.nodes},
        "restart": {k: v["restart"] for k, v in ident.items()},
        "replace": {k: v["replace"] for k, v in ident.items()},
        "libvirt": (s.vm.autostart,),
        "nodes": sorted(n.name for n in s.nodes),
        "verify": (s.verify.enabled, verifier_spec(s)),  # enabled: whether the check resource exists
        "rollout": {n.name: (day2_spec(s, n).drain_timeout, day2_spec(s, n).allow_downtime) for n in s.nodes},
        "fixed": rollout.fixed(s),
        "plan": lambda previous: rollout.plan(s, ident, previous)[1],
    }


@pytest.mark.parametrize("leaf", sorted(CASES))
def test_a_change_reaches_the_path_named_for_it(leaf):
    base, changed, carrier = CASES[leaf]
    if carrier == "opt-in":  # without it, the same stack is refused, naming the setting it guards
        carriers(base)
        with pytest.raises(SettingsError, match=leaf.replace("NAME", "hv2").replace(".", r"\.")):
            carriers(changed)
        return
    before, after = carriers(base), carriers(changed)
    assert before[carrier] != after[carrier], f"{leaf}: a change does not reach {carrier}"
    problems = after["plan"](deployed(base))
    refused = [p for p in problems if "cannot change on a deployed stack" in p]
    assert bool(refused) == (carrier == "fixed"), (leaf, problems)
