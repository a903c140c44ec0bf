"""The one renderer: Jinja2 over templates/ with StrictUndefined.

Serves three consumers: the VMs (cloud-init), the integration tier (real nginx + keepalived in
network namespaces, with `Paths` pointing into a scratch prefix) and the unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import jinja2

from .settings import Node, Settings

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
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
    check_script: str = "/etc/keepalived/check_nginx.sh"
    notify_script: str = "/etc/keepalived/notify.sh"
    nftables_conf: str = "/etc/nftables.conf"
    state_file: str | None = None
    health_url: str = "http://127.0.0.1/healthz"

    def under(self, prefix: str) -> Paths:
        """Every file below `prefix` (for nginx -p / keepalived in a namespace)."""
        return replace(self, pid=f"{prefix}/nginx.pid", log_dir=f"{prefix}/logs", temp_dir=f"{prefix}/tmp",
                       webroot=f"{prefix}/www", nginx_conf=f"{prefix}/nginx.conf",
                       keepalived_conf=f"{prefix}/keepalived.conf", check_script=f"{prefix}/check_nginx.sh",
                       notify_script=f"{prefix}/notify.sh",
                       nftables_conf=f"{prefix}/nftables.conf", state_file=f"{prefix}/vrrp-state.log")


VM_PATHS = Paths()


@dataclass(frozen=True)
class NodeFile:
    path: str
    content: str
    mode: str = "0644"


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


def node_files(s: Settings, node: Node, auth_pass: str | None, paths: Paths = VM_PATHS) -> list[NodeFile]:
    """Every config file a node needs, as (path, content, mode)."""
    ctx = _ctx(s, node, paths)
    files = [NodeFile(paths.nginx_conf, nginx_conf(s, node, paths))]
    if node.role == "web":
        files.append(NodeFile(f"{paths.webroot}/index.html", render("index.html.j2", **ctx)))
    else:
        files += [
            NodeFile(paths.keepalived_conf, keepalived_conf(s, node, auth_pass, paths), "0600"),
            NodeFile(paths.check_script, render("check_nginx.sh.j2", health_url=paths.health_url), "0755"),
            NodeFile(paths.notify_script, render("notify.sh.j2", **ctx), "0755"),
        ]
    if s.firewall.enabled:
        files.append(NodeFile(paths.nftables_conf, firewall_conf(s, node), "0644"))
    return files


def firewall_conf(s: Settings, node: Node) -> str:
    peer = next((b for b in s.balancers if b is not node), None) if node.role == "lb" else None
    return render("nftables.conf.j2", node=node, peer=peer, ssh_from=s.firewall.ssh_from,
                  web_http_from=[b.ip for b in s.balancers] + list(s.firewall.web_http_from))


def user_data(s: Settings, node: Node, auth_pass: str | None, ssh_keys: list[str]) -> str:
    """cloud-init user-data. Holds the VRRP password on balancers: treat it as a secret."""
    return render("user-data.yaml.j2", files=node_files(s, node, auth_pass), ssh_keys=ssh_keys,
                  **_ctx(s, node, VM_PATHS))


def network_config(s: Settings, node: Node) -> str:
    return render("network-config.yaml.j2", **_ctx(s, node, VM_PATHS))


def meta_data(s: Settings, node: Node) -> str:
    return f"instance-id: {s.stack}-{node.name}\nlocal-hostname: {node.name}\n"
