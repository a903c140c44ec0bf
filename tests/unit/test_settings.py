"""Settings validation: every bad value fails with a message naming the key, before any resource."""

import copy
import json

import pytest
import yaml

from model import images
from model.settings import DEFAULTS, HostFacts, SettingsError, disk_key, load, resolve_domain_type
from tests.conftest import ROOT

TCG_HOST = HostFacts(kvm_device=True, hardware_kvm_module=False)


def ok(raw=None, **kw):
    return load(raw or {}, "t", ROOT, TCG_HOST, **kw)


def problems(raw) -> list[str]:
    with pytest.raises(SettingsError) as e:
        load(raw, "t", ROOT, TCG_HOST)
    return e.value.problems


def lbs(changes):
    out = copy.deepcopy(DEFAULTS["balancers"])
    for (i, key), value in changes.items():
        out[i][key] = value
    return out


def test_defaults_are_the_reference_design():
    s = ok()
    assert s.vip == "192.168.81.100"
    assert [(b.name, b.ip, b.state, b.priority, b.router_id) for b in s.balancers] == [
        ("lb01", "192.168.81.210", "MASTER", 150, "lb01"), ("lb02", "192.168.81.220", "BACKUP", 100, "lb02")]
    assert [(w.name, w.ip) for w in s.web_nodes] == [("web01", "192.168.81.230"), ("web02", "192.168.81.240")]
    assert (s.vrrp.virtual_router_id, s.vrrp.advert_int, s.vrrp.auth_type) == (51, 1, "PASS")
    assert (s.nginx.max_fails, s.nginx.fail_timeout, s.nginx.client_max_body_size) == (3, 60, "200m")
    assert s.master.name == "lb01" and s.backup.name == "lb02"


def test_dev_stack_file_loads_and_matches_the_reference():
    raw = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    assert ok({k.split(":", 1)[1]: v for k, v in raw.items()}) == ok()


@pytest.mark.parametrize("raw, key", [
    ({"vip": "192.168.81.300"}, "vip"),
    ({"vm": {"autostart": "yes"}}, "vm.autostart"),
    ({"vip": "not-an-ip"}, "vip"),
    ({"network": {"cidr": "192.168.81.0/33"}}, "network.cidr"),
    ({"network": {"cidr": "192.168.81.7/24"}}, "network.cidr"),
    ({"vip": "10.0.0.5"}, "vip"),
    ({"vip": "192.168.81.210"}, "vip"),
    ({"vip": "192.168.81.1"}, "vip"),
    ({"vip": "192.168.81.255"}, "vip"),
    ({"balancers": lbs({(1, "ip"): "192.168.81.210"})}, "balancers[1].ip"),
    ({"webNodes": [{"name": "web01", "ip": "192.168.82.230"}]}, "webNodes[0].ip"),
    ({"webNodes": [{"name": "web01", "ip": "192.168.81.230"}, {"name": "web01", "ip": "192.168.81.231"}]},
     "webNodes[1].name"),
    ({"balancers": lbs({(1, "routerId"): "lb01"})}, "balancers[1].routerId"),
    ({"balancers": lbs({(0, "priority"): 255})}, "balancers[0].priority"),
    ({"balancers": lbs({(0, "priority"): 0})}, "balancers[0].priority"),
    ({"balancers": lbs({(1, "priority"): 150})}, "balancers[1].priority"),
    ({"balancers": lbs({(1, "state"): "MASTER"})}, "balancers[1].state"),
    ({"balancers": lbs({(0, "state"): "master"})}, "balancers[0].state"),
    ({"balancers": lbs({(0, "priority"): 90})}, "balancers[0].priority"),
    ({"balancers": DEFAULTS["balancers"][:1]}, "balancers"),
    ({"vrrp": {"virtualRouterId": 0}}, "vrrp.virtualRouterId"),
    ({"vrrp": {"virtualRouterId": 256}}, "vrrp.virtualRouterId"),
    ({"vrrp": {"advertInt": 0}}, "vrrp.advertInt"),
    ({"vrrp": {"advertInt": -1}}, "vrrp.advertInt"),
    ({"vrrp": {"advertInt": 0.5}}, "vrrp.advertInt"),
    ({"vrrp": {"version": 3, "authType": "PASS"}}, "vrrp.authType"),
    ({"vrrp": {"transport": "broadcast"}}, "vrrp.transport"),
    ({"vrrpAuthPass": "a b"}, "vrrpAuthPass"),
    ({"vrrpAuthPass": "123456789"}, "vrrpAuthPass"),
    ({"webNodes": []}, "webNodes"),
    ({"nginx": {"upstream": {"weight": 0}}}, "nginx.upstream.weight"),
    ({"webNodes": [{"name": "web01", "ip": "192.168.81.230", "weight": 0}]}, "webNodes[0].weight"),
    ({"nginx": {"upstrem": {}}}, "nginx.upstrem"),
    ({"balancers": lbs({(0, "prority"): 150})}, "balancers[0].prority"),
    ({"vipp": "192.168.81.100"}, "vipp"),
    ({"vm": {"domainType": "xen"}}, "vm.domainType"),
    ({"vm": {"memory": 64}}, "vm.memory"),
    ({"vm": {"vcpus": "two"}}, "vm.vcpus"),
    ({"network": {"mode": "host"}}, "network.mode"),
    ({"network": {"mode": "bridge"}}, "network.bridge"),
    ({"network": {"gateway": "192.168.81.254"}}, "network.gateway"),
    ({"nginx": {"clientMaxBodySize": "200 MB"}}, "nginx.clientMaxBodySize"),
    ({"nginx": {"persistence": "sticky"}}, "nginx.persistence"),
    ({"vm": {"kernel": "/boot/vmlinuz", "initrd": ""}}, "vm.initrd"),
    ({"vm": {"libvirtUri": "system"}}, "vm.libvirtUri"),
    ({"vm": {"diskGiB": 0}}, "vm.diskGiB"),
    ({"vm": {"diskGiB": 4097}}, "vm.diskGiB"),
    ({"vm": {"diskGiB": "8G"}}, "vm.diskGiB"),
    ({"vm": {"diskGiB": True}}, "vm.diskGiB"),
    ({"webNodes": [{"name": "web01", "ip": "192.168.81.230", "diskGiB": 2.5}]}, "webNodes[0].diskGiB"),
    ({"balancers": lbs({(1, "diskGiB"): -1})}, "balancers[1].diskGiB"),
])
def test_bad_value_names_its_key(raw, key):
    found = problems(raw)
    assert any(p.split(" = ")[0].endswith(key) for p in found), found


def test_every_problem_is_reported_at_once():
    found = problems({"vip": "x", "vrrp": {"virtualRouterId": 999}, "webNodes": []})
    keys = {p.split(" = ")[0] for p in found}
    assert {"vip", "vrrp.virtualRouterId", "webNodes"} <= keys


def test_message_names_value_and_what_is_allowed():
    (msg,) = problems({"vrrp": {"virtualRouterId": 300}})
    assert msg == "vrrp.virtualRouterId = 300: must be an integer 1..255"


def test_secret_value_is_never_echoed():
    found = problems({"vrrpAuthPass": "supersecret9"})
    assert all("supersecret9" not in p for p in found)


def test_vrrp_v3_allows_subsecond_advert_and_no_auth():
    s = ok({"vrrp": {"version": 3, "advertInt": 0.2, "authType": "none"}})
    assert s.vrrp.advert_int == 0.2 and s.vrrp.auth_type is None


def test_nopreempt_needs_both_backup():
    assert "balancers[0].state" in problems({"vrrp": {"nopreempt": True}})[0]
    s = ok({"vrrp": {"nopreempt": True}, "balancers": lbs({(0, "state"): "BACKUP"})})
    assert s.master.name == "lb01"


def test_any_number_of_web_nodes():
    webs = [{"name": f"web{i:02d}", "ip": f"192.168.81.{10 + i}"} for i in range(1, 6)]
    assert len(ok({"webNodes": webs}).web_nodes) == 5


def test_per_node_resources_override_vm_defaults():
    s = ok({"webNodes": [{"name": "web01", "ip": "192.168.81.230", "vcpus": 2, "memory": 1024}],
            "vm": {"memory": 768}})
    assert (s.web_nodes[0].vcpus, s.web_nodes[0].memory, s.balancers[0].memory) == (2, 1024, 768)


def test_disk_size_defaults_to_the_image_and_per_node_overrides_vm():
    assert {n.disk_gib for n in ok().nodes} == {None}  # unset: the image's own virtual size, as before
    s = ok({"webNodes": [{"name": "web01", "ip": "192.168.81.230", "diskGiB": 32},
                         {"name": "web02", "ip": "192.168.81.240"}], "vm": {"diskGiB": 8}})
    assert [n.disk_gib for n in s.nodes] == [8, 8, 32, 8]
    assert (disk_key(s, s.web_nodes[0]), disk_key(s, s.web_nodes[1])) == ("webNodes[0].diskGiB", "vm.diskGiB")


def image_with_manifest(tmp_path, virtual_size, bytes_=1000):
    """A 1000-byte stand-in image with the manifest.json `make image` writes beside it."""
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"q" * 1000)
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"files": {"disk.qcow2": {"bytes": bytes_, "virtual_size": virtual_size, "sha256": "0" * 64}}}))
    return str(image)


def test_a_disk_smaller_than_the_image_is_refused_naming_the_setting(tmp_path):
    image = image_with_manifest(tmp_path, "4G")
    assert images.virtual_size(image) == 4 << 30
    webs = [{"name": "web01", "ip": "192.168.81.230", "diskGiB": 3}, {"name": "web02", "ip": "192.168.81.240"}]
    found = problems({"vm": {"image": image, "diskGiB": 2}, "webNodes": webs})
    assert found == [
        "vm.diskGiB = 2: smaller than the image's virtual size (4 GiB, vm.image's manifest.json): set 4 or more, "
        "or unset it (the image's own size)",
        "webNodes[0].diskGiB = 3: smaller than the image's virtual size (4 GiB, vm.image's manifest.json): set 4 or "
        "more, or unset it (the image's own size)"]
    assert {n.disk_gib for n in ok({"vm": {"image": image, "diskGiB": 4}}).nodes} == {4}


@pytest.mark.parametrize("virtual_size, bytes_", [("4 G", 1000), ("4GB", 1000), ("-4G", 1000), ("4G", 999)])
def test_an_unreadable_or_stale_manifest_leaves_the_size_unknown(tmp_path, virtual_size, bytes_):
    """Unknown: nothing is refused here (the plugin refuses a volume smaller than its base when it makes it)."""
    image = image_with_manifest(tmp_path, virtual_size, bytes_)
    assert images.virtual_size(image) is None
    assert ok({"vm": {"image": image, "diskGiB": 1}}).vm.disk_gib == 1


def test_routing_pools_validated():
    routing = {"pools": {"mobile": ["web01"], "default": ["web01", "web02"]},
               "rules": [{"match": "iphone|android", "pool": "mobile"}], "default": "default"}
    s = ok({"nginx": {"routing": routing}})
    assert [p.name for p in s.nginx.pools] == ["mobile", "default"]
    bad = {**routing, "rules": [{"match": "(", "pool": "nope"}]}
    keys = {p.split(" = ")[0] for p in problems({"nginx": {"routing": bad}})}
    assert {"nginx.routing.rules[0].match", "nginx.routing.rules[0].pool"} <= keys
    assert "nginx.routing.pools.mobile" in problems(
        {"nginx": {"routing": {**routing, "pools": {"mobile": ["web09"], "default": ["web01"]}}}})[0]


def test_domain_type_detection():
    assert resolve_domain_type("auto", "qemu:///system", TCG_HOST) == "qemu"
    assert resolve_domain_type("auto", "qemu:///system", HostFacts(True, True)) == "kvm"
    assert resolve_domain_type("auto", "qemu:///system", HostFacts(False, True)) == "qemu"
    assert resolve_domain_type("auto", "qemu+ssh://h/system", TCG_HOST) == "kvm"
    # A loopback host is this machine (the two-hypervisor lab): what it can boot decides.
    assert resolve_domain_type("auto", "qemu+ssh://root@127.0.0.1:2221/system?no_verify=1", TCG_HOST) == "qemu"
    assert resolve_domain_type("auto", "qemu+ssh://localhost/system", HostFacts(True, True)) == "kvm"
    assert resolve_domain_type("auto", "qemu+ssh://127.example/system", TCG_HOST) == "kvm"
    assert resolve_domain_type("qemu", "qemu:///system", HostFacts(True, True)) == "qemu"


def test_relative_image_paths_resolve_against_the_project():
    s = ok()
    assert s.vm.image == str(ROOT / ".images/debian12/disk.qcow2")
    assert ok({"vm": {"image": f"https://example.org/x.qcow2#sha256={DIGEST}", "kernel": "", "initrd": ""}}).vm.kernel is None


DIGEST = "ab" * 32


@pytest.mark.parametrize("key, url", [
    ("vm.image", "http://example.org/x.qcow2#sha256=" + DIGEST),  # plain http, even with its digest
    ("vm.image", "https://example.org/x.qcow2"),  # no digest
    ("vm.image", "https://example.org/x.qcow2#sha256=" + DIGEST[:-1]),  # a digest too short
    ("vm.image", "https://example.org/x.qcow2#sha256=" + DIGEST.upper()),
    ("vm.kernel", "https://example.org/vmlinuz#md5=" + DIGEST[:32]),
    ("vm.initrd", "http://example.org/initrd.img"),
])
def test_a_downloaded_image_needs_https_and_its_sha256(key, url):
    field = key.split(".")[1]
    with pytest.raises(SettingsError) as e:
        load({"vm": {field: url}}, "dev", ROOT, host=TCG_HOST)
    assert f"{key} = {url!r}" in str(e.value) and "https://HOST/PATH#sha256=<64 hex digits>" in str(e.value)


def test_a_url_image_is_identified_by_its_digest():
    from model.images import image_set
    one = image_set(f"https://example.org/x.qcow2#sha256={DIGEST}", None, None)
    mirror = image_set(f"https://mirror.example.net/y.qcow2#sha256={DIGEST}", None, None)
    assert one.image == DIGEST and one == mirror and one.short("image") == DIGEST[:12]
    assert image_set(f"https://example.org/x.qcow2#sha256={'cd' * 32}", None, None) != one


def test_pulumi_yaml_config_is_the_models_in_both_directions():
    """Every model key is declared (type, description, default) and nothing else is: regenerate with
    `python -m model.schema` after changing model/config.py."""
    from model.config import StackConfig
    from model.schema import pulumi_config, render_pulumi_yaml
    text = (ROOT / "Pulumi.yaml").read_text()
    declared = yaml.safe_load(text)["config"]
    assert set(declared) == {f"hacluster:{f.alias}" for f in StackConfig.model_fields.values()}
    assert declared == pulumi_config()
    assert text == render_pulumi_yaml(text), "Pulumi.yaml is stale: run `venv/bin/python -m model.schema`"
    for key, spec in declared.items():
        name = key.split(":", 1)[1]
        assert name in DEFAULTS and spec["description"], key
        # Pulumi hands every default to the program when the stack does not set the key: it must load as
        # the model's own default.
    assert ok({k.split(":", 1)[1]: v["default"] for k, v in declared.items()}) == ok()


def test_every_object_option_is_described_in_pulumi_yaml():
    from model.config import NginxConfig, VrrpConfig
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    for key, model in (("hacluster:vrrp", VrrpConfig), ("hacluster:nginx", NginxConfig)):
        for f in model.model_fields.values():
            assert f"{f.alias}:" in declared[key]["description"], (key, f.alias)


def test_fast_profile_sets_v3_subsecond_no_auth_and_explicit_keys_still_win():
    s = ok({"vrrp": {"profile": "fast"}})
    assert (s.vrrp.version, s.vrrp.advert_int, s.vrrp.auth_type, s.vrrp.check_fall) == (3, 0.1, None, 1)
    assert ok({"vrrp": {"profile": "fast", "advertInt": 0.3}}).vrrp.advert_int == 0.3
    assert problems({"vrrp": {"profile": "fast"}, "vrrpAuthPass": "abc"})[0].startswith("vrrpAuthPass")
    assert problems({"vrrp": {"profile": "turbo"}})[0].startswith("vrrp.profile")


def test_autostart_defaults_off_in_the_lab_and_on_for_a_hypervisor_of_your_own():
    own = {"labNetns": "", "vm": {"libvirtUri": "qemu+ssh://admin@kvm1/system"}}
    assert ok().vm.autostart is False
    assert ok(own).vm.autostart is True
    assert ok({"vm": {"autostart": True}}).vm.autostart is True  # the lab can prove it
    assert ok({**own, "vm": {**own["vm"], "autostart": "false"}}).vm.autostart is False
    (msg,) = problems({"vm": {"autostart": 1}})
    assert msg.startswith("vm.autostart = 1") and "true or false" in msg


# ---- plain TCP to a hypervisor -------------------------------------------------------------------------
OWN = {"labNetns": ""}
BRIDGED = {"network": {"mode": "bridge", "bridge": "br0"}}


@pytest.mark.parametrize(("raw", "key", "opt_in"), [
    ({**OWN, "vm": {"libvirtUri": "qemu+tcp://kvm1/system"}}, "vm.libvirtUri", "vm.insecureTcp"),
    ({**OWN, "vm": {"libvirtUri": "qemu+tcp://admin@10.20.0.5:16509/system"}}, "vm.libvirtUri", "vm.insecureTcp"),
    ({**BRIDGED, "hypervisors": {"kvm1": {"uri": "qemu+tcp://kvm1.example.org/system"}}},
     "hypervisors.kvm1.uri", "hypervisors.kvm1.insecureTcp"),
])
def test_plain_tcp_to_another_host_is_refused_unless_opted_in(raw, key, opt_in):
    (msg,) = problems(raw)
    assert msg.startswith(f"{key} = ") and "qemu+ssh://" in msg and "qemu+tls://" in msg, msg
    assert f"set {opt_in}: true" in msg and "no authentication or encryption" in msg, msg
    where, _, name = opt_in.rpartition(".")
    if where == "vm":
        ok({**raw, "vm": {**raw["vm"], name: True}})
    else:
        ok({**raw, "hypervisors": {"kvm1": {**raw["hypervisors"]["kvm1"], name: True}}})


@pytest.mark.parametrize("uri", ["qemu+tcp://127.0.0.1/system", "qemu+tcp://127.1.2.3:16509/system",
                                 "qemu+tcp://localhost/system", "qemu+tcp://[::1]/system", "qemu+tcp:///system"])
def test_plain_tcp_on_loopback_stays_allowed(uri):
    assert ok({**OWN, "vm": {"libvirtUri": uri}}).vm.libvirt_uri == uri
    assert ok({**BRIDGED, "hypervisors": {"h": {"uri": uri}}}).hypervisors[0].uri == uri


def test_an_opt_in_without_plain_tcp_to_another_host_is_refused():
    (msg,) = problems({"vm": {"insecureTcp": True}})
    assert msg.startswith("vm.insecureTcp = True: only with a qemu+tcp:// vm.libvirtUri to another host"), msg
    (msg,) = problems({**BRIDGED, "hypervisors": {"h": {"uri": "qemu+ssh://h/system", "insecureTcp": True}}})
    assert msg.startswith("hypervisors.h.insecureTcp = True: only with"), msg
    (msg,) = problems({**BRIDGED, "vm": {"insecureTcp": True},
                       "hypervisors": {"h": {"uri": "qemu+tcp://h/system", "insecureTcp": True}}})
    assert msg.startswith("vm.insecureTcp = True: not with hypervisors"), msg


def test_an_empty_ssh_from_is_refused_not_rendered_into_a_ruleset_nft_refuses():
    (msg,) = problems({"firewall": {"sshFrom": []}})
    assert msg.startswith("firewall.sshFrom = []: 1..64 CIDRs") and "no firewall" in msg, msg
    assert ok({"firewall": {"sshFrom": ["10.20.0.0/24"]}}).firewall.ssh_from == ("10.20.0.0/24",)
    # webHttpFrom may be empty: the web nodes' HTTP set always holds the balancers.
    assert ok({"firewall": {"webHttpFrom": []}}).firewall.web_http_from == ()
