"""Resource graph with pulumi.runtime.set_mocks (no engine, no libvirt): what HaCluster registers."""

import json
import re

import pulumi
import pytest
import yaml

from model.images import image_set
from model.settings import HostFacts, load
from tests.conftest import ROOT, ssh_key

PUBLIC = ssh_key("hacluster-t", fill=9)
IMAGES = [str(ROOT / ".images/debian12" / f) for f in ("disk.qcow2", "vmlinuz", "initrd.img")]
FAKE_KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\nMOCKKEY\n-----END OPENSSH PRIVATE KEY-----\n{PUBLIC}\n"


def fake_host_key(create: str) -> str:
    """The mock's ssh-keygen output for a node's host key: its node's name in the private half, a public key
    of its own (the node's index in the fill byte)."""
    node = re.search(r'-C "hacluster-.*-([a-z0-9]+)-host"', create)[1]
    fill = 20 + ["lb01", "lb02", "web01", "web02", "web03"].index(node)
    return (f"-----BEGIN OPENSSH PRIVATE KEY-----\nMOCKHOSTKEY{node}\n-----END OPENSSH PRIVATE KEY-----\n"
            f"{ssh_key(f'hacluster-t-{node}-host', fill=fill)}\n")


class MockLibvirt(pulumi.runtime.Mocks):
    """Mock provider: records every resource, echoes inputs, fakes the command outputs."""

    def __init__(self):
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        state = dict(args.inputs)
        if args.typ == "command:local:Command":
            create = args.inputs.get("create", "")
            state["stdout"] = fake_host_key(create) if "-host\"" in create else FAKE_KEY if "ssh-keygen" in create else (
                "Ab3dEf9h" if "urandom" in create else '{"passed": true, "checks": []}')
        if args.typ.endswith(":Volume"):
            return f"/pool/{args.inputs['name']}", state
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


@pytest.fixture
def mocks():
    m = MockLibvirt()
    pulumi.runtime.set_mocks(m, project="hacluster", stack="t", preview=False)
    return m


def build(raw=None):
    from components import HaCluster, HaClusterArgs

    return HaCluster("hacluster", HaClusterArgs(load(raw or {}, "t", ROOT, HostFacts(True, False))))


def of(m, typ):
    """Resources of a type, by its short token (libvirt:index:Domain for libvirt:index/domain:Domain)."""
    pkg, _, name = typ.rpartition(":")
    return [r for r in m.resources if r.typ in (typ, f"{pkg}/{name[0].lower()}{name[1:]}:{name}")]


SECRET_SIG = "4dabf18193072939515e22adb298388d"


def unsecret(value):
    """Mocks see secret inputs as {<secret signature>: ..., "value": v}, at any depth."""
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return unsecret(value["value"])
        return {k: unsecret(v) for k, v in value.items()}
    return value


def after(cluster, check):
    """Run `check` once every domain is registered (and the verifier command, when there is one)."""
    waits = [*cluster.domain_names, cluster.private_key] + ([cluster.verification] if cluster.verification else [])
    return pulumi.Output.all(*waits).apply(check)


@pulumi.runtime.test
def test_kvm_domains_keep_the_kernels_mitigations(mocks):
    cluster = build({"vm": {"domainType": "kvm"}})

    def check(_):
        for d in of(mocks, "libvirt:index:Domain"):
            assert d.inputs["type"] == "kvm" and "mitigations" not in d.inputs["cmdlines"][0]

    return after(cluster, check)


@pulumi.runtime.test
def test_four_domains_each_with_own_overlay_and_seed_on_the_network(mocks):
    cluster = build()

    def check(_):
        domains = of(mocks, "libvirt:index:Domain")
        assert sorted(d.inputs["name"] for d in domains) == ["t-lb01", "t-lb02", "t-web01", "t-web02"]
        overlays = [v for v in of(mocks, "libvirt:index:Volume") if v.inputs.get("baseVolumeId")]
        (base,) = [v for v in of(mocks, "libvirt:index:Volume") if v.name == "hacluster-base"]
        # the base's name carries the image's identity (a rebuilt image is a new volume)
        assert base.inputs["name"] == f"t-base-{image_set(*IMAGES).short('image')}"
        assert len(overlays) == 4 and {v.inputs["baseVolumeId"] for v in overlays} == {f"/pool/{base.inputs['name']}"}
        disks = [d.inputs["disks"][0]["volumeId"] for d in domains]
        assert sorted(disks) == sorted(f"/pool/{v.inputs['name']}" for v in overlays)  # one each, no sharing
        seeds = of(mocks, "libvirt:index:CloudInitDisk")
        assert sorted(d.inputs["cloudinit"] for d in domains) == sorted(f"{s.name}-id" for s in seeds)
        (net,) = of(mocks, "libvirt:index:Network")
        assert net.inputs["addresses"] == ["192.168.81.0/24"] and net.inputs["mode"] == "nat"
        assert net.inputs["autostart"] is False  # with the domains: vm.autostart
        macs = {}
        for d in domains:
            (nic,) = d.inputs["networkInterfaces"]
            assert nic["networkId"] == f"{net.name}-id"
            macs[d.inputs["name"]] = nic["mac"]
            assert d.inputs["type"] == "qemu" and d.inputs["kernel"].startswith("/pool/t-kernel-")
            assert d.inputs["autostart"] is False and d.inputs["running"] is True  # the lab's default
            assert "tb-cache" in d.inputs["xml"]["xslt"]
            assert d.inputs["cmdlines"][0]["mitigations"] == "off"  # TCG: an emulated CPU does not speculate
        assert macs["t-lb01"] == "52:54:00:a8:51:d2"  # .210
        addresses = {s.inputs["name"]: s.inputs["networkConfig"] for s in seeds}
        for name, ip in [("lb01", "210"), ("lb02", "220"), ("web01", "230"), ("web02", "240")]:
            assert f"address: 192.168.81.{ip}/24" in addresses[f"t-{name}-seed.iso"]

    return after(cluster, check)


@pulumi.runtime.test
def test_each_overlay_gets_its_nodes_disk_size_in_bytes_or_none(mocks):
    cluster = build({"vm": {"diskGiB": 8}, "webNodes": [{"name": "web01", "ip": "192.168.81.230", "diskGiB": 20},
                                                        {"name": "web02", "ip": "192.168.81.240"}]})

    def check(_):
        sizes = {v.inputs["name"]: v.inputs.get("size") for v in of(mocks, "libvirt:index:Volume")
                 if v.inputs.get("baseVolumeId")}
        assert sizes == {"t-web01.qcow2": 20 << 30, "t-web02.qcow2": 8 << 30, "t-lb01.qcow2": 8 << 30,
                         "t-lb02.qcow2": 8 << 30}

    return after(cluster, check)


@pulumi.runtime.test
def test_without_disk_size_the_overlays_have_the_images_size(mocks):
    cluster = build()

    def check(_):
        overlays = [v for v in of(mocks, "libvirt:index:Volume") if v.inputs.get("baseVolumeId")]
        assert len(overlays) == 4 and all("size" not in v.inputs for v in overlays)

    return after(cluster, check)


@pulumi.runtime.test
def test_secrets_stay_secret_and_user_data_carries_only_the_public_key(mocks):
    cluster = build()

    def check(values):
        private_key = values[len(cluster.domain_names)]
        seeds = {r.name: r.inputs["userData"] for r in of(mocks, "libvirt:index:CloudInitDisk")}
        lb, web = seeds["lb01-seed"], seeds["web01-seed"]
        assert lb != unsecret(lb), "balancer user-data (VRRP password inside) must be a secret"
        assert web != unsecret(web), "user-data (the node's private host key inside) must be a secret"
        for node, user_data in (("lb01", unsecret(lb)), ("web01", unsecret(web))):
            assert PUBLIC in user_data and "MOCKKEY" not in user_data  # the stack's public key, not its private one
            doc = yaml.safe_load(user_data)
            made = fake_host_key(f'-C "hacluster-t-{node}-host"')
            private, public = made[:made.index("-----END")] + "-----END OPENSSH PRIVATE KEY-----\n", made.splitlines()[-1]
            assert doc["ssh_keys"] == {"ed25519_private": private, "ed25519_public": " ".join(public.split()[:2])}
            assert doc["ssh_deletekeys"] is True and doc["ssh_genkeytypes"] == []
            assert user_data.count("MOCKHOSTKEY") == 1 and f"MOCKHOSTKEY{node}" in user_data  # its own, once
        for c in of(mocks, "command:local:Command"):  # no command carries a private host key, in the open or not
            assert "MOCKHOSTKEY" not in str(unsecret(c.inputs)), c.name
        hostkeygens = [c for c in of(mocks, "command:local:Command") if c.name.startswith("hacluster-secrets-host-key-")]
        assert sorted(c.name for c in hostkeygens) == [f"hacluster-secrets-host-key-{n}"
                                                       for n in ("lb01", "lb02", "web01", "web02")]
        assert all(c.inputs["logging"] == "none" for c in hostkeygens)
        assert 'auth_pass "Ab3dEf9h"' in unsecret(lb)
        assert private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        keygen = next(c for c in of(mocks, "command:local:Command") if "ssh-keygen" in c.inputs["create"])
        assert keygen.inputs["logging"] == "none"

    return after(cluster, check)


@pulumi.runtime.test
def test_bridge_mode_makes_no_network_and_attaches_to_the_bridge(mocks):
    cluster = build({"network": {"mode": "bridge", "bridge": "br0", "gateway": "192.168.81.254"}, "labNetns": "",
                     "vm": {"libvirtUri": "qemu+unix:///system"}})

    def check(_):
        assert of(mocks, "libvirt:index:Network") == []
        domains = of(mocks, "libvirt:index:Domain")
        assert len(domains) == 4
        for d in domains:
            assert d.inputs["networkInterfaces"][0]["bridge"] == "br0"
            assert d.inputs["autostart"] is True  # a hypervisor of your own: back after its reboot

    return after(cluster, check)


@pulumi.runtime.test
def test_verifier_runs_after_every_vm_and_gets_the_key_only_by_environment(mocks):
    cluster = build()

    def check(_):
        cmds = [c for c in of(mocks, "command:local:Command") if "verifier" in c.inputs.get("create", "")]
        (verify,) = cmds
        env = verify.inputs["environment"]
        assert env != unsecret(env), "the environment carries the private key: it must be a secret"
        assert unsecret(env)["HACLUSTER_SSH_KEY"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert "PRIVATE" not in verify.inputs["create"]
        assert '"vip": "192.168.81.100"' in unsecret(env)["HACLUSTER_VERIFY_SPEC"]
        pins = json.loads(unsecret(env)["HACLUSTER_HOST_KEYS"])  # the balancers' public host keys only
        assert sorted(pins) == ["lb01", "lb02"] and pins["lb01"] == ssh_key("", fill=20).strip()
        day2 = {c.name: json.loads(unsecret(c.inputs["environment"])["HACLUSTER_HOST_KEYS"])
                for c in of(mocks, "command:local:Command") if "day2" in c.inputs.get("create", "")}
        assert sorted(day2["web01-config"]) == sorted(day2["web01-drain"]) == ["lb01", "lb02", "web01"]
        assert day2["web02-config"]["web02"] == ssh_key("", fill=23).strip()

    return after(cluster, check)
