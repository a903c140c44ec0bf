"""Values that used to pass and land raw in rendered files (issue 13): each is refused with its key
named; the few legitimate look-alikes render into files that still parse."""

import os
import subprocess

import pytest
import yaml

from model import render
from model.settings import HostFacts, SettingsError, load
from tests.conftest import ROOT, host_key, ssh_key

TCG = HostFacts(kvm_device=True, hardware_kvm_module=False)
LB_BACKUP = [{"name": "lb01", "ip": "192.168.81.210", "state": "BACKUP", "priority": 150},
             {"name": "lb02", "ip": "192.168.81.220", "state": "BACKUP", "priority": 100}]
WRONG_TYPE_KEY = "ssh-ed25519 " + ssh_key(kind="ssh-rsa").split()[1]

REFUSED = [
    # SSH keys: parsed, one line, known type, base64 body embedding its own type
    ({"sshAuthorizedKeys": [ssh_key() + "\n- name: evil\n  sudo: ALL=(ALL) NOPASSWD:ALL"]}, "sshAuthorizedKeys[0]"),
    ({"sshAuthorizedKeys": ["ssh-ed25519 AAAA!!notbase64!!AAAAAAAA"]}, "sshAuthorizedKeys[0]"),
    ({"sshAuthorizedKeys": ["ssh-ed25519 QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"]}, "sshAuthorizedKeys[0]"),
    ({"sshAuthorizedKeys": [WRONG_TYPE_KEY]}, "sshAuthorizedKeys[0]"),
    ({"sshAuthorizedKeys": ['command="sh" ' + ssh_key()]}, "sshAuthorizedKeys[0]"),
    ({"sshAuthorizedKeys": ["ssh-dss " + ssh_key(kind="ssh-dss").split()[1]]}, "sshAuthorizedKeys[0]"),
    # keepalived auth_pass
    ({"vrrpAuthPass": "ab}{cd"}, "vrrpAuthPass"),
    ({"vrrpAuthPass": "ab#cdefg"}, "vrrpAuthPass"),
    ({"vrrpAuthPass": "!abcdefg"}, "vrrpAuthPass"),
    ({"vrrpAuthPass": 'ab"cd'}, "vrrpAuthPass"),
    ({"vrrpAuthPass": "ab\\cd"}, "vrrpAuthPass"),
    ({"vrrpAuthPass": "ab cd"}, "vrrpAuthPass"),
    ({"vrrpAuthPass": "abcd\n"}, "vrrpAuthPass"),
    # reserved accounts
    ({"vm": {"adminUser": "www-data"}}, "vm.adminUser"),
    ({"vm": {"adminUser": "root"}}, "vm.adminUser"),
    ({"vm": {"adminUser": "nobody"}}, "vm.adminUser"),
    ({"vm": {"adminUser": "keepalived_script"}}, "vm.adminUser"),
    ({"vm": {"adminUser": "sudo"}}, "vm.adminUser"),
    # trailing newlines (re.match + $)
    ({"webNodes": [{"name": "web01\n", "ip": "192.168.81.230"}]}, "webNodes[0].name"),
    ({"nginx": {"persistence": "ip_hash\n"}}, "nginx.persistence"),
    ({"labNetns": "halab\n"}, "labNetns"),
    ({"vip": "192.168.81.100\n"}, "vip"),
    ({"vrrp": {"interface": "eth0\n"}}, "vrrp.interface"),
    ({"network": {"name": "net\n"}}, "network.name"),
    ({"balancers": [{**LB_BACKUP[0], "state": "MASTER", "routerId": "lb01\n"}, LB_BACKUP[1]]}, "balancers[0].routerId"),
    ({"firewall": {"sshFrom": ["10.0.0.0/8\n"]}}, "firewall.sshFrom[0]"),
    # values nginx refuses at boot
    ({"nginx": {"clientMaxBodySize": "99999999999g"}}, "nginx.clientMaxBodySize"),
    ({"nginx": {"proxy": {"buffers": "4 8k"}}}, "nginx.proxy.buffers"),
    ({"nginx": {"proxy": {"buffers": "1 256k"}}}, "nginx.proxy.buffers"),
    ({"nginx": {"proxy": {"buffers": "0 256k"}}}, "nginx.proxy.buffers"),
    ({"nginx": {"proxy": {"bufferSize": "1m"}}}, "nginx.proxy.buffers"),
    ({"nginx": {"proxy": {"bufferSize": "1g"}}}, "nginx.proxy.bufferSize"),
    ({"nginx": {"serverName": "x" * 10000}}, "nginx.serverName"),
    ({"nginx": {"serverName": "*"}}, "nginx.serverName"),
    ({"nginx": {"serverName": "a.example;  return 444"}}, "nginx.serverName"),
    ({"nginx": {"routing": {"pools": {"default": ["web01"]}, "rules": [{"match": "a{,3}", "pool": "default"}]}}},
     "nginx.routing.rules[0].match"),
    ({"nginx": {"routing": {"pools": {"default": ["web01"]}, "rules": [{"match": "(?<=ab|c)x", "pool": "default"}]}}},
     "nginx.routing.rules[0].match"),
    ({"nginx": {"routing": {"pools": {"default": ["web01"]}, "rules": [{"match": "a**", "pool": "default"}]}}},
     "nginx.routing.rules[0].match"),
    # libvirt names and URIs
    ({"network": {"mode": "bridge", "bridge": "br0; reboot"}}, "network.bridge"),
    ({"network": {"mode": "bridge", "bridge": "a" * 16}}, "network.bridge"),
    ({"network": {"mode": "bridge", "bridge": ".."}}, "network.bridge"),
    ({"vm": {"libvirtUri": "http://x"}}, "vm.libvirtUri"),
    ({"vm": {"libvirtUri": "qemu+ext:///system?command=/bin/sh"}}, "vm.libvirtUri"),
    ({"vm": {"libvirtUri": "qemu+ssh://h/system?netcat=sh"}}, "vm.libvirtUri"),
    ({"vm": {"libvirtUri": "qemu:///system\n"}}, "vm.libvirtUri"),
    # a number that is not one
    ({"vrrp": {"advertInt": "nan"}}, "vrrp.advertInt"),
    ({"vrrp": {"advertInt": "inf"}}, "vrrp.advertInt"),
    ({"vrrp": {"checkInterval": 0.05}}, "vrrp.checkInterval"),
    # the lab sandbox is not turned off by accident
    ({"labNetns": None}, "labNetns"),
    ({"labNetns": ""}, "labNetns"),
    # no effect, no word
    ({"vrrp": {"preemptDelay": 30}}, "vrrp.preemptDelay"),
    ({"vrrp": {"preemptDelay": 30, "nopreempt": True}, "balancers": LB_BACKUP}, "vrrp.preemptDelay"),
    ({"vrrp": {"interface": "lo"}}, "vrrp.interface"),
    ({"webNodes": [{"name": "web01-", "ip": "192.168.81.230"}]}, "webNodes[0].name"),
    ({"vm": {"image": "/nonexistent/disk.qcow2"}}, "vm.image"),
    ({"vm": {"image": "disk image.qcow2"}}, "vm.image"),
    ({"vm": {"poolPath": "/"}}, "vm.poolPath"),
    ({"vm": {"poolPath": "/etc"}}, "vm.poolPath"),
    ({"vm": {"poolPath": "/var/lib/../../etc"}}, "vm.poolPath"),
]


def problems(raw) -> list[str]:
    with pytest.raises(SettingsError) as e:
        load(raw, "t", ROOT, TCG)
    return e.value.problems


@pytest.mark.parametrize("raw, key", REFUSED, ids=[f"{k}-{i}" for i, (_, k) in enumerate(REFUSED)])
def test_refused_with_its_key_named(raw, key):
    found = problems(raw)
    assert any(p.split(" = ")[0] == key for p in found), found
    assert all(" = " in p and ": " in p for p in found)


def test_one_line_per_problem_and_all_at_once():
    found = problems({"vip": "x", "vrrpAuthPass": "ab}{cd", "vm": {"adminUser": "root"},
                      "balancers": [{**LB_BACKUP[0], "state": "MASTER"}, {**LB_BACKUP[1], "priority": 150}],
                      "nginx": {"routing": {"pools": {"default": ["web09"]}, "rules": [{"match": "(", "pool": "x"}]}}})
    keys = {p.split(" = ")[0] for p in found}
    assert {"vip", "vrrpAuthPass", "vm.adminUser", "balancers[1].priority", "nginx.routing.rules[0].match",
            "nginx.routing.rules[0].pool"} <= keys, found
    assert all("\n" not in p for p in found)
    assert all("ab}{cd" not in p for p in found)


def test_exact_messages():
    assert problems({"balancers": [{**LB_BACKUP[0], "state": "MASTER", "priority": 300}, LB_BACKUP[1]]}) == [
        "balancers[0].priority = 300: must be an integer 1..254"]
    (msg,) = problems({"vrrp": {"advertInt": "nan"}})
    assert msg == "vrrp.advertInt = 'nan': must be a number of seconds 0.01..255"


def test_lab_opt_out_is_explicit():
    # '' is fine for a libvirt of your own: a remote one, or this host's named explicitly
    for uri in ("qemu+ssh://admin@hv1/system", "qemu+unix:///system", "qemu:///session"):
        assert load({"labNetns": "", "vm": {"libvirtUri": uri}}, "t", ROOT, TCG).lab_netns is None


def test_image_outside_the_build_output_must_exist_but_the_build_output_may_be_missing(tmp_path):
    img = tmp_path / "disk.qcow2"
    img.write_bytes(b"")
    assert load({"vm": {"image": str(img)}}, "t", ROOT, TCG).vm.image == str(img)
    # the default (.images/ of the project, built by `make image`) on a fresh clone
    assert load({}, "t", tmp_path, TCG, path_exists=lambda p: False).vm.image.endswith(".images/debian12/disk.qcow2")


def test_look_alikes_that_are_fine_render_into_files_that_parse():
    key = ssh_key('laptop: "ops" #1')  # a comment holding ": ", quotes and '#'
    s = load({"sshAuthorizedKeys": [key], "vrrpAuthPass": "a;b$c|d("}, "t", ROOT, TCG)
    for node in s.nodes:
        doc = yaml.safe_load(render.user_data(s, node, s.vrrp_auth_pass, [ssh_key("stack")], host_key()))
        assert doc["users"][0]["ssh_authorized_keys"] == [ssh_key("stack")]
        assert doc["users"][1]["ssh_authorized_keys"] == [key]
        assert [u["name"] for u in doc["users"]] == ["ops", "sysop"] + (["keepalived_script"] if node.role == "lb" else [])
    assert 'auth_pass "a;b$c|d("' in render.keepalived_conf(s, s.balancers[0], s.vrrp_auth_pass)


def test_user_data_refuses_a_key_that_does_not_parse():
    s = load({}, "t", ROOT, TCG)
    with pytest.raises(ValueError):
        render.user_data(s, s.web_nodes[0], None, [ssh_key() + "\nruncmd: [reboot]"], host_key())




def test_keepalived_reads_the_quoted_password_as_its_bare_characters(netns, tmp_path_factory):
    d = f"/run/hcinj-{os.getpid()}"
    os.makedirs(d, mode=0o755, exist_ok=True)
    try:
        s = load({"vrrp": {"healthCheck": False}}, "t", ROOT, TCG)
        for pw, warns in (("abcdefgh", False), ("abcdefghi", True)):  # 8 pass; a 9th is truncated
            conf = f"{d}/k.conf"
            with open(conf, "w") as fh:
                fh.write(render.keepalived_conf(s, s.balancers[0], pw))
            r = subprocess.run(["ip", "netns", "exec", netns, "keepalived", "-t", "-f", conf], capture_output=True,
                               text=True)
            out = r.stdout + r.stderr
            assert ("Truncating auth_pass" in out) == warns, out
    finally:
        subprocess.run(["rm", "-rf", d], check=False)


def test_day2_spec_is_the_model_serialised():
    from day2.spec import Day2Spec
    s = load({}, "t", ROOT, TCG)
    spec = Day2Spec(node=s.balancers[0].name, ip=s.balancers[0].ip, ssh_user=s.vm.admin_user, netns=s.lab_netns,
                    timeout=s.verify.timeout)
    text = spec.model_dump_json(by_alias=True)
    assert Day2Spec.model_validate_json(text) == spec
    assert set(Day2Spec.model_validate_json(text).model_dump(by_alias=True)) == {
        "node", "ip", "sshUser", "netns", "timeout", "console", "limit", "role", "domain", "uri", "balancers", "vip",
        "interface", "pools", "master", "drain", "drainTimeout", "allowDowntime"}
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        Day2Spec.model_validate_json(text.replace('"halab"', '"halab\\n"'))
