"""Typed, validated stack settings.

Pure Python: no Pulumi import. `load()` takes the raw stack config (key -> value, as Pulumi gives it,
without the project prefix), validates it with the pydantic models of model/config.py (the one
declaration of every option) and returns a frozen `Settings`: the resolved view the rest of the code
reads (nodes with their MACs and per-node defaults applied, the domain type chosen for this host, the
routing pools made explicit). Or it raises `SettingsError` listing every problem at once, each naming
the key, the value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from . import grammar as g
from .config import PROBLEMS, PROFILES, RolloutConfig, StackConfig, UpstreamActiveCheck, VerifyConfig, VrrpConfig  # noqa: F401 (PROFILES: part of this module's API)
from .images import virtual_size


class SettingsError(ValueError):
    """Every problem found in the stack config, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack configuration:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Node:
    name: str
    role: str  # "web" or "lb"
    ip: str
    mac: str
    vcpus: int
    memory: int
    weight: int = 1  # web only
    state: str | None = None  # lb only
    priority: int | None = None  # lb only
    router_id: str | None = None  # lb only
    host: str | None = None  # its hypervisor's name; None: the one host of a stack without hypervisors
    disk_gib: int | None = None  # GiB of its disk; None: the image's own virtual size


@dataclass(frozen=True)
class NetworkSettings:
    mode: str
    cidr: str
    prefixlen: int
    gateway: str
    name: str
    bridge: str | None
    dns: tuple[str, ...]


@dataclass(frozen=True)
class Pool:
    name: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class RouteRule:
    match: str
    pool: str


@dataclass(frozen=True)
class NginxSettings:
    server_name: str
    client_max_body_size: str
    max_fails: int
    fail_timeout: int
    connect_timeout: int
    send_timeout: int
    read_timeout: int
    buffering: bool
    buffer_size: str
    buffers: str
    persistence: str
    pools: tuple[Pool, ...]  # always at least the default pool
    rules: tuple[RouteRule, ...]
    default_pool: str
    active_check: UpstreamActiveCheck  # the model itself


@dataclass(frozen=True)
class VmSettings:
    image: str
    kernel: str | None
    initrd: str | None
    libvirt_uri: str
    install_packages: bool
    admin_user: str
    operator_user: str
    autostart: bool  # libvirt starts the domains and the NAT network with libvirtd
    disk_gib: int | None  # vm.diskGiB: the nodes' default disk size; None: the image's own


@dataclass(frozen=True)
class HypervisorSettings:
    name: str | None  # None: the one host of a stack without `hypervisors` (vm.libvirtUri)
    uri: str
    bridge: str | None  # bridge mode: the bridge its VMs attach to; nat mode: None
    pool_path: str
    domain_type: str  # resolved: "kvm" or "qemu"


@dataclass(frozen=True)
class FirewallSettings:
    enabled: bool
    ssh_from: tuple[str, ...]  # CIDRs allowed to SSH in (the deploy side)
    web_http_from: tuple[str, ...]  # extra CIDRs allowed to reach web nodes' HTTP directly (monitoring)


@dataclass(frozen=True)
class Settings:
    stack: str
    vip: str
    network: NetworkSettings
    balancers: tuple[Node, Node]
    web_nodes: tuple[Node, ...]
    vrrp: VrrpConfig  # the models themselves (vrrp, verify, rollout): no copy of their fields
    nginx: NginxSettings
    vm: VmSettings
    verify: VerifyConfig
    firewall: FirewallSettings
    lab_netns: str | None
    ssh_authorized_keys: tuple[str, ...]
    hypervisors: tuple[HypervisorSettings, ...] = ()  # at least one (load() makes them)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    vrrp_auth_pass: str | None = field(default=None, repr=False)  # secret; None: generated per stack

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.balancers + self.web_nodes

    @property
    def master(self) -> Node:
        """The balancer expected to hold the VIP: the higher priority (validation makes it the MASTER)."""
        return max(self.balancers, key=lambda b: b.priority or 0)

    @property
    def backup(self) -> Node:
        return min(self.balancers, key=lambda b: b.priority or 0)

    @property
    def hypervisors_declared(self) -> bool:
        """`hypervisors` is set: every host has a name (else one unnamed host from vm.libvirtUri)."""
        return self.hypervisors[0].name is not None

    def hypervisor(self, node: Node) -> HypervisorSettings:
        return next(h for h in self.hypervisors if h.name == node.host)


# --------------------------------------------------------------------------------------------------
# Host facts (injected so tests can pretend to be another machine)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostFacts:
    kvm_device: bool
    hardware_kvm_module: bool  # kvm_intel or kvm_amd loaded (PVM and nested-less hosts lack both)

    @staticmethod
    def probe() -> HostFacts:
        return HostFacts(
            kvm_device=os.path.exists("/dev/kvm"),
            hardware_kvm_module=any(os.path.exists(f"/sys/module/{m}") for m in ("kvm_intel", "kvm_amd")),
        )


def resolve_domain_type(setting: str, uri: str, host: HostFacts) -> str:
    """`auto` picks hardware KVM where the local host can boot a guest with it, TCG (`qemu`) otherwise.
    For a remote hypervisor we cannot look, and real hypervisors have KVM: `kvm`."""
    if setting != "auto":
        return setting
    if not g.uri_is_local(uri):
        return "kvm"
    return "kvm" if host.kvm_device and host.hardware_kvm_module else "qemu"


def mac_for(ip: str) -> str:
    """Stable MAC in the locally administered QEMU range, derived from the node's address."""
    _, b, c, d = (int(x) for x in ip.split("."))
    return f"52:54:00:{b:02x}:{c:02x}:{d:02x}"




def place(hosts: list[str], balancers: list[str | None], webs: list[str | None]) -> tuple[list, list]:
    """Each node's hypervisor: its `host`, else spread over `hosts` (in name order): balancers[i] on the
    first from the i-th that the other balancer does not use, webNodes[i] on the i-th (round robin)."""
    if not hosts:
        return balancers, webs
    lbs = list(balancers)
    for i, h in enumerate(lbs):
        if h is None:
            ring = hosts[i % len(hosts):] + hosts[:i % len(hosts)]
            lbs[i] = next((x for x in ring if x not in lbs), ring[0])
    return lbs, [h or hosts[i % len(hosts)] for i, h in enumerate(webs)]


# --------------------------------------------------------------------------------------------------
# Error lines: `key = value: what is allowed`
# --------------------------------------------------------------------------------------------------
SECRET_KEYS = ("vrrpAuthPass",)


def _key(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(key: str, value: Any) -> str:
    if key.split(".")[0].split("[")[0] in SECRET_KEYS:
        return "[secret]"
    text = repr(value)
    return text if len(text) <= 120 else text[:100] + f"...' ({len(str(value))} characters)"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class that the (alias) path `loc` points into."""
    cls: Any = StackConfig
    keyed = False  # the part after a dict field is one of its keys (hypervisors.NAME)
    for part in loc:
        if isinstance(part, int) or part == "[key]" or keyed:
            keyed = False
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return None
        field_ = next((f for n, f in cls.model_fields.items() if (f.alias or n) == part), None)
        if field_ is None:
            return None
        cls = inner_model(field_.annotation)
        keyed = is_a(field_.annotation, dict)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def inner_model(tp: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in typing.get_args(tp):
        found = inner_model(arg)
        if found is not None:
            return found
    return None


def is_a(tp: Any, kind: type) -> bool:
    """`tp` is a `kind` (list, dict), maybe inside Annotated or Optional."""
    return typing.get_origin(tp) is kind or any(is_a(a, kind) for a in typing.get_args(tp)
                                                 if typing.get_origin(tp) is typing.Annotated or a is not None)


def _aliases(cls: type[BaseModel]) -> list[str]:
    return sorted(f.alias or n for n, f in cls.model_fields.items())


def _lines(err: ValidationError) -> tuple[list[str], set[str]]:
    """Every problem as one line, and the top-level keys that failed field validation."""
    lines: list[str] = []
    failed: set[str] = set()
    for e in err.errors(include_url=False):
        loc, kind = tuple(e["loc"]), e["type"]
        if kind == PROBLEMS:
            prefix = _key(loc)
            for rel, value, allowed in e["ctx"]["problems"]:
                key = f"{prefix}.{rel}" if prefix else rel
                lines.append(f"{key} = {_show(key, value)}: {allowed}")
            continue
        key = _key(loc)
        if loc:
            failed.add(str(loc[0]))
        value = e.get("input")
        if kind == "extra_forbidden":
            parent = _model_at(loc[:-1])
            if len(loc) == 1:
                msg = "unknown setting (typo?); known settings: " + ", ".join(_aliases(StackConfig))
            else:
                msg = "unknown key (typo?); allowed keys: " + ", ".join(_aliases(parent) if parent else [])
        elif kind == "missing":
            msg, value = "required", None
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            m = _model_at(loc)
            msg = "must be an object" + (" with keys " + ", ".join(_aliases(m)) if m else "")
        elif kind == "list_type":
            msg = "must be a list"
        elif kind in ("too_short", "too_long"):
            msg = e["msg"].replace("List", "list").replace("Dictionary", "object")
        else:
            msg = e["msg"]
        lines.append(f"{key} = {_show(key, value)}: {msg}")
    return lines, failed


# --------------------------------------------------------------------------------------------------
DEFAULTS: dict[str, Any] = {
    (f.alias or n): (f.get_default(call_default_factory=True)) for n, f in StackConfig.model_fields.items()}
DEFAULTS = {k: ([m.model_dump(by_alias=True, exclude_none=True) for m in v] if isinstance(v, list) and v
                and isinstance(v[0], BaseModel) else v.model_dump(by_alias=True) if isinstance(v, BaseModel) else v)
            for k, v in DEFAULTS.items()}
"""The reference design (192.168.81.0/24, lb01 MASTER .210, lb02 BACKUP .220, web .230/.240), from the models."""


def _exists(path: str) -> bool:
    return os.path.isfile(path)


def load(raw: Mapping[str, Any], stack: str, project_root: str | Path = ".",
         host: HostFacts | None = None, path_exists: Callable[[str], bool] = _exists) -> Settings:
    """Validate the raw stack config (keys without the `hacluster:` prefix).

    `path_exists` answers whether a local image/kernel/initrd file exists (tests inject one). Files under
    the project's own `.images/` are the output of `make image`, which every target that deploys runs
    first: they may be missing on a fresh clone, so only paths outside it must exist now."""
    problems: list[str] = []
    if not isinstance(stack, str) or not g.STACK.fullmatch(stack):
        problems.append(f"(stack name) = {stack!r}: letters, digits, '_', '.' or '-', at most 100")
    # A top-level null means "unset" (the model's default), except labNetns, where null is refused on lab
    # stacks like "" (it would turn the sandbox off).
    data = {k: v for k, v in raw.items() if v is not None or k == "labNetns"}
    try:
        cfg = StackConfig.model_validate(data)
    except ValidationError as e:
        lines, failed = _lines(e)
        problems += lines
        # The cross-field rules did not run (a field failed): run those that read only valid keys.
        rest = {k: v for k, v in data.items() if k not in failed}
        try:
            StackConfig.model_validate(rest, context={"skip": failed})
        except ValidationError as e2:
            problems += [ln for ln in _lines(e2)[0] if ln not in problems]
        raise SettingsError(problems) from None
    root = Path(project_root).resolve()
    s = _settings(cfg, stack, root, host or HostFacts.probe())
    images = root / ".images"
    for key, path in (("vm.image", s.vm.image), ("vm.kernel", s.vm.kernel), ("vm.initrd", s.vm.initrd)):
        if path and not g.URL.fullmatch(path) and not Path(path).is_relative_to(images) and not path_exists(path):
            problems.append(f"{key} = {path!r}: no such file on the deploy host (the image is uploaded from there)")
    problems += _disk_problems(s)
    if problems:
        raise SettingsError(problems)
    return s


GIB = 1 << 30


def disk_key(s: Settings, node: Node) -> str:
    """The setting a node's disk size comes from: its own diskGiB, or vm.diskGiB."""
    if node.disk_gib == s.vm.disk_gib:
        return "vm.diskGiB"
    tier, i = ("balancers", s.balancers.index(node)) if node.role == "lb" else ("webNodes", s.web_nodes.index(node))
    return f"{tier}[{i}].diskGiB"


def _disk_problems(s: Settings) -> list[str]:
    """A disk smaller than the image would cut its filesystem: refused when the image's virtual size is known
    (model/images.py; otherwise the libvirt plugin refuses it when it makes the volume)."""
    size = virtual_size(s.vm.image)
    if size is None:
        return []
    need = -(-size // GIB)
    found = {}
    for n in s.nodes:
        if n.disk_gib is not None and n.disk_gib * GIB < size:
            found.setdefault(disk_key(s, n), n.disk_gib)
    return [f"{key} = {gib}: smaller than the image's virtual size ({need} GiB, vm.image's manifest.json): set "
            f"{need} or more, or unset it (the image's own size)" for key, gib in found.items()]


def _settings(c: StackConfig, stack: str, root: Path, host: HostFacts) -> Settings:
    """The resolved view of a valid config."""
    net = ipaddress.IPv4Network(c.network.cidr)
    gw = c.network.gateway or str(next(net.hosts()))
    network = NetworkSettings(c.network.mode, str(net), net.prefixlen, gw, c.network.name or f"hacluster-{stack}",
                              c.network.bridge, tuple(c.network.dns))
    vm = c.vm
    lb_hosts, web_hosts = place(sorted(c.hypervisors), [b.host for b in c.balancers], [w.host for w in c.web_nodes])
    balancers = tuple(Node(name=b.name, role="lb", ip=b.ip, mac=mac_for(b.ip), vcpus=b.vcpus or vm.vcpus,
                           memory=b.memory or vm.memory, state=b.state, priority=b.priority,
                           router_id=b.router_id or b.name, host=h, disk_gib=b.disk_gib or vm.disk_gib)
                      for b, h in zip(c.balancers, lb_hosts, strict=True))
    up = c.nginx.upstream
    web_nodes = tuple(Node(name=w.name, role="web", ip=w.ip, mac=mac_for(w.ip), vcpus=w.vcpus or vm.vcpus,
                           memory=w.memory or vm.memory, weight=w.weight or up.weight, host=h,
                           disk_gib=w.disk_gib or vm.disk_gib)
                      for w, h in zip(c.web_nodes, web_hosts, strict=True))
    bridge = c.network.bridge if c.network.mode == "bridge" else None
    hypervisors = tuple(HypervisorSettings(
        name=n, uri=h.uri, bridge=(h.bridge or bridge) if bridge else None, pool_path=h.pool_path or vm.pool_path,
        domain_type=resolve_domain_type(h.domain_type or vm.domain_type, h.uri, host))
        for n, h in sorted(c.hypervisors.items())) or (HypervisorSettings(
            None, vm.libvirt_uri, bridge, vm.pool_path, resolve_domain_type(vm.domain_type, vm.libvirt_uri, host)),)
    ng, px, r = c.nginx, c.nginx.proxy, c.nginx.routing
    if r is None:
        pools, rules, default_pool = (Pool("web", tuple(w.name for w in web_nodes)),), (), "web"
    else:
        pools = tuple(Pool(p, tuple(m)) for p, m in r.pools.items())
        rules, default_pool = tuple(RouteRule(x.match, x.pool) for x in r.rules), r.default
    nginx = NginxSettings(
        server_name=ng.server_name, client_max_body_size=ng.client_max_body_size, max_fails=up.max_fails,
        fail_timeout=up.fail_timeout, connect_timeout=px.connect_timeout, send_timeout=px.send_timeout,
        read_timeout=px.read_timeout, buffering=px.buffering, buffer_size=px.buffer_size, buffers=px.buffers,
        persistence=ng.persistence, pools=pools, rules=rules, default_pool=default_pool,
        active_check=up.active_check)

    def path(p: str | None) -> str | None:
        if not p:
            return None
        return p if g.URL.fullmatch(p) or os.path.isabs(p) else str((root / p).resolve())

    vms = VmSettings(image=path(vm.image) or "", kernel=path(vm.kernel), initrd=path(vm.initrd),
                     libvirt_uri=vm.libvirt_uri,
                     install_packages=vm.install_packages, admin_user=vm.admin_user,
                     operator_user=vm.operator_user,
                     autostart=vm.autostart if vm.autostart is not None else c.lab_netns == "",
                     disk_gib=vm.disk_gib)
    fw = c.firewall
    ssh_from = fw.ssh_from if fw.ssh_from is not None else ([f"{gw}/32"] if network.mode == "nat" else [str(net)])
    firewall = FirewallSettings(enabled=fw.enabled,
                                ssh_from=tuple(str(ipaddress.IPv4Network(x, strict=False)) for x in ssh_from),
                                web_http_from=tuple(str(ipaddress.IPv4Network(x, strict=False)) for x in fw.web_http_from))
    return Settings(stack=stack, vip=c.vip, network=network, balancers=(balancers[0], balancers[1]),
                    web_nodes=web_nodes, vrrp=c.vrrp, nginx=nginx, vm=vms, verify=c.verify, firewall=firewall,
                    lab_netns=c.lab_netns or None, ssh_authorized_keys=tuple(c.ssh_authorized_keys),
                    hypervisors=hypervisors, rollout=c.rollout,
                    vrrp_auth_pass=c.vrrp_auth_pass)
