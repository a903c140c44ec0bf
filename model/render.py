"""The one renderer: Jinja2 over templates/ with StrictUndefined.

Serves three consumers: the VMs (cloud-init), the integration tier (real nginx + keepalived in
network namespaces, with `Paths` pointing into a scratch prefix) and the unit tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import jinja2
import yaml

from . import grammar
from .settings import Node, Settings

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
AGENT = Path(__file__).resolve().parent.parent / "agent" / "health.py"
# systemd units and drop-ins the golden image carries (enabled there); written by cloud-init and day 2
# as well, so images built elsewhere get them too.
UNITS = Path(__file__).resolve().parent.parent / "image" / "rootfs" / "etc" / "systemd" / "system"
FIREWALL_UNITS = ["hacluster-firewall.service", "nginx.service.d/20-hacluster-firewall.conf",
                  "ssh.service.d/20-hacluster-firewall.conf"]
# Present on the golden image only: its units start the services, the user-data's runcmd does nothing.
GOLDEN_MARKER = "/etc/hacluster/golden-image"
EJECT_TABLE = "hacluster_eject"
SCRIPT_USER = "keepalived_script"
SITE = "hacluster"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)


@dataclass(frozen=True)
class Paths:
    """Where things live on a node. VM defaults; the integration tier relocates them."""

    user: str = "www-data"
    pid: str = "/run/nginx.pid"
    log_dir: str = "/var/log/nginx"
    mime_types: str = "/etc/nginx/mime.types"
    temp_dir: str | None = None  # None: nginx's compiled-in defaults
    webroot: str = "/var/www/hacluster"
    nginx_conf: str = "/etc/nginx/nginx.conf"
    keepalived_conf: str = "/etc/keepalived/keepalived.conf"
    notify_script: str = "/etc/keepalived/notify.sh"
    nftables_conf: str = "/etc/nftables.conf"
    state_file: str | None = None
    # The health agent (agent/health.py) and what it writes: keepalived's track file, its own state.
    health_agent: str = "/usr/local/lib/hacluster/health.py"
    health_conf: str = "/etc/hacluster/health.json"
    track_file: str = "/run/hacluster/vrrp-track"
    health_state: str = "/run/hacluster/health-state.json"
    drain_file: str = "/run/hacluster/drain.json"  # written by a rolling change (day2/gate.py)
    nginx_reload: tuple[str, ...] = ("systemctl", "reload", "nginx")
    systemd_dir: str | None = "/etc/systemd/system"  # None: no init system (the namespace tier)
    require_netns: bool = False  # the agent refuses the root namespace (the namespace tier)
    sudoers: str | None = "/etc/sudoers.d/90-hacluster"  # None: no sudo (the namespace tier)

    @property
    def site_log(self) -> str:
        """The balancer site's access log (the health agent watches it grow: nginx completes requests)."""
        return f"{self.log_dir}/{SITE}.access.log"

    def under(self, prefix: str) -> Paths:
        """Every file below `prefix` (for nginx -p / keepalived in a namespace)."""
        return replace(self, pid=f"{prefix}/nginx.pid", log_dir=f"{prefix}/logs", temp_dir=f"{prefix}/tmp",
                       webroot=f"{prefix}/www", nginx_conf=f"{prefix}/nginx.conf",
                       keepalived_conf=f"{prefix}/keepalived.conf",
                       notify_script=f"{prefix}/notify.sh",
                       nftables_conf=f"{prefix}/nftables.conf", state_file=f"{prefix}/vrrp-state.log",
                       health_agent=f"{prefix}/health.py", health_conf=f"{prefix}/health.json",
                       track_file=f"{prefix}/vrrp-track", health_state=f"{prefix}/health-state.json",
                       drain_file=f"{prefix}/drain.json",
                       nginx_reload=("nginx", "-p", prefix, "-c", f"{prefix}/nginx.conf", "-s", "reload"),
                       systemd_dir=None, require_netns=True, sudoers=None)


VM_PATHS = Paths()


@dataclass(frozen=True)
class NodeFile:
    path: str
    content: str
    mode: str = "0644"
    owner: str = "root"


def render(template: str, **ctx) -> str:
    return _env.get_template(template).render(**ctx)


def _ctx(s: Settings, node: Node, paths: Paths) -> dict:
    return {"stack": s.stack, "node": node, "nginx": s.nginx, "vrrp": s.vrrp, "network": s.network,
            "vm": s.vm, "vip": s.vip, "firewall": s.firewall, "paths": paths, "site": SITE, "script_user": SCRIPT_USER}


def _upstream(pool_name: str) -> str:
    return f"pool_{pool_name}"


def nginx_conf(s: Settings, node: Node, paths: Paths = VM_PATHS) -> str:
    if node.role == "web":
        return render("nginx-web.conf.j2", **_ctx(s, node, paths))
    by_name = {w.name: w for w in s.web_nodes}
    pools = [{"upstream": _upstream(p.name), "members": [by_name[m] for m in p.members]} for p in s.nginx.pools]
    rules = [{"match": r.match, "upstream": _upstream(r.pool)} for r in s.nginx.rules]
    return render("nginx-lb.conf.j2", pools=pools, rules=rules,
                  default_upstream=_upstream(s.nginx.default_pool), **_ctx(s, node, paths))


def keepalived_conf(s: Settings, node: Node, auth_pass: str | None, paths: Paths = VM_PATHS) -> str:
    peer = next(b for b in s.balancers if b is not node)
    if s.vrrp.auth_type and not auth_pass:
        raise ValueError("VRRP PASS authentication needs a password")
    return render("keepalived.conf.j2", peer=peer, auth_pass=auth_pass or "", **_ctx(s, node, paths))


def node_files(s: Settings, node: Node, auth_pass: str | None, paths: Paths = VM_PATHS,
               ssh_keys: list[str] | None = None) -> list[NodeFile]:
    """Every config file a node needs, as (path, content, mode, owner), its sudoers file on VMs. With
    `ssh_keys` (day 2: the stack's key), the authorized_keys of the automation user (`ssh_keys`) and of the
    operators' user (sshAuthorizedKeys) too: at first boot cloud-init writes them."""
    ctx = _ctx(s, node, paths)
    files = [NodeFile(paths.nginx_conf, nginx_conf(s, node, paths))]
    if node.role == "web":
        files.append(NodeFile(f"{paths.webroot}/index.html", render("index.html.j2", **ctx)))
    else:
        files += [
            NodeFile(paths.keepalived_conf, keepalived_conf(s, node, auth_pass, paths), "0600"),
            NodeFile(paths.notify_script, render("notify.sh.j2", **ctx), "0755"),
            NodeFile(paths.health_agent, AGENT.read_text(), "0755"),
            NodeFile(paths.health_conf, health_conf(s, node, paths), "0644"),
        ]
    if paths.systemd_dir:
        d = paths.systemd_dir
        # nginx comes back by itself after a crash; the agent's unit; keepalived starts after the agent;
        # with the firewall, nginx and sshd require its unit (a rule file nft refuses keeps them down).
        units = ["nginx.service.d/10-hacluster.conf"]
        if node.role == "lb":
            units += ["hacluster-health.service", "keepalived.service.d/10-hacluster.conf"]
        if s.firewall.enabled:
            units += FIREWALL_UNITS
        files += [NodeFile(f"{d}/{u}", (UNITS / u).read_text()) for u in units]
    if s.firewall.enabled:
        files.append(NodeFile(paths.nftables_conf, firewall_conf(s, node), "0644"))
    if paths.sudoers:
        files.append(NodeFile(paths.sudoers, sudoers(s, node, paths), "0440"))
    if ssh_keys is not None:
        for user, user_keys in ((s.vm.admin_user, ssh_keys), (s.vm.operator_user, s.ssh_authorized_keys)):
            keys = [grammar.ssh_public_key(k.strip()) for k in user_keys]  # ValueError on anything but one key line
            files.append(NodeFile(f"/home/{user}/.ssh/authorized_keys", "".join(f"{k}\n" for k in keys), "0600", user))
    return files


# What the verifier's VRRP cut adds and removes on a balancer (verifier/actions.py CUT_TABLE).
DRILL_CUT_TABLE = "hacluster_drill_cut"
SUDO_PATH = re.compile(r"(?:/[A-Za-z0-9_-]+)+(?:\.[a-z]+)?")


def sudoers(s: Settings, node: Node, paths: Paths = VM_PATHS) -> str:
    """/etc/sudoers.d/90-hacluster: the automation user's exact commands and the operators' (templates/sudoers.j2)."""
    for p in (paths.keepalived_conf, paths.health_state):
        if not SUDO_PATH.fullmatch(p):
            raise ValueError(f"{p!r}: not a path sudoers can name")
    for u in (s.vm.admin_user, s.vm.operator_user):
        if not grammar.USERNAME.fullmatch(u):
            raise ValueError(f"{u!r}: {grammar.USERNAME.pattern}")
    return render("sudoers.j2", node=node, admin=s.vm.admin_user, operator=s.vm.operator_user,
                  cut_table=DRILL_CUT_TABLE, health_state=paths.health_state,
                  keepalived_conf_re=paths.keepalived_conf.replace(".", "[.]"))


def health_conf(s: Settings, node: Node, paths: Paths = VM_PATHS) -> str:
    """The health agent's input (agent/health.py), dumped from data."""
    peer = next(b for b in s.balancers if b is not node)
    by_name = {w.name: w for w in s.web_nodes}
    ac, v = s.nginx.active_check, s.vrrp
    conf = {
        "node": node.name, "stateFile": paths.health_state, "requireNetns": paths.require_netns,
        "vrrp": {"enabled": v.health_check, "trackFile": paths.track_file, "localIp": "127.0.0.1",
                 "peerIp": peer.ip, "port": 80, "path": "/healthz", "interval": v.check_interval,
                 "timeout": v.check_timeout, "fall": v.check_fall, "rise": v.check_rise,
                 "slowFall": v.check_slow_fall, "accessLog": paths.site_log},
        "upstream": {"enabled": ac.enabled, "interval": ac.interval, "timeout": ac.timeout, "fall": ac.fall,
                     "rise": ac.rise, "port": 80, "path": "/healthz", "nftTable": EJECT_TABLE,
                     "nodes": [{"name": w.name, "ip": w.ip} for w in s.web_nodes],
                     "pools": [[by_name[m].name for m in p.members] for p in s.nginx.pools],
                     "killConnections": True, "reload": list(paths.nginx_reload), "drainFile": paths.drain_file},
    }
    return json.dumps(conf, indent=2, sort_keys=True) + "\n"


def firewall_conf(s: Settings, node: Node) -> str:
    peer = next((b for b in s.balancers if b is not node), None) if node.role == "lb" else None
    return render("nftables.conf.j2", node=node, peer=peer, ssh_from=s.firewall.ssh_from,
                  web_http_from=[b.ip for b in s.balancers] + list(s.firewall.web_http_from))


class _CloudConfigDumper(yaml.SafeDumper):
    """safe_dump, with multi-line strings (the config files) as literal blocks where YAML allows it."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_CloudConfigDumper.add_representer(str, _str)


def host_key_doc(host_key: tuple[str, str]) -> dict:
    """The cloud-config keys that give a node the host key (private, public) and no other: what the image has
    is deleted, none is generated."""
    private, public = grammar.host_private_key(host_key[0]), grammar.host_public_key(host_key[1].strip())
    return {"ssh_deletekeys": True, "ssh_genkeytypes": [],
            "ssh_keys": {"ed25519_private": private, "ed25519_public": public}}


def user_data_doc(s: Settings, node: Node, auth_pass: str | None, ssh_keys: list[str],
                  host_key: tuple[str, str]) -> dict:
    """cloud-init user-data as a data structure: the automation user (`ssh_keys`: the stack's key), the
    operators' user (sshAuthorizedKeys), both without sudo from cloud-init (the node's sudoers file in
    write_files holds their rules), keepalived's script user on balancers, the node's SSH host key
    (private, public: the only host key it has, so the project's SSH clients can pin it), every config
    file of the node, and the commands that start the services."""
    keys = [grammar.ssh_public_key(k.strip()) for k in ssh_keys]  # ValueError on anything but one key line
    operators = [grammar.ssh_public_key(k.strip()) for k in s.ssh_authorized_keys]
    # Neither gets sudo from cloud-init (no rule, not in group sudo): their rules are the node's sudoers file.
    users: list[dict] = [{"name": s.vm.admin_user, "shell": "/bin/bash", "lock_passwd": True, "ssh_authorized_keys": keys},
                         {"name": s.vm.operator_user, "shell": "/bin/bash", "lock_passwd": True,
                          "ssh_authorized_keys": operators}]
    if node.role == "lb":
        users.append({"name": SCRIPT_USER, "system": True, "shell": "/usr/sbin/nologin", "no_create_home": True})
    doc: dict = {"hostname": node.name, "manage_etc_hosts": True, "ssh_pwauth": False, "disable_root": True,
                 "users": users, **host_key_doc(host_key)}
    if s.vm.install_packages:
        doc["package_update"] = True
        doc["packages"] = ["nginx", "curl"] + (["keepalived"] if node.role == "lb" else [])
    doc["write_files"] = [{"path": f.path, "permissions": f.mode, "content": f.content}
                          for f in node_files(s, node, auth_pass)]
    # On the golden image the units are baked in and enabled, and systemd starts the services after
    # cloud-init's 'init' stage wrote the files above: nothing to do (each systemctl costs seconds
    # under TCG). Images built elsewhere: one daemon-reload for the unit files and drop-ins, the enables
    # then only add links (--no-reload); services that already run (packages baked in) are reloaded.
    # With the firewall, nginx starts only once `nft -f` loaded the rules; a file nft refuses stops an nginx
    # that already runs (the image's packages started it) and leaves it down: fail closed.
    runcmd: list = [f"[ -e {GOLDEN_MARKER} ] && exit 0", ["systemctl", "daemon-reload"]]
    nginx = "nginx -t && systemctl --no-reload enable nginx && systemctl reload-or-restart nginx"
    if s.firewall.enabled:
        nginx = ("if nft -f /etc/nftables.conf; then systemctl --no-reload enable nftables; "
                 f"else systemctl stop nginx; exit 1; fi; {nginx}")
    runcmd.append(["sh", "-c", nginx])
    if node.role == "lb":
        runcmd.append(["sh", "-c", "systemctl --no-reload enable hacluster-health && systemctl restart hacluster-health"])
        runcmd.append(["sh", "-c", "systemctl --no-reload enable keepalived && systemctl reload-or-restart keepalived"])
    doc["runcmd"] = runcmd
    return doc


def user_data(s: Settings, node: Node, auth_pass: str | None, ssh_keys: list[str], host_key: tuple[str, str]) -> str:
    """cloud-init user-data. Holds the node's private host key (and the VRRP password on balancers): a secret."""
    body = yaml.dump(user_data_doc(s, node, auth_pass, ssh_keys, host_key), Dumper=_CloudConfigDumper, sort_keys=False,
                     default_flow_style=False, width=4096, allow_unicode=False)
    return f"#cloud-config\n# {node.name} ({node.role}) of stack {s.stack}. Rendered by hacluster.\n{body}"


def network_config(s: Settings, node: Node) -> str:
    """cloud-init network-config v1: the node's static address, matched by MAC; dumped from data (an
    interface named `0` stays a string)."""
    subnet = {"type": "static", "address": f"{node.ip}/{s.network.prefixlen}", "gateway": s.network.gateway}
    if s.network.dns:
        subnet["dns_nameservers"] = list(s.network.dns)
    doc = {"version": 1, "config": [{"type": "physical", "name": s.vrrp.interface, "mac_address": node.mac,
                                     "subnets": [subnet]}]}
    return "# cloud-init network-config v1: static address, matched by MAC.\n" + yaml.safe_dump(doc, sort_keys=False)


def meta_data(s: Settings, node: Node) -> str:
    return f"instance-id: {s.stack}-{node.name}\nlocal-hostname: {node.name}\n"
