"""Property: arbitrary text in any string setting is either refused with that key named, or renders
into files that still parse: user-data as YAML with exactly the expected users and files, and (for a
bounded number of accepted examples) the nginx and keepalived configs through the real `nginx -t` and
`keepalived -t`, inside a network namespace of the test's own."""

import os
import shutil
import subprocess
import uuid

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import render
from model.settings import HostFacts, SettingsError, load
from tests.conftest import ROOT, host_key, ssh_key
from tests.unit.conftest import write_node

TCG = HostFacts(kvm_device=True, hardware_kvm_module=False)
ROUTING = {"pools": {"default": ["web01", "web02"], "mobile": ["web01"]},
           "rules": [{"match": "iphone", "pool": "mobile"}], "default": "default"}


def at(path: str, value: str, base: dict | None = None) -> dict:
    """{"a": {"b": [..{"c": value}]}} for path "a.b[0].c", over the defaults where a list is needed."""
    from model.settings import DEFAULTS
    raw = base or {}
    parts = path.replace("[", ".[").split(".")
    cur = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        nxt = parts[i + 1] if not last else None
        if part.startswith("["):
            idx = int(part[1:-1])
            if last:
                cur[idx] = value
            else:
                cur = cur[idx]
            continue
        if last:
            cur[part] = value
        elif part not in cur:
            if nxt.startswith("["):
                import copy
                cur[part] = copy.deepcopy(DEFAULTS.get(part)) if cur is raw and part in DEFAULTS and \
                    isinstance(DEFAULTS[part], list) and DEFAULTS[part] else [None]
            else:
                cur[part] = {}
            cur = cur[part]
        else:
            cur = cur[part]
    return raw


# (setting, extra config it needs, keys a refusal may name)
STRINGS = [
    ("vip", {}, ()), ("network.cidr", {}, ()), ("network.gateway", {}, ()), ("network.name", {}, ()),
    ("network.bridge", {"network": {"mode": "bridge"}}, ()), ("network.dns[0]", {}, ()),
    ("balancers[0].name", {}, ()), ("balancers[0].ip", {}, ()), ("balancers[0].routerId", {}, ()),
    ("webNodes[0].name", {}, ()), ("webNodes[0].ip", {}, ()), ("vrrp.interface", {}, ()),
    ("vrrp.profile", {}, ()), ("vrrp.transport", {}, ()), ("vrrp.authType", {}, ()),
    ("nginx.serverName", {}, ()), ("nginx.clientMaxBodySize", {}, ()),
    ("nginx.proxy.bufferSize", {}, ("nginx.proxy.buffers",)), ("nginx.proxy.buffers", {}, ()),
    ("nginx.persistence", {}, ()), ("nginx.routing.rules[0].match", {"nginx": {"routing": ROUTING}}, ()),
    ("nginx.routing.default", {"nginx": {"routing": ROUTING}}, ()),
    ("vm.image", {}, ()), ("vm.kernel", {}, ()), ("vm.libvirtUri", {}, ("labNetns",)), ("vm.poolPath", {}, ()),
    ("vm.adminUser", {}, ()), ("vm.domainType", {}, ()), ("labNetns", {}, ()), ("sshAuthorizedKeys[0]", {}, ()),
    ("vrrpAuthPass", {}, ()), ("firewall.sshFrom[0]", {}, ()), ("firewall.webHttpFrom[0]", {}, ()),
]
VALID = {"vip": "192.168.81.100", "network.cidr": "192.168.81.0/24", "network.gateway": "192.168.81.1",
         "network.name": "net1", "network.bridge": "br0", "network.dns[0]": "192.168.81.1",
         "balancers[0].name": "lb01", "balancers[0].ip": "192.168.81.210", "balancers[0].routerId": "lb01",
         "webNodes[0].name": "web01", "webNodes[0].ip": "192.168.81.230", "vrrp.interface": "eth0",
         "vrrp.profile": "fast", "vrrp.transport": "multicast", "vrrp.authType": "PASS",
         "nginx.serverName": "www.example.local", "nginx.clientMaxBodySize": "200m",
         "nginx.proxy.bufferSize": "256k", "nginx.proxy.buffers": "4 256k", "nginx.persistence": "cookie:sid",
         "nginx.routing.rules[0].match": "iphone|ipad", "nginx.routing.default": "mobile",
         "vm.image": ".images/debian12/disk.qcow2", "vm.kernel": ".images/debian12/vmlinuz",
         "vm.libvirtUri": "qemu:///system", "vm.poolPath": "/srv/pools/hc", "vm.adminUser": "ops",
         "vm.domainType": "qemu", "labNetns": "halab", "sshAuthorizedKeys[0]": ssh_key("me@laptop"),
         "vrrpAuthPass": "pw;$(x)", "firewall.sshFrom[0]": "10.0.0.0/8", "firewall.webHttpFrom[0]": "10.1.2.3"}
JUNK = ["\n", "\r", "\t", " ", ";", "{", "}", "#", "!", '"', "'", "\\", ": ", "$", "\x00", "`", "|", "*", "-",
        "\n- name: evil", "}\n", "$(reboot)", "..", "/", ":", ",", "&", "?", "=", "\u2028", "\x85", "é"]


def mutated(key: str):
    base = VALID[key]
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(JUNK).map(lambda j: base + j),
        st.sampled_from(JUNK).map(lambda j: j + base),
        st.tuples(st.sampled_from(JUNK), st.integers(0, max(len(base), 1))).map(lambda t: base[:t[1]] + t[0] + base[t[1]:]),
        st.just(base),
    )


class ToolBudget:
    """Real `nginx -t` / `keepalived -t` runs are bounded so the unit tier stays fast."""
    left = 24


@pytest.fixture(scope="module")
def lab():
    name = f"hcprop-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    d = f"/run/hcprop-{os.getpid()}"
    os.makedirs(d, mode=0o755, exist_ok=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"], check=True)
        yield name, d
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(d, ignore_errors=True)


def check_renders(s, lab, seen: set) -> None:
    for node in s.nodes:
        doc = yaml.safe_load(render.user_data(s, node, s.vrrp_auth_pass or "pw", [ssh_key("stack")], host_key()))
        assert [u["name"] for u in doc["users"]] == [s.vm.admin_user, s.vm.operator_user] + (
            ["keepalived_script"] if node.role == "lb" else []), doc["users"]
        assert doc["users"][0]["ssh_authorized_keys"] == [ssh_key("stack")]
        assert doc["users"][1]["ssh_authorized_keys"] == list(s.ssh_authorized_keys)
        assert doc["hostname"] == node.name
        files = render.node_files(s, node, s.vrrp_auth_pass or "pw")
        assert [f["path"] for f in doc["write_files"]] == [f.path for f in files]
        assert [f["content"] for f in doc["write_files"]] == [f.content for f in files]
        net = yaml.safe_load(render.network_config(s, node))
        assert net["config"][0]["name"] == s.vrrp.interface and net["config"][0]["mac_address"] == node.mac
    fingerprint = (render.nginx_conf(s, s.balancers[0]), render.keepalived_conf(s, s.balancers[0], "pw")
                   if s.vrrp.auth_type else render.keepalived_conf(s, s.balancers[0], None),
                   render.nginx_conf(s, s.web_nodes[0]))
    if fingerprint in seen or ToolBudget.left <= 0:
        return
    seen.add(fingerprint)
    ToolBudget.left -= 1
    ns, d = lab
    for node in (s.balancers[0], s.web_nodes[0]):
        prefix = f"{d}/{ToolBudget.left}/{node.name}"
        paths = write_node(s, node, prefix)
        r = subprocess.run(["ip", "netns", "exec", ns, "nginx", "-t", "-q", "-p", prefix, "-c", paths.nginx_conf],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        if node.role == "lb":
            iface = s.vrrp.interface
            if iface != "eth0":  # keepalived -t checks that the interface exists where it runs
                # `name` spelled out: `ip link add n ...` reads a bare `n` as an abbreviation of `name`
                subprocess.run(["ip", "-n", ns, "link", "add", "name", iface, "type", "veth", "peer", "name",
                                f"p{uuid.uuid4().hex[:8]}"], capture_output=True)
            r = subprocess.run(["ip", "netns", "exec", ns, "keepalived", "-t", "-f", paths.keepalived_conf],
                               capture_output=True, text=True)
            assert r.returncode in (0, -15) and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


@pytest.mark.parametrize("key, extra, also", STRINGS, ids=[k for k, _, _ in STRINGS])
def test_any_text_is_refused_by_key_or_renders_files_that_parse(key, extra, also, lab):
    seen: set = set()

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutated(key))
    def prop(value):
        import copy
        raw = at(key, value, copy.deepcopy(extra))
        try:
            s = load(raw, "t", ROOT, TCG)
        except SettingsError as e:
            named = {p.split(" = ")[0] for p in e.problems}
            assert key in named or named & set(also), (key, value, e.problems)
            return
        check_renders(s, lab, seen)

    prop()
