"""Issue 14, placement: `hypervisors` and a node's `host`; validation, spreading, one provider per host."""

import copy

import pulumi
import pytest

from model.settings import DEFAULTS, HostFacts, SettingsError, load, place
from tests.conftest import ROOT
from tests.unit.test_graph_mocks import after, build, mocks, of  # noqa: F401 (mocks: a fixture)

TCG_HOST = HostFacts(kvm_device=True, hardware_kvm_module=False)
TWO = {"a": {"uri": "qemu+ssh://ops@kvm1/system"}, "b": {"uri": "qemu+ssh://ops@kvm2/system"}}
BRIDGED = {"network": {"mode": "bridge", "bridge": "br0", "gateway": "192.168.81.254"}, "labNetns": ""}


def ok(raw):
    return load(raw, "t", ROOT, TCG_HOST)


def problems(raw) -> list[str]:
    with pytest.raises(SettingsError) as e:
        load(raw, "t", ROOT, TCG_HOST)
    return e.value.problems


def nodes(balancer_hosts=(None, None), web_hosts=(None, None)):
    lbs, webs = copy.deepcopy(DEFAULTS["balancers"]), copy.deepcopy(DEFAULTS["webNodes"])
    for n, h in [*zip(lbs, balancer_hosts, strict=True), *zip(webs, web_hosts, strict=True)]:
        if h:
            n["host"] = h
    return {"balancers": lbs, "webNodes": webs}


def hosts(s):
    return {n.name: n.host for n in s.nodes}


# ---- without hypervisors: today's stacks --------------------------------------------------------
def test_no_hypervisors_is_one_unnamed_host_from_vm_libvirt_uri():
    s = ok({})
    (h,) = s.hypervisors
    assert (h.name, h.uri, h.bridge, h.pool_path, h.domain_type) == (
        None, "qemu:///system", None, "/var/lib/libvirt/hacluster", "qemu")
    assert set(hosts(s).values()) == {None}
    assert ok({"hypervisors": {}}) == s  # Pulumi.yaml's default for the key


# ---- spreading ----------------------------------------------------------------------------------
def test_two_hosts_spread_the_balancers_apart_and_web_nodes_round_robin():
    s = ok({**BRIDGED, "hypervisors": TWO})
    assert hosts(s) == {"lb01": "a", "lb02": "b", "web01": "a", "web02": "b"}
    assert [(h.name, h.uri, h.bridge, h.domain_type) for h in s.hypervisors] == [
        ("a", "qemu+ssh://ops@kvm1/system", "br0", "kvm"), ("b", "qemu+ssh://ops@kvm2/system", "br0", "kvm")]


def test_a_balancer_with_a_host_pushes_the_other_one_elsewhere():
    assert place(["a", "b", "c"], ["a", None], []) == (["a", "b"], [])
    assert place(["a", "b", "c"], [None, "a"], []) == (["b", "a"], [])
    assert place(["a", "b", "c"], [None, None], [None] * 4) == (["a", "b"], ["a", "b", "c", "a"])
    assert place(["a"], [None, None], [None]) == (["a", "a"], ["a"])
    assert place(["a", "b"], [None, None], ["b", None]) == (["a", "b"], ["b", "b"])


def test_hosts_spread_in_name_order_whatever_the_declaration_order():
    s = ok({**BRIDGED, "hypervisors": {"b": TWO["b"], "a": TWO["a"]}})
    assert hosts(s)["lb01"] == "a" and [h.name for h in s.hypervisors] == ["a", "b"]


def test_one_hypervisor_takes_every_node_and_may_keep_nat():
    s = ok({"hypervisors": {"solo": {"uri": "qemu+unix:///system"}}, **nodes(("solo", "solo"))})
    assert set(hosts(s).values()) == {"solo"} and s.network.mode == "nat"


def test_per_host_bridge_pool_and_domain_type_override_the_stack_wide_ones():
    s = ok({**BRIDGED, "hypervisors": {"a": {**TWO["a"], "bridge": "vlan42", "poolPath": "/srv/pools/hc",
                                             "domainType": "qemu"}, "b": TWO["b"]}})
    a, b = s.hypervisors
    assert (a.bridge, a.pool_path, a.domain_type) == ("vlan42", "/srv/pools/hc", "qemu")
    assert (b.bridge, b.pool_path, b.domain_type) == ("br0", "/var/lib/libvirt/hacluster", "kvm")


# ---- refusals: one line each, naming the key, the value and what is allowed ------------------------
@pytest.mark.parametrize("raw, line", [
    ({**BRIDGED, "hypervisors": TWO, **nodes(("a", "a"))},
     "balancers[1].host = 'a': must differ from balancers[0].host ('a'): with 2 hypervisors the balancers never "
     "share one: b"),
    ({**BRIDGED, "hypervisors": TWO, **nodes(web_hosts=(None, "c"))},
     "webNodes[1].host = 'c': unknown hypervisor; declared: a, b"),
    ({**nodes(("a", None))}, "balancers[0].host = 'a': unknown hypervisor; declared: none"),
    ({"hypervisors": TWO, "labNetns": ""},
     "network.mode = 'nat': bridge is required with 2 hypervisors: a NAT network exists on one host only"),
    ({**BRIDGED, "hypervisors": {"a": TWO["a"], "b": TWO["a"]}},
     "hypervisors.b.uri = 'qemu+ssh://ops@kvm1/system': duplicate URI: hypervisors.a has it"),
    ({**BRIDGED, "hypervisors": TWO, "vm": {"libvirtUri": "qemu+ssh://kvm1/system"}},
     "vm.libvirtUri = 'qemu+ssh://kvm1/system': not with hypervisors: each host's URI is hypervisors.NAME.uri"),
    ({"hypervisors": {"a": {**TWO["a"], "bridge": "br1"}}, "labNetns": ""},
     "hypervisors.a.bridge = 'br1': only with network.mode bridge"),
    ({"hypervisors": {"a": {"uri": "qemu:///system"}}, "labNetns": ""},
     "labNetns = '': empty (or null) turns the lab sandbox off, but hypervisors.a.uri is the lab's qemu:///system"),
    ({"hypervisors": {"Kvm1": TWO["a"]}}, "hypervisors.Kvm1 = 'Kvm1': a hypervisor name: a lowercase letter"),
    ({"hypervisors": {"a": {"uri": "qemu+ext:///system"}}}, "hypervisors.a.uri = 'qemu+ext:///system': a libvirt URI"),
    ({"hypervisors": {"a": {}}}, "hypervisors.a.uri = None: required"),
    ({"hypervisors": {"a": {**TWO["a"], "cpu": 2}}}, "hypervisors.a.cpu = 2: unknown key (typo?); allowed keys: "
     "bridge, domainType, insecureTcp, poolPath, uri"),
    ({"hypervisors": {"a": TWO["a"]}, **nodes(("A", None))}, "balancers[0].host = 'A': a hypervisor name"),
])
def test_refusal_is_one_line_naming_key_value_and_what_is_allowed(raw, line):
    found = problems(raw)
    assert len(found) == 1 and found[0].startswith(line), found


def test_both_balancers_may_share_the_only_hypervisor():
    assert hosts(ok({"hypervisors": {"a": {"uri": "qemu+unix:///system"}}, **nodes(("a", "a"))}))["lb02"] == "a"


# ---- resources: one provider, pool and image set per host; each VM on its host's provider ----------
@pulumi.runtime.test
def test_each_host_has_its_provider_pool_and_images_and_each_vm_uses_its_hosts_provider(mocks):  # noqa: F811
    cluster = build({**BRIDGED, "hypervisors": TWO, "webNodes": [
        {"name": f"web0{i}", "ip": f"192.168.81.23{i}"} for i in range(1, 4)]})

    def check(_):
        providers = {p.name: p.inputs["uri"] for p in mocks.resources if p.typ == "pulumi:providers:libvirt"}
        assert providers == {"hacluster-a-libvirt": TWO["a"]["uri"], "hacluster-b-libvirt": TWO["b"]["uri"]}
        on = lambda r: r.provider.split("::")[-2]  # noqa: E731 (provider ref "URN::id": the provider's name)
        pools = of(mocks, "libvirt:index:Pool")
        assert sorted((p.name, on(p), p.inputs["name"]) for p in pools) == [
            ("hacluster-a-pool", "hacluster-a-libvirt", "hacluster-t"),
            ("hacluster-b-pool", "hacluster-b-libvirt", "hacluster-t")]
        images = [v for v in of(mocks, "libvirt:index:Volume") if "source" in v.inputs]
        assert sorted((v.name, on(v)) for v in images) == sorted(
            (f"hacluster-{h}-{f}", f"hacluster-{h}-libvirt") for h in "ab" for f in ("base", "kernel", "initrd"))
        placed = {"lb01": "a", "lb02": "b", "web01": "a", "web02": "b", "web03": "a"}
        for node, h in placed.items():
            for kind in ("Domain", "Volume", "CloudInitDisk"):
                (r,) = [r for r in of(mocks, f"libvirt:index:{kind}") if r.name.startswith(f"{node}-")]
                assert on(r) == f"hacluster-{h}-libvirt", (node, kind)
        overlay = {v.name: v.inputs["baseVolumeId"] for v in of(mocks, "libvirt:index:Volume")
                   if "baseVolumeId" in v.inputs}
        assert overlay["lb02-disk"].startswith("/pool/t-base-")  # (the mock's id: the volume name, same on each host)
        assert {c.name for c in mocks.resources if c.typ == "hacluster:index:Hypervisor"} == {
            "hacluster-a", "hacluster-b"}
        assert of(mocks, "libvirt:index:Network") == []
        assert cluster.nodes["lb02"]["host"] == "b"

    return after(cluster, check)


@pulumi.runtime.test
def test_nat_on_the_one_declared_hypervisor_lives_on_its_provider(mocks):  # noqa: F811
    cluster = build({"hypervisors": {"solo": {"uri": "qemu+unix:///system"}}, "labNetns": ""})

    def check(_):
        (net,) = of(mocks, "libvirt:index:Network")
        assert net.provider.split("::")[-2] == "hacluster-solo-libvirt"
        for d in of(mocks, "libvirt:index:Domain"):
            assert d.inputs["networkInterfaces"][0]["networkId"] == f"{net.name}-id"
            assert d.inputs["type"] == "qemu"  # a local URI on a host without hardware KVM

    return after(cluster, check)
