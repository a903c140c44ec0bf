"""Typed, validated stack settings.

Pure Python: no Pulumi import. `load()` takes the raw stack config (key -> value, as Pulumi gives it,
without the project prefix) and returns a frozen `Settings`, or raises `SettingsError` listing every
problem at once, each naming the key, the value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------------
# Defaults: the reference design (192.168.81.0/24, lb01 MASTER .210, lb02 BACKUP .220, web .230/.240).
# Pulumi.yaml repeats the scalar defaults for `pulumi config` users; a unit test keeps both in sync.
# --------------------------------------------------------------------------------------------------
DEFAULTS: dict[str, Any] = {
    "vip": "192.168.81.100",
    "network": {"mode": "nat", "cidr": "192.168.81.0/24", "gateway": None, "name": None,
                "bridge": None, "dns": []},
    "balancers": [
        {"name": "lb01", "ip": "192.168.81.210", "state": "MASTER", "priority": 150, "routerId": "lb01"},
        {"name": "lb02", "ip": "192.168.81.220", "state": "BACKUP", "priority": 100, "routerId": "lb02"},
    ],
    "webNodes": [
        {"name": "web01", "ip": "192.168.81.230"},
        {"name": "web02", "ip": "192.168.81.240"},
    ],
    "vrrp": {"profile": "reference", "virtualRouterId": 51, "advertInt": 1, "version": 2, "authType": "PASS",
             "transport": "unicast", "interface": "eth0", "nopreempt": False, "preemptDelay": 0,
             "garpMasterRefresh": 60, "healthCheck": True, "checkFall": 2, "checkRise": 2,
             "checkInterval": 0.5, "checkTimeout": 2, "checkSlowFall": 10},
    "nginx": {"serverName": "www.example.local", "clientMaxBodySize": "200m",
              "upstream": {"weight": 1, "maxFails": 3, "failTimeout": 60,
                           "activeCheck": {"enabled": True, "interval": 0.5, "timeout": 1, "fall": 2, "rise": 2}},
              "proxy": {"connectTimeout": 30, "sendTimeout": 60, "readTimeout": 60,
                        "buffering": True, "bufferSize": "256k", "buffers": "4 256k"},
              "persistence": "none", "routing": None},
    "vm": {"image": ".images/debian12/disk.qcow2", "kernel": ".images/debian12/vmlinuz",
           "initrd": ".images/debian12/initrd.img", "vcpus": 1, "memory": 512,
           "domainType": "auto", "libvirtUri": "qemu:///system",
           "poolPath": "/var/lib/libvirt/hacluster", "installPackages": False,
           "adminUser": "ops"},
    "verify": {"enabled": True, "failoverDrill": True, "timeout": 600},
    "firewall": {"enabled": True, "sshFrom": None, "webHttpFrom": []},
    "labNetns": "halab",
    "sshAuthorizedKeys": [],
    "vrrpAuthPass": None,
}

# Failover profiles: defaults that explicit vrrp.* keys still override.
#  reference: the tutorial's VRRPv2, 1 s adverts, PASS auth (master-down ~3.6 s on a freeze).
#  fast: VRRPv3 (RFC 5798: no authentication), 100 ms adverts (master-down ~0.36 s), a one-strike
#        nginx check; the cost is 10 adverts/s per pair.
PROFILES: dict[str, dict[str, Any]] = {
    "reference": {},
    "fast": {"version": 3, "advertInt": 0.1, "authType": "none", "checkFall": 1, "checkInterval": 0.2},
}

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
SIZE_RE = re.compile(r"^[0-9]+[kKmMgG]?$")
DOMAIN_TYPES = ("auto", "kvm", "qemu")
NETWORK_MODES = ("nat", "bridge")
STATES = ("MASTER", "BACKUP")
TRANSPORTS = ("unicast", "multicast")
PERSISTENCE_RE = re.compile(r"^(none|ip_hash|cookie:[A-Za-z0-9_]{1,64})$")


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
class VrrpSettings:
    virtual_router_id: int
    advert_int: float
    version: int
    auth_type: str | None  # None with VRRPv3 (no authentication there)
    transport: str
    interface: str
    nopreempt: bool
    preempt_delay: int
    garp_master_refresh: int
    health_check: bool
    check_fall: int
    check_rise: int
    profile: str
    check_interval: float = 0.5  # the health agent's round (s)
    check_timeout: float = 2.0  # a local probe slower than this is "slow"
    check_slow_fall: int = 10  # slow rounds in a row before slowness counts as failure


@dataclass(frozen=True)
class ActiveCheck:
    """The balancers' active checks of the web nodes (the health agent ejects a failing node)."""

    enabled: bool = True
    interval: float = 0.5
    timeout: float = 1.0
    fall: int = 2
    rise: int = 2


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
    active_check: ActiveCheck = ActiveCheck()


@dataclass(frozen=True)
class VmSettings:
    image: str
    kernel: str | None
    initrd: str | None
    domain_type: str  # resolved: "kvm" or "qemu"
    domain_type_setting: str
    libvirt_uri: str
    pool_path: str
    install_packages: bool
    admin_user: str


@dataclass(frozen=True)
class FirewallSettings:
    enabled: bool
    ssh_from: tuple[str, ...]  # CIDRs allowed to SSH in (the deploy side)
    web_http_from: tuple[str, ...]  # extra CIDRs allowed to reach web nodes' HTTP directly (monitoring)


@dataclass(frozen=True)
class VerifySettings:
    enabled: bool
    failover_drill: bool
    timeout: int


@dataclass(frozen=True)
class Settings:
    stack: str
    vip: str
    network: NetworkSettings
    balancers: tuple[Node, Node]
    web_nodes: tuple[Node, ...]
    vrrp: VrrpSettings
    nginx: NginxSettings
    vm: VmSettings
    verify: VerifySettings
    firewall: FirewallSettings
    lab_netns: str | None
    ssh_authorized_keys: tuple[str, ...]
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
    local = uri.split("://", 1)[-1].startswith("/")
    if not local:
        return "kvm"
    return "kvm" if host.kvm_device and host.hardware_kvm_module else "qemu"


# --------------------------------------------------------------------------------------------------
# Parsing helpers: each records a problem instead of raising, so all problems come out together.
# --------------------------------------------------------------------------------------------------
class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, key: str, value: Any, allowed: str) -> None:
        self.problems.append(f"{key} = {value!r}: {allowed}")

    def keys(self, key: str, value: Any, known: Mapping[str, Any]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.bad(key, value, "must be an object with keys " + ", ".join(sorted(known)))
            return {}
        for k in value:
            if k not in known:
                self.bad(f"{key}.{k}", value[k], "unknown key (typo?); allowed keys: " + ", ".join(sorted(known)))
        return dict(value)

    def int_(self, key: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok and isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
            value, ok = int(value), True
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
            self.bad(key, value, f"must be an integer {rng}" if lo is not None else "must be an integer")
            return lo if lo is not None else 0
        return value

    def num(self, key: str, value: Any, lo: float = 0.0, hi: float | None = None) -> float:
        allowed = f"must be a number of seconds {lo:g}..{hi:g}" if hi is not None else "must be a number of seconds > 0"
        try:
            f = float(value)
            if isinstance(value, bool) or f != f or f in (float("inf"), float("-inf")):
                raise ValueError
        except (TypeError, ValueError):
            self.bad(key, value, allowed)
            return max(lo, 1.0) if hi is None else lo
        if f <= 0 or f < lo or (hi is not None and f > hi):
            self.bad(key, value, allowed)
            return max(lo, 1.0) if hi is None else lo
        return f

    def bool_(self, key: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.bad(key, value, "must be true or false")
        return False

    def choice(self, key: str, value: Any, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            self.bad(key, value, "must be one of " + ", ".join(allowed))
            return allowed[0]
        return value

    def name(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value):
            self.bad(key, value, "must be a lowercase hostname: a letter, then letters, digits or '-', at most 31")
            return "invalid"
        return value

    def str_(self, key: str, value: Any, pattern: re.Pattern | None = None, allowed: str = "") -> str:
        if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
            self.bad(key, value, allowed or "must be a non-empty string")
            return ""
        return value

    def list_(self, key: str, value: Any) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.bad(key, value, "must be a list")
            return []
        return value

    def ip(self, key: str, value: Any) -> ipaddress.IPv4Address | None:
        try:
            return ipaddress.IPv4Address(str(value).strip()) if isinstance(value, str) else _raise()
        except (ValueError, TypeError):
            self.bad(key, value, "must be an IPv4 address like 192.168.81.100")
            return None


def _raise():
    raise ValueError


def _merge(default: Any, value: Any) -> Any:
    """Overlay a user object on the default object (one level per object, recursively)."""
    if isinstance(default, dict) and isinstance(value, Mapping):
        out = dict(default)
        for k, v in value.items():
            out[k] = _merge(default.get(k), v) if k in default else v
        return out
    return default if value is None else value


def mac_for(ip: str) -> str:
    """Stable MAC in the locally administered QEMU range, derived from the node's address."""
    _, b, c, d = (int(x) for x in ip.split("."))
    return f"52:54:00:{b:02x}:{c:02x}:{d:02x}"


# --------------------------------------------------------------------------------------------------
def load(raw: Mapping[str, Any], stack: str, project_root: str | Path = ".",
         host: HostFacts | None = None) -> Settings:
    """Validate the raw stack config (keys without the `hacluster:` prefix)."""
    c = _Checker()
    for k in raw:
        if k not in DEFAULTS:
            c.bad(k, raw[k], "unknown setting (typo?); known settings: " + ", ".join(sorted(DEFAULTS)))
    cfg = {k: _merge(DEFAULTS[k], raw.get(k)) for k in DEFAULTS}
    root = Path(project_root)

    # ---- network ------------------------------------------------------------------------------
    n = c.keys("network", cfg["network"], DEFAULTS["network"])
    mode = c.choice("network.mode", n.get("mode"), NETWORK_MODES)
    try:
        net = ipaddress.IPv4Network(str(n.get("cidr")), strict=True)
    except ValueError as e:
        c.bad("network.cidr", n.get("cidr"), f"must be an IPv4 network like 192.168.81.0/24 ({e})")
        net = ipaddress.IPv4Network("192.168.81.0/24")
    if net.prefixlen > 29:
        c.bad("network.cidr", n.get("cidr"), "needs room for 4 nodes, a VIP and a gateway: /29 or larger")
    gw = c.ip("network.gateway", n["gateway"]) if n.get("gateway") else next(net.hosts())
    if gw is not None and gw not in net:
        c.bad("network.gateway", str(gw), f"must be inside network.cidr {net}")
    elif mode == "nat" and gw is not None and gw != next(net.hosts()):
        c.bad("network.gateway", str(gw), f"in nat mode libvirt's bridge is the gateway: {next(net.hosts())} (or unset)")
    bridge = n.get("bridge")
    if mode == "bridge" and not bridge:
        c.bad("network.bridge", bridge, "required when network.mode is bridge: the name of an existing host bridge")
    dns = tuple(str(c.ip(f"network.dns[{i}]", v)) for i, v in enumerate(c.list_("network.dns", n.get("dns"))))
    netname = n.get("name") or f"hacluster-{stack}"
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", netname):
        c.bad("network.name", netname, "letters, digits, '.', '_' or '-', at most 64")
    network = NetworkSettings(mode, str(net), net.prefixlen, str(gw), netname, bridge, dns)

    taken: dict[str, str] = {}  # ip -> key that uses it

    def in_subnet(key: str, value: Any) -> str:
        ip = c.ip(key, value)
        if ip is None:
            return str(value)
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            c.bad(key, str(ip), f"must be a host address inside network.cidr {net}")
        elif gw is not None and ip == gw:
            c.bad(key, str(ip), f"must differ from the gateway {gw}")
        elif str(ip) in taken:
            c.bad(key, str(ip), f"duplicate address: already used by {taken[str(ip)]}")
        taken[str(ip)] = key
        return str(ip)

    # ---- vm defaults ---------------------------------------------------------------------------
    v = c.keys("vm", cfg["vm"], DEFAULTS["vm"])
    vcpus = c.int_("vm.vcpus", v.get("vcpus"), 1, 64)
    memory = c.int_("vm.memory", v.get("memory"), 256, 262144)

    named: dict[str, str] = {}  # node name -> key that uses it

    def node_common(key: str, d: Mapping[str, Any], known: Mapping[str, Any]) -> dict:
        d = c.keys(key, d, known)
        name = c.name(f"{key}.name", d.get("name"))
        if name == d.get("name"):  # a valid name
            if name in named:
                c.bad(f"{key}.name", name, f"duplicate node name: already used by {named[name]}")
            named.setdefault(name, f"{key}.name")
        return {"name": name,
                "ip": in_subnet(f"{key}.ip", d.get("ip")),
                "vcpus": c.int_(f"{key}.vcpus", d.get("vcpus", vcpus), 1, 64),
                "memory": c.int_(f"{key}.memory", d.get("memory", memory), 256, 262144)}

    # ---- balancers -----------------------------------------------------------------------------
    lb_known = {"name": 0, "ip": 0, "state": 0, "priority": 0, "routerId": 0, "vcpus": 0, "memory": 0}
    lbs_raw = c.list_("balancers", cfg["balancers"])
    if len(lbs_raw) != 2:
        c.bad("balancers", f"{len(lbs_raw)} entries", "exactly two balancers (one MASTER, one BACKUP)")
    vr = c.keys("vrrp", cfg["vrrp"], DEFAULTS["vrrp"])
    profile = c.choice("vrrp.profile", vr.get("profile"), tuple(PROFILES))
    explicit = raw.get("vrrp") if isinstance(raw.get("vrrp"), Mapping) else {}
    vr = {**vr, **PROFILES[profile], **explicit}  # defaults < profile < what the stack sets
    nopreempt = c.bool_("vrrp.nopreempt", vr.get("nopreempt"))
    balancers = []
    for i, b in enumerate(lbs_raw[:2]):
        key = f"balancers[{i}]"
        common = node_common(key, b, lb_known)
        b = b if isinstance(b, Mapping) else {}
        state = c.choice(f"{key}.state", b.get("state"), STATES)
        prio = c.int_(f"{key}.priority", b.get("priority"), 1, 254)
        rid = c.str_(f"{key}.routerId", b.get("routerId", common["name"]),
                     re.compile(r"^[A-Za-z0-9_.-]{1,64}$"), "letters, digits, '.', '_' or '-'")
        balancers.append(Node(role="lb", mac=mac_for(common["ip"]) if "." in common["ip"] else "",
                              state=state, priority=prio, router_id=rid, **common))
    if len(balancers) == 2 and not any(p.startswith("balancers[") for p in c.problems):
        a, b = balancers
        if a.priority == b.priority:
            c.bad("balancers[1].priority", b.priority, f"must differ from balancers[0].priority ({a.priority})")
        if not nopreempt:
            if {a.state, b.state} != {"MASTER", "BACKUP"}:
                c.bad("balancers[1].state", b.state, "one balancer must be MASTER and the other BACKUP")
            elif (a.priority or 0) != (b.priority or 0):
                m = a if a.state == "MASTER" else b
                o = b if m is a else a
                if (m.priority or 0) < (o.priority or 0):
                    c.bad(f"balancers[{balancers.index(m)}].priority", m.priority,
                          f"the MASTER needs the higher priority (BACKUP {o.name} has {o.priority})")
        elif a.state != "BACKUP" or b.state != "BACKUP":
            c.bad("balancers[0].state", a.state,
                  "with vrrp.nopreempt both balancers must be BACKUP (keepalived ignores nopreempt on MASTER)")
        if a.router_id == b.router_id:
            c.bad("balancers[1].routerId", b.router_id, "duplicate routerId: must differ from balancers[0]")

    # ---- web nodes -----------------------------------------------------------------------------
    web_known = {"name": 0, "ip": 0, "weight": 0, "vcpus": 0, "memory": 0}
    webs_raw = c.list_("webNodes", cfg["webNodes"])
    if not webs_raw:
        c.bad("webNodes", webs_raw, "at least one web node is required")
    up = c.keys("nginx.upstream", _merge(DEFAULTS["nginx"]["upstream"], (cfg["nginx"] or {}).get("upstream")),
                DEFAULTS["nginx"]["upstream"])
    default_weight = c.int_("nginx.upstream.weight", up.get("weight"), 1, 1000)
    ac = c.keys("nginx.upstream.activeCheck", _merge(DEFAULTS["nginx"]["upstream"]["activeCheck"], up.get("activeCheck")),
                DEFAULTS["nginx"]["upstream"]["activeCheck"])
    active_check = ActiveCheck(
        enabled=c.bool_("nginx.upstream.activeCheck.enabled", ac.get("enabled")),
        interval=c.num("nginx.upstream.activeCheck.interval", ac.get("interval"), 0.1, 10),
        timeout=c.num("nginx.upstream.activeCheck.timeout", ac.get("timeout"), 0.1, 30),
        fall=c.int_("nginx.upstream.activeCheck.fall", ac.get("fall"), 1, 10),
        rise=c.int_("nginx.upstream.activeCheck.rise", ac.get("rise"), 1, 10))
    web_nodes = []
    for i, w in enumerate(webs_raw):
        key = f"webNodes[{i}]"
        common = node_common(key, w, web_known)
        w = w if isinstance(w, Mapping) else {}
        weight = c.int_(f"{key}.weight", w.get("weight", default_weight), 1, 1000)
        web_nodes.append(Node(role="web", mac=mac_for(common["ip"]) if "." in common["ip"] else "",
                              weight=weight, **common))
    vip = in_subnet("vip", cfg["vip"])  # after the nodes: a clash names the VIP

    # ---- vrrp ----------------------------------------------------------------------------------
    version = c.int_("vrrp.version", vr.get("version"), 2, 3)
    advert = c.num("vrrp.advertInt", vr.get("advertInt"))
    if version == 2 and advert != int(advert):
        c.bad("vrrp.advertInt", vr.get("advertInt"), "VRRPv2 needs whole seconds (1..255); use vrrp.version 3 for sub-second")
    if version == 3 and not (0.01 <= advert <= 40.95):
        c.bad("vrrp.advertInt", vr.get("advertInt"), "VRRPv3 allows 0.01..40.95 seconds")
    if version == 2 and not (1 <= advert <= 255):
        c.bad("vrrp.advertInt", vr.get("advertInt"), "VRRPv2 allows 1..255 seconds")
    auth_type = vr.get("authType")
    if version == 3:
        if auth_type not in (None, "", "none"):
            c.bad("vrrp.authType", auth_type, "VRRPv3 (RFC 5798) has no authentication: set it to none, or use vrrp.version 2")
        auth_type = None
    else:
        auth_type = c.choice("vrrp.authType", auth_type, ("PASS",))
    auth_pass = cfg["vrrpAuthPass"]
    if auth_pass is not None:
        if version == 3:
            c.bad("vrrpAuthPass", "[secret]", "VRRPv3 has no authentication: remove vrrpAuthPass or use vrrp.version 2")
        elif not isinstance(auth_pass, str) or not (1 <= len(auth_pass) <= 8):
            c.bad("vrrpAuthPass", "[secret]",
                  f"must be 1..8 characters (VRRP PASS silently truncates longer ones); got {len(str(auth_pass))}")
        elif not re.fullmatch(r"[\x21-\x7e]+", auth_pass) or '"' in auth_pass:
            c.bad("vrrpAuthPass", "[secret]", "printable ASCII without spaces or quotes")
    vrrp = VrrpSettings(
        virtual_router_id=c.int_("vrrp.virtualRouterId", vr.get("virtualRouterId"), 1, 255),
        advert_int=advert if version == 3 else int(advert),
        version=version, auth_type=auth_type,
        transport=c.choice("vrrp.transport", vr.get("transport"), TRANSPORTS),
        interface=c.str_("vrrp.interface", vr.get("interface"), re.compile(r"^[a-zA-Z0-9_.-]{1,15}$"),
                         "an interface name like eth0"),
        nopreempt=nopreempt,
        preempt_delay=c.int_("vrrp.preemptDelay", vr.get("preemptDelay"), 0, 1000),
        garp_master_refresh=c.int_("vrrp.garpMasterRefresh", vr.get("garpMasterRefresh"), 0, 86400),
        health_check=c.bool_("vrrp.healthCheck", vr.get("healthCheck")),
        check_fall=c.int_("vrrp.checkFall", vr.get("checkFall"), 1, 10),
        check_rise=c.int_("vrrp.checkRise", vr.get("checkRise"), 1, 10),
        profile=profile,
        check_interval=c.num("vrrp.checkInterval", vr.get("checkInterval"), 0.1, 10),
        check_timeout=c.num("vrrp.checkTimeout", vr.get("checkTimeout"), 0.1, 30),
        check_slow_fall=c.int_("vrrp.checkSlowFall", vr.get("checkSlowFall"), 1, 100),
    )

    # ---- nginx ---------------------------------------------------------------------------------
    ng = c.keys("nginx", cfg["nginx"], DEFAULTS["nginx"])
    px = c.keys("nginx.proxy", ng.get("proxy"), DEFAULTS["nginx"]["proxy"])
    persistence = c.str_("nginx.persistence", ng.get("persistence"), PERSISTENCE_RE,
                         "must be none, ip_hash or cookie:<name>")
    pools, rules, default_pool = _routing(c, ng.get("routing"), [w.name for w in web_nodes])
    nginx = NginxSettings(
        server_name=c.str_("nginx.serverName", ng.get("serverName"), re.compile(r"^[A-Za-z0-9*_.-]+( [A-Za-z0-9*_.-]+)*$"),
                           "host names separated by spaces"),
        client_max_body_size=c.str_("nginx.clientMaxBodySize", ng.get("clientMaxBodySize"), SIZE_RE,
                                    "a size like 200m, 1g or 512k"),
        max_fails=c.int_("nginx.upstream.maxFails", up.get("maxFails"), 0, 1000),
        fail_timeout=c.int_("nginx.upstream.failTimeout", up.get("failTimeout"), 1, 86400),
        connect_timeout=c.int_("nginx.proxy.connectTimeout", px.get("connectTimeout"), 1, 75),
        send_timeout=c.int_("nginx.proxy.sendTimeout", px.get("sendTimeout"), 1, 3600),
        read_timeout=c.int_("nginx.proxy.readTimeout", px.get("readTimeout"), 1, 3600),
        buffering=c.bool_("nginx.proxy.buffering", px.get("buffering")),
        buffer_size=c.str_("nginx.proxy.bufferSize", px.get("bufferSize"), SIZE_RE, "a size like 256k"),
        buffers=c.str_("nginx.proxy.buffers", px.get("buffers"), re.compile(r"^[0-9]+ [0-9]+[kKmM]?$"),
                       "'<count> <size>' like '4 256k'"),
        persistence=persistence, pools=pools, rules=rules, default_pool=default_pool,
        active_check=active_check,
    )

    # ---- vm ------------------------------------------------------------------------------------
    def path_or_url(key: str, value: Any, optional: bool) -> str | None:
        if value in (None, "") and optional:
            return None
        s = c.str_(key, value, allowed="a file path (relative to the project) or an http(s) URL")
        if s and not re.match(r"^https?://", s) and not os.path.isabs(s):
            s = str((root / s).resolve())
        return s or None

    dt_setting = c.choice("vm.domainType", v.get("domainType"), DOMAIN_TYPES)
    uri = c.str_("vm.libvirtUri", v.get("libvirtUri"), re.compile(r"^[a-z+]+://"),
                 "a libvirt URI like qemu:///system or qemu+ssh://user@host/system")
    kernel = path_or_url("vm.kernel", v.get("kernel"), True)
    initrd = path_or_url("vm.initrd", v.get("initrd"), True)
    if bool(kernel) != bool(initrd):
        c.bad("vm.initrd" if kernel else "vm.kernel", None,
              "vm.kernel and vm.initrd go together: set both (direct kernel boot) or neither")
    vm = VmSettings(
        image=path_or_url("vm.image", v.get("image"), False) or "",
        kernel=kernel, initrd=initrd,
        domain_type=resolve_domain_type(dt_setting, uri or "", host or HostFacts.probe()),
        domain_type_setting=dt_setting, libvirt_uri=uri,
        pool_path=c.str_("vm.poolPath", v.get("poolPath"), re.compile(r"^/"), "an absolute directory path on the hypervisor"),
        install_packages=c.bool_("vm.installPackages", v.get("installPackages")),
        admin_user=c.name("vm.adminUser", v.get("adminUser")),
    )

    ve = c.keys("verify", cfg["verify"], DEFAULTS["verify"])
    verify = VerifySettings(enabled=c.bool_("verify.enabled", ve.get("enabled")),
                            failover_drill=c.bool_("verify.failoverDrill", ve.get("failoverDrill")),
                            timeout=c.int_("verify.timeout", ve.get("timeout"), 30, 7200))

    fw = c.keys("firewall", cfg["firewall"], DEFAULTS["firewall"])
    ssh_from = fw.get("sshFrom")
    if ssh_from is None:  # the deploy side: the lab host's bridge address (nat), else the whole subnet
        ssh_from = [f"{gw}/32"] if mode == "nat" else [str(net)]
    def cidrs(key: str, values: Any) -> tuple[str, ...]:
        out = []
        for i, v in enumerate(c.list_(key, values)):
            try:
                out.append(str(ipaddress.IPv4Network(str(v), strict=False)))
            except ValueError:
                c.bad(f"{key}[{i}]", v, "an IPv4 address or CIDR like 10.0.0.0/24")
        return tuple(out)

    nets = cidrs("firewall.sshFrom", ssh_from)
    if not nets:
        c.bad("firewall.sshFrom", ssh_from, "at least one address or CIDR (or the verifier cannot log in)")
    firewall = FirewallSettings(enabled=c.bool_("firewall.enabled", fw.get("enabled")), ssh_from=nets,
                                web_http_from=cidrs("firewall.webHttpFrom", fw.get("webHttpFrom")))

    netns = cfg["labNetns"] or None
    if netns is not None and not re.match(r"^[A-Za-z0-9_-]{1,32}$", str(netns)):
        c.bad("labNetns", netns, "a network namespace name (letters, digits, '_' or '-'), or empty for a real hypervisor")
    keys = tuple(c.list_("sshAuthorizedKeys", cfg["sshAuthorizedKeys"]))
    for i, k in enumerate(keys):
        if not isinstance(k, str) or not re.match(r"^(ssh-(ed25519|rsa)|ecdsa-sha2-\S+) \S+", k):
            c.bad(f"sshAuthorizedKeys[{i}]", k, "an OpenSSH public key line (ssh-ed25519 AAAA... comment)")

    if c.problems:
        raise SettingsError(c.problems)
    return Settings(stack=stack, vip=vip, network=network, balancers=(balancers[0], balancers[1]),
                    web_nodes=tuple(web_nodes), vrrp=vrrp, nginx=nginx, vm=vm, verify=verify,
                    firewall=firewall, lab_netns=netns, ssh_authorized_keys=keys, vrrp_auth_pass=auth_pass)


def _routing(c: _Checker, routing: Any, web_names: list[str]):
    """User-Agent routing: named pools of web nodes and ordered {match, pool} rules."""
    if routing in (None, {}):
        return (Pool("web", tuple(web_names)),), (), "web"
    known = {"pools": 0, "rules": 0, "default": 0}
    r = c.keys("nginx.routing", routing, known)
    pools_raw = r.get("pools") or {}
    pools = []
    if not isinstance(pools_raw, Mapping) or not pools_raw:
        c.bad("nginx.routing.pools", pools_raw, "an object: pool name -> list of web node names")
        pools_raw = {}
    for pname, members in pools_raw.items():
        key = f"nginx.routing.pools.{pname}"
        if not re.match(r"^[a-z][a-z0-9_]{0,30}$", str(pname)):
            c.bad(key, pname, "pool names: lowercase letters, digits, '_'")
        members = c.list_(key, members)
        if not members:
            c.bad(key, members, "a pool needs at least one web node")
        for m in members:
            if m not in web_names:
                c.bad(key, m, "unknown web node; known: " + ", ".join(web_names))
        pools.append(Pool(str(pname), tuple(members)))
    names = [p.name for p in pools]
    default = r.get("default", "default")
    if default not in names:
        c.bad("nginx.routing.default", default, "must name a pool; pools: " + ", ".join(names))
    rules = []
    for i, rule in enumerate(c.list_("nginx.routing.rules", r.get("rules"))):
        key = f"nginx.routing.rules[{i}]"
        rule = c.keys(key, rule, {"match": 0, "pool": 0})
        m = rule.get("match")
        try:
            if not isinstance(m, str) or not m or '"' in m or "\\\\" in m:
                raise re.error("must be a non-empty string without double quotes")
            re.compile(m)
        except re.error as e:
            c.bad(f"{key}.match", m, f"must be a valid case-insensitive regex ({e})")
        if rule.get("pool") not in names:
            c.bad(f"{key}.pool", rule.get("pool"), "unknown pool; pools: " + ", ".join(names))
        rules.append(RouteRule(str(m), str(rule.get("pool"))))
    return tuple(pools), tuple(rules), str(default)
