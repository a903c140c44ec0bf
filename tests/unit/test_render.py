"""Rendering: golden differences, and every rendered config checked by the real nginx and keepalived."""

import difflib
import os
import shutil
import subprocess

import pytest
import yaml

from model import render
from model.settings import HostFacts, load
from tests.conftest import ROOT, host_key, ssh_key
from tests.unit.conftest import write_node

TCG = HostFacts(kvm_device=True, hardware_kvm_module=False)
ROUTING = {"pools": {"iphone": ["web01"], "android": ["web02"], "chrome": ["web01"], "firefox": ["web02"],
                     "default": ["web01", "web02"]},
           "rules": [{"match": "iphone", "pool": "iphone"}, {"match": "android", "pool": "android"},
                     {"match": "chrome", "pool": "chrome"}, {"match": "firefox", "pool": "firefox"}],
           "default": "default"}
VARIANTS = {
    "reference": {},
    "multicast": {"vrrp": {"transport": "multicast"}},
    "fast-v3": {"vrrp": {"version": 3, "advertInt": 0.2, "authType": "none"}},
    "fast-profile": {"vrrp": {"profile": "fast"}},
    "routing-iphash": {"nginx": {"routing": ROUTING, "persistence": "ip_hash"}},
    "cookie-nocheck": {"nginx": {"persistence": "cookie:sid"}, "vrrp": {"healthCheck": False}},
    "nopreempt": {"vrrp": {"nopreempt": True, "preemptDelay": 0},
                  "balancers": [{"name": "lb01", "ip": "192.168.81.210", "state": "BACKUP", "priority": 150},
                                {"name": "lb02", "ip": "192.168.81.220", "state": "BACKUP", "priority": 100}]},
}


def settings(raw=None):
    return load(raw or {}, "t", ROOT, TCG)


def changed_lines(a: str, b: str) -> list[str]:
    return [ln[1:].split()[0] for ln in difflib.unified_diff(a.splitlines(), b.splitlines(), n=0, lineterm="")
            if ln[:1] in "+-" and not ln.startswith(("+++", "---")) and ln[1:].strip()]


def test_master_backup_differ_only_in_router_id_state_priority():
    s = settings({"vrrp": {"transport": "multicast"}})
    a, b = (render.keepalived_conf(s, n, "pw") for n in s.balancers)
    assert sorted(set(changed_lines(a, b))) == ["#", "priority", "router_id", "state"]


def test_unicast_adds_only_source_and_peer():
    s = settings()
    a, b = (render.keepalived_conf(s, n, "pw") for n in s.balancers)
    assert sorted(set(changed_lines(a, b))) == ["#", "192.168.81.210", "192.168.81.220", "priority", "router_id",
                                                 "state", "unicast_src_ip"]


def test_lb_nginx_has_the_reference_proxy_settings():
    s = settings()
    conf = render.nginx_conf(s, s.balancers[0])
    for line in ["server 192.168.81.230:80 weight=1 max_fails=3 fail_timeout=60;",
                 "server 192.168.81.240:80 weight=1 max_fails=3 fail_timeout=60;",
                 "proxy_set_header Host $http_host;", "proxy_set_header X-Real-IP $remote_addr;",
                 "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                 "proxy_connect_timeout 30;", "proxy_send_timeout 60;", "proxy_read_timeout 60;",
                 "proxy_buffering on;", "proxy_buffer_size 256k;", "proxy_buffers 4 256k;",
                 "client_max_body_size 200m;", "server_tokens off;", "proxy_next_upstream error timeout",
                 "access_log /var/log/nginx/hacluster.access.log"]:
        assert line in conf, line
    assert " if " not in conf and "if (" not in conf


def test_routing_uses_map_and_variable_proxy_pass():
    s = settings({"nginx": {"routing": ROUTING}})
    conf = render.nginx_conf(s, s.balancers[0])
    assert "map $http_user_agent $hacluster_pool {" in conf
    assert '"~*iphone" pool_iphone;' in conf and "default pool_default;" in conf
    assert "proxy_pass http://$hacluster_pool;" in conf


def test_user_data_is_valid_cloud_config_whose_only_private_material_is_the_host_key():
    s = settings()
    for node in s.nodes:
        text = render.user_data(s, node, "pw123456", [ssh_key()], host_key())
        assert text.startswith("#cloud-config\n")
        doc = yaml.safe_load(text)
        assert doc["hostname"] == node.name and doc["ssh_pwauth"] is False
        assert doc["users"][0]["ssh_authorized_keys"] == [ssh_key()]
        assert [u["name"] for u in doc["users"]] == ["ops", "sysop"] + (["keepalived_script"] if node.role == "lb" else [])
        # no sudo from cloud-init (no rule, not in group sudo): the node's sudoers file holds every rule
        assert not any("sudo" in u or "groups" in u for u in doc["users"]), doc["users"]
        assert {f["path"]: f for f in doc["write_files"]}["/etc/sudoers.d/90-hacluster"] == {
            "path": "/etc/sudoers.d/90-hacluster", "permissions": "0440", "content": render.sudoers(s, node)}
        assert doc["runcmd"][0] == f"[ -e {render.GOLDEN_MARKER} ] && exit 0"  # the golden image starts it all
        last = doc["runcmd"][-1][-1]
        assert last.startswith("systemctl --no-reload enable keepalived") if node.role == "lb" else \
            last.endswith("nginx -t && systemctl --no-reload enable nginx && systemctl reload-or-restart nginx")
        paths = {f["path"]: f["content"] for f in doc["write_files"]}
        assert paths["/etc/nginx/nginx.conf"] == render.nginx_conf(s, node)
        # the node's own host key, the only one it will have; no private material anywhere else
        assert doc["ssh_keys"] == {"ed25519_private": host_key()[0], "ed25519_public": host_key()[1]}
        assert doc["ssh_deletekeys"] is True and doc["ssh_genkeytypes"] == []
        assert text.count("PRIVATE KEY-----") == 2 and text.count("FAKEHOSTPRIVATEKEY") == 1
        assert not any("PRIVATE KEY" in f["content"] for f in doc["write_files"])
        if node.role == "lb":
            assert 'auth_pass "pw123456"' in paths["/etc/keepalived/keepalived.conf"]
        net = yaml.safe_load(render.network_config(s, node))
        assert net["config"][0]["subnets"][0]["address"] == f"{node.ip}/24"
        assert net["config"][0]["mac_address"] == node.mac


def test_strict_undefined_catches_template_typos():
    with pytest.raises(Exception, match="undefined"):
        render._env.from_string("{{ nope }}").render()


# ---- the real tools ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scratch():
    """A root-owned, non-world-writable scratch dir (keepalived's script security checks the path)."""
    d = f"/run/hacluster-unit-{os.getpid()}"
    os.makedirs(d, mode=0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)




def keepalived_config_test(netns: str, conf: str) -> tuple[bool, str]:
    """`keepalived -t`: good = no message. keepalived 2.2.7 SIGTERMs itself at the end of a config test
    whenever a script is configured (it checks its parent pid, unset in -t mode), after printing any
    problems, so its exit status is 0 or -SIGTERM for a clean config and messages mean failure."""
    r = subprocess.run(["ip", "netns", "exec", netns, "keepalived", "-t", "-f", conf], capture_output=True, text=True)
    out = r.stdout + r.stderr
    return r.returncode in (0, -15) and not out.strip(), f"rc={r.returncode} {out}"




@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_configs_pass_nginx_and_keepalived_config_tests(variant, scratch, netns):
    s = settings(VARIANTS[variant])
    for node in s.nodes:
        prefix = f"{scratch}/{variant}/{node.name}"
        paths = write_node(s, node, prefix)
        r = subprocess.run(["nginx", "-t", "-q", "-p", prefix, "-c", paths.nginx_conf], capture_output=True, text=True)
        assert r.returncode == 0, f"{variant}/{node.name}: nginx -t: {r.stderr}"
        if node.role == "lb":
            good, out = keepalived_config_test(netns, paths.keepalived_conf)
            assert good, f"{variant}/{node.name}: keepalived -t: {out}"


def test_keepalived_config_test_really_rejects_a_bad_config(scratch, netns):
    s = settings()
    paths = write_node(s, s.balancers[0], f"{scratch}/bad/lb01")
    text = open(paths.keepalived_conf).read().replace("priority 150", "priority 300")
    with open(paths.keepalived_conf, "w") as fh:
        fh.write(text)
    good, out = keepalived_config_test(netns, paths.keepalived_conf)
    assert not good and "outside range" in out


def test_nginx_config_test_really_rejects_a_bad_config(scratch):
    s = settings()
    paths = write_node(s, s.balancers[0], f"{scratch}/badnginx/lb01")
    text = open(paths.nginx_conf).read().replace("proxy_buffers 4 256k;", "proxy_buffers 4 8k;")
    with open(paths.nginx_conf, "w") as fh:
        fh.write(text)
    r = subprocess.run(["nginx", "-t", "-q", "-p", f"{scratch}/badnginx/lb01", "-c", paths.nginx_conf],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "proxy_busy_buffers_size" in r.stderr


# (bufferSize, buffers): the settings' busy-buffers arithmetic must agree with nginx's own check.
BUFFER_CASES = [("256k", "4 256k"), ("256k", "4 8k"), ("256k", "3 256k"), ("256k", "2 256k"), ("8k", "2 8k"),
                ("4k", "3 4k"), ("16k", "3 8k"), ("1m", "4 256k"), ("1m", "9 256k"), ("512k", "5 256k"),
                ("8k", "8 4k"), ("64k", "3 64k"), ("64m", "3 64m"), ("1k", "2 1k")]


@pytest.mark.parametrize("buffer_size, buffers", BUFFER_CASES)
def test_busy_buffers_rule_agrees_with_nginx(buffer_size, buffers, scratch, netns):
    from model.settings import SettingsError
    try:
        settings({"nginx": {"proxy": {"bufferSize": buffer_size, "buffers": buffers}}})
        accepted = True
    except SettingsError as e:
        assert all(p.startswith("nginx.proxy.buffer") for p in e.problems), e.problems
        accepted = False
    s = settings()
    prefix = f"{scratch}/busy/{buffer_size}-{buffers.replace(' ', '-')}"
    paths = write_node(s, s.balancers[0], prefix)
    text = open(paths.nginx_conf).read().replace("proxy_buffers 4 256k;", f"proxy_buffers {buffers};").replace(
        "proxy_buffer_size 256k;", f"proxy_buffer_size {buffer_size};")
    with open(paths.nginx_conf, "w") as fh:
        fh.write(text)
    r = subprocess.run(["ip", "netns", "exec", netns, "nginx", "-t", "-q", "-p", prefix, "-c", paths.nginx_conf],
                       capture_output=True, text=True)
    assert accepted == (r.returncode == 0), (buffer_size, buffers, accepted, r.stderr)


def test_firewall_rules_pass_nft_check_and_say_who_may_connect(netns):
    s = settings()
    web = render.firewall_conf(s, s.web_nodes[0])
    lb = render.firewall_conf(s, s.balancers[0])
    assert "tcp dport 80 ip saddr { 192.168.81.210, 192.168.81.220 } accept" in web
    assert "tcp dport 22 ip saddr { 192.168.81.1/32 } accept" in web
    assert "ip protocol 112 ip saddr 192.168.81.220 accept" in lb and "tcp dport 80 accept" in lb
    for text in (web, lb):
        r = subprocess.run(["ip", "netns", "exec", netns, "nft", "-c", "-f", "-"], input=text,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    bad = web.replace("192.168.81.210", "192.168.81.999")
    r = subprocess.run(["ip", "netns", "exec", netns, "nft", "-c", "-f", "-"], input=bad, capture_output=True, text=True)
    assert r.returncode != 0


def test_firewall_can_be_turned_off_and_ssh_sources_set():
    s = settings({"firewall": {"enabled": False}})
    assert all("nftables" not in f.path for f in render.node_files(s, s.web_nodes[0], None))
    s = settings({"firewall": {"sshFrom": ["10.1.0.0/16"], "webHttpFrom": ["192.168.81.1"]}})
    assert "ip saddr { 10.1.0.0/16 }" in render.firewall_conf(s, s.balancers[1])
    assert "tcp dport 80 ip saddr { 192.168.81.210, 192.168.81.220, 192.168.81.1/32 } accept" in \
        render.firewall_conf(s, s.web_nodes[0])


# ---- the firewall fails closed ----------------------------------------------------------------------
SYSTEM = "/etc/systemd/system"
GUARDED = {"nginx": f"{SYSTEM}/nginx.service.d/20-hacluster-firewall.conf",
           "ssh": f"{SYSTEM}/ssh.service.d/20-hacluster-firewall.conf"}


def test_nginx_and_sshd_require_the_firewall_unit_when_the_firewall_is_on():
    s = settings()
    for node in s.nodes:
        files = {f.path: f.content for f in render.node_files(s, node, "pw")}
        unit = files[f"{SYSTEM}/hacluster-firewall.service"]
        assert "ConditionPathExists=/etc/nftables.conf" in unit and "ExecStart=/usr/sbin/nft -f /etc/nftables.conf" in unit
        for path in GUARDED.values():
            lines = files[path].splitlines()
            assert "Requires=hacluster-firewall.service" in lines and "After=hacluster-firewall.service" in lines
            # the golden image carries the same drop-ins (image/rootfs), baked and active from the first boot
            assert files[path] == (ROOT / "image/rootfs" / path.lstrip("/")).read_text()
    off = settings({"firewall": {"enabled": False}})
    for node in off.nodes:
        paths = {f.path for f in render.node_files(off, node, "pw")}
        assert not paths & {*GUARDED.values(), f"{SYSTEM}/hacluster-firewall.service", "/etc/nftables.conf"}


def test_the_image_ships_no_rules_so_without_the_firewall_its_unit_is_skipped():
    """firewall.enabled false writes no /etc/nftables.conf, and the image has none (not the package's
    accept-all default): hacluster-firewall.service and the early nftables.service skip by their condition,
    which does not fail what requires them (systemd.unit(5), Requires=)."""
    build = (ROOT / "image/build.sh").read_text()
    assert 'rm -f "$ROOTFS/etc/nftables.conf"' in build
    early = (ROOT / "image/rootfs/etc/systemd/system/nftables.service.d/10-hacluster.conf").read_text()
    assert "ConditionPathExists=/etc/nftables.conf" in early.splitlines()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_written_units_load_in_systemd(tmp_path):
    """What cloud-init writes for an image built elsewhere holds the firewall unit its drop-ins require:
    `systemd-analyze verify` (stub nginx and ssh units) refuses a Requires= on a unit that does not exist."""
    s = settings()
    for f in render.node_files(s, s.web_nodes[0], None):
        if f.path.startswith(SYSTEM):
            (tmp_path / f.path[len(SYSTEM) + 1:]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f.path[len(SYSTEM) + 1:]).write_text(f.content)
    for name in GUARDED:
        (tmp_path / f"{name}.service").write_text("[Service]\nExecStart=/bin/true\n")

    def verify() -> subprocess.CompletedProcess:
        return subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(tmp_path / f"{n}.service") for n in GUARDED)],
                              env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"}, capture_output=True, text=True,
                              timeout=60)
    r = verify()
    assert r.returncode == 0, r.stderr
    (tmp_path / "hacluster-firewall.service").unlink()
    r = verify()
    assert r.returncode != 0 and "hacluster-firewall.service not found" in r.stderr, r.stderr


@pytest.mark.parametrize("nft_ok", [True, False])
def test_user_data_starts_nginx_only_after_the_rules_loaded(tmp_path, nft_ok):
    """Images built elsewhere (runcmd): nginx is (re)started only once `nft -f` succeeded; a file nft
    refuses stops it instead. nft, systemctl and nginx are stand-ins that log their arguments."""
    log = tmp_path / "log"
    for tool, rc in (("nft", 0 if nft_ok else 1), ("systemctl", 0), ("nginx", 0)):
        (tmp_path / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexit {rc}\n')
        os.chmod(tmp_path / tool, 0o755)
    s = settings()
    doc = yaml.safe_load(render.user_data(s, s.web_nodes[0], None, [ssh_key()], host_key()))
    (cmd,) = [c[-1] for c in doc["runcmd"] if isinstance(c, list) and "nginx -t" in c[-1]]
    r = subprocess.run(["sh", "-c", cmd], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, text=True)
    calls = log.read_text().splitlines()
    if nft_ok:
        assert r.returncode == 0 and calls == ["nft -f /etc/nftables.conf", "systemctl --no-reload enable nftables",
                                               "nginx -t", "systemctl --no-reload enable nginx",
                                               "systemctl reload-or-restart nginx"], calls
    else:
        assert r.returncode == 1 and calls == ["nft -f /etc/nftables.conf", "systemctl stop nginx"], calls
    off = settings({"firewall": {"enabled": False}})
    doc = yaml.safe_load(render.user_data(off, off.web_nodes[0], None, [ssh_key()], host_key()))
    assert not any("nft" in str(c) for c in doc["runcmd"])


def test_host_keys_have_a_grammar():
    from model import grammar

    s = settings()
    private, public = host_key()
    assert grammar.host_public_key(public + " a-comment") == public  # the comment is dropped
    for bad in (ssh_key("", kind="ssh-rsa"), public + "\nruncmd: [reboot]", public[:-1], "ssh-ed25519 AAAA"):
        with pytest.raises(ValueError, match="ed25519 public key"):
            render.user_data(s, s.web_nodes[0], None, [ssh_key()], (private, bad))
    for bad in (private + "runcmd: [reboot]\n", private.replace("FAKE", "FA KE"), private.rstrip("\n"), ""):
        with pytest.raises(ValueError, match="OpenSSH private key"):
            render.user_data(s, s.web_nodes[0], None, [ssh_key()], (bad, public))
