"""The stack config as typed pydantic v2 models: one declaration per option (type, bounds, default,
description). Keys are camelCase as in Pulumi.<stack>.yaml; unknown keys are refused.

Field types carry their own "what is allowed" text, so every refused value becomes one line
`key = value: allowed` (model/settings.py collects them). Cross-field rules are model validators;
each raises `problems(...)` with every problem it found, keyed relative to its model.
Pure Python: no Pulumi import.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from . import grammar as g

PROBLEMS = "hacluster_problems"


def problems(found: list[tuple[str, Any, str]]) -> PydanticCustomError:
    """A validator's findings: [(key relative to the model, value, what is allowed)]."""
    return PydanticCustomError(PROBLEMS, "{n} problem(s)", {"n": len(found), "problems": found})


def _with(err: ValidationError, found: list[tuple[str, Any, str]]) -> ValidationError:
    """`err` plus a validator's own findings, as one ValidationError."""
    details: list[Any] = [{"type": PydanticCustomError(x["type"], x["msg"], x.get("ctx")), "loc": x["loc"],
                           "input": x.get("input")} for x in err.errors(include_url=False)]
    if found:
        details.append({"type": problems(found), "loc": (), "input": None})
    return ValidationError.from_exception_data(err.title, details)


def _explain(allowed: str) -> WrapValidator:
    """Any failure of the wrapped validation becomes one error saying what is allowed."""
    def wrap(v: Any, handler: Callable) -> Any:
        try:
            return handler(v)
        except ValidationError as e:
            first = e.errors()[0] if e.errors() else {}
            msg = str(first["ctx"]["error"]) if first.get("type") == "value_error" else allowed
            raise PydanticCustomError("hacluster", msg) from None
        except ValueError as e:
            raise PydanticCustomError("hacluster", str(e)) from None
    return WrapValidator(wrap)


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise PydanticCustomError("not_a_number", "a boolean is not a number")
    return v


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v in ("true", "false"):
        return v == "true"
    raise ValueError("must be true or false")


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a string")
    return v


def Int(lo: int, hi: int) -> Any:
    return Annotated[int, BeforeValidator(_no_bool), Field(ge=lo, le=hi), _explain(f"must be an integer {lo}..{hi}")]


def Num(lo: float, hi: float, what: str = "a number of seconds") -> Any:
    def finite(v: Any) -> Any:
        _no_bool(v)
        if isinstance(v, str):
            try:
                v = float(v)  # "nan" and "inf" parse here and are refused below
            except ValueError:
                raise PydanticCustomError("not_a_number", "not a number") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise PydanticCustomError("not_a_number", "not finite")
        return v
    return Annotated[float, BeforeValidator(finite), Field(ge=lo, le=hi, allow_inf_nan=False),
                     _explain(f"must be {what} {lo:g}..{hi:g}")]


Bool = Annotated[bool, BeforeValidator(_bool), _explain("must be true or false")]


def Choice(*values: str) -> Any:
    return Annotated[Literal[values], BeforeValidator(_str), _explain("must be one of " + ", ".join(values))]


def Text(check: Callable[[str], Any] | Any, allowed: str) -> Any:
    """A string matched whole by a compiled regex, or passed to a parser that raises ValueError."""
    def run(v: str) -> str:
        if hasattr(check, "fullmatch"):
            if not check.fullmatch(v):
                raise ValueError(allowed)
        else:
            check(v)
        return v
    return Annotated[str, BeforeValidator(_str), AfterValidator(run), _explain(allowed)]


Hostname = Text(g.HOSTNAME, "must be " + g.HOSTNAME_ALLOWED)
IPv4 = Text(g.ipv4, "must be an IPv4 address like 192.168.81.100")
Cidr = Text(g.CIDR, "an IPv4 address or CIDR like 10.0.0.0/24")
HvName = Text(g.HV_NAME, g.HV_NAME_ALLOWED)
LibvirtUri = Text(g.libvirt_uri, g.URI_ALLOWED)
PoolPath = Text(g.pool_path, "an absolute directory of its own on the hypervisor, like /var/lib/libvirt/hacluster")
DomainType = Choice("auto", "kvm", "qemu")


def _camel(name: str) -> str:
    return to_camel(name)


def _empty_is_none(v: Any) -> Any:
    return None if v == "" else v


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=_camel, populate_by_name=True,
                              validate_default=False)


# --------------------------------------------------------------------------------------------------
class NetworkConfig(Model):
    """Where the VMs live: a libvirt NAT network of the stack's own, or an existing host bridge."""

    mode: Choice("nat", "bridge") = Field("nat",
        description="nat: a libvirt network of the stack; bridge: an existing host bridge")
    cidr: Text(g.CIDR, "must be an IPv4 network like 192.168.81.0/24") = Field(
        "192.168.81.0/24", description="the node subnet (/29 or larger)")
    gateway: IPv4 | None = Field(None, description="default: the first host address (libvirt's bridge in nat mode)")
    name: Text(g.LIBVIRT_NAME, "letters, digits, '.', '_' or '-', at most 64") | None = Field(
        None, description="libvirt network name (default hacluster-<stack>)")
    bridge: Text(g.IFNAME, g.IFNAME_ALLOWED) | None = Field(None, description="the existing host bridge (bridge mode)")
    dns: list[IPv4] = Field(default_factory=list, description="DNS servers for the nodes")

    @model_validator(mode="after")
    def _rules(self) -> NetworkConfig:
        found = []
        net = self.ip_network()
        if net is None:
            found.append(("cidr", self.cidr, "must be an IPv4 network like 192.168.81.0/24 (host bits set?)"))
        elif net.prefixlen > 29:
            found.append(("cidr", self.cidr, "needs room for 4 nodes, a VIP and a gateway: /29 or larger"))
        elif self.gateway is not None:
            gw = ipaddress.IPv4Address(self.gateway)
            first = next(net.hosts())
            if gw not in net:
                found.append(("gateway", self.gateway, f"must be inside network.cidr {net}"))
            elif self.mode == "nat" and gw != first:
                found.append(("gateway", self.gateway, f"in nat mode libvirt's bridge is the gateway: {first} (or unset)"))
        if self.mode == "bridge" and not self.bridge:
            found.append(("bridge", self.bridge, "required when network.mode is bridge: the name of an existing host bridge"))
        if self.bridge in (".", ".."):
            found.append(("bridge", self.bridge, g.IFNAME_ALLOWED))
        if found:
            raise problems(found)
        return self

    def ip_network(self) -> ipaddress.IPv4Network | None:
        try:
            return ipaddress.IPv4Network(self.cidr, strict=True)
        except ValueError:
            return None


# A VM disk in GiB (the overlay volume's capacity; libvirt takes bytes: GiB x 2^30).
DiskGiB = Int(1, 4096)


class BalancerConfig(Model):
    """One of the two nginx + keepalived balancers."""

    name: Hostname = Field(description="hostname (and libvirt domain <stack>-<name>)")
    ip: IPv4 = Field(description="static address inside network.cidr")
    state: Choice("MASTER", "BACKUP") = Field(description="keepalived's initial state")
    priority: Int(1, 254) = Field(description="VRRP priority; the MASTER has the higher one")
    router_id: Text(g.ROUTER_ID, "letters, digits, '.', '_' or '-', at most 64") | None = Field(
        None, description="keepalived router_id (default: the name)")
    vcpus: Int(1, 64) | None = Field(None, description="default vm.vcpus")
    memory: Int(256, 262144) | None = Field(None, description="MiB; default vm.memory")
    disk_gib: DiskGiB | None = Field(None, alias="diskGiB", description="GiB of its disk; default vm.diskGiB")
    host: HvName | None = Field(None, description="its hypervisor (a hypervisors key); unset: spread")


class WebNodeConfig(Model):
    """A web node behind the balancers."""

    name: Hostname = Field(description="hostname (and libvirt domain <stack>-<name>)")
    ip: IPv4 = Field(description="static address inside network.cidr")
    weight: Int(1, 1000) | None = Field(None, description="upstream weight (default nginx.upstream.weight)")
    vcpus: Int(1, 64) | None = Field(None, description="default vm.vcpus")
    memory: Int(256, 262144) | None = Field(None, description="MiB; default vm.memory")
    disk_gib: DiskGiB | None = Field(None, alias="diskGiB", description="GiB of its disk; default vm.diskGiB")
    host: HvName | None = Field(None, description="its hypervisor (a hypervisors key); unset: spread")


class HypervisorConfig(Model):
    """One libvirt host of the stack (hypervisors.NAME)."""

    uri: LibvirtUri = Field(description="its libvirt URI, like qemu+ssh://admin@kvm1/system")
    bridge: Text(g.IFNAME, g.IFNAME_ALLOWED) | None = Field(
        None, description="its bridge on the shared L2 segment (bridge mode; default network.bridge)")
    pool_path: PoolPath | None = Field(None, description="storage pool directory there (default vm.poolPath)")
    domain_type: DomainType | None = Field(None, description="default vm.domainType")
    insecure_tcp: Bool = Field(False, description=(
        "accept a qemu+tcp:// uri to another host (libvirt's RPC with no authentication or encryption)"))


# Failover profiles: defaults that explicit vrrp.* keys still override.
#  reference: the tutorial's VRRPv2, 1 s adverts, PASS auth (master-down ~3.6 s on a freeze).
#  fast: VRRPv3 (RFC 5798: no authentication), 100 ms adverts (master-down ~0.36 s), a one-strike
#        nginx check polled every 0.2 s; the cost is 10 adverts/s per pair.
PROFILES: dict[str, dict[str, Any]] = {
    "reference": {},
    "fast": {"version": 3, "advertInt": 0.1, "authType": "none", "checkFall": 1, "checkInterval": 0.2},
}


class VrrpConfig(Model):
    """keepalived's VRRP instance and its nginx health check."""

    profile: Choice(*PROFILES) = Field("reference",
        description="defaults bundle: reference (VRRPv2, 1 s) or fast (VRRPv3, 0.1 s)")
    virtual_router_id: Int(1, 255) = Field(51, description="VRID, unique on the L2 segment")
    advert_int: Num(0.01, 255) = Field(1, description="seconds between adverts (v2: whole 1..255; v3: 0.01..40.95)")
    version: Int(2, 3) = Field(2, description="VRRP version")
    auth_type: Annotated[Choice("PASS", "none"), AfterValidator(lambda v: None if v == "none" else v)] = Field(
        "PASS", description="PASS (v2 only) or none")  # none: None (no authentication for keepalived)
    transport: Choice("unicast", "multicast") = Field("unicast", description="unicast peers or multicast adverts")
    interface: Text(g.IFNAME, g.IFNAME_ALLOWED) = Field("eth0", description="the balancers' VRRP interface (not lo)")
    nopreempt: Bool = Field(False, description="a returning higher-priority balancer does not take the VIP back (both BACKUP)")
    preempt_delay: Int(0, 1000) = Field(0,
        description="seconds a starting higher-priority balancer waits before preempting (both BACKUP)")
    garp_master_refresh: Int(0, 86400) = Field(60, description="seconds between gratuitous ARP refreshes (0: off)")
    garp_master_repeat: Int(1, 255) = Field(5, description=(
        "gratuitous ARPs sent at once when a balancer takes the VIP (switches with stale ARP caches need more)"))
    health_check: Bool = Field(True, description=(
        "the health agent moves the VIP off a balancer whose nginx fails while its peer's serves (never empties it)"))
    check_fall: Int(1, 10) = Field(2, description="failed checks (refused, reset, error) before the VIP moves")
    check_rise: Int(1, 10) = Field(2, description="good checks before a failed nginx counts as serving again")
    check_interval: Num(0.1, 10) = Field(0.5, description="seconds between health checks")
    check_timeout: Num(0.1, 30) = Field(2, description="seconds after which a check counts as slow")
    check_slow_fall: Int(1, 100) = Field(10, description=(
        "a nginx that is only slow counts as failing after checkSlowFall x checkInterval seconds of slowness"))

    @property
    def advert(self) -> float | int:
        """advert_int as keepalived reads it: whole seconds with VRRPv2."""
        return self.advert_int if self.version == 3 else int(self.advert_int)

    @model_validator(mode="before")
    @classmethod
    def _profile(cls, data: Any) -> Any:
        """defaults < profile < what the stack sets."""
        if isinstance(data, dict) and isinstance(data.get("profile"), str) and data["profile"] in PROFILES:
            return {**PROFILES[data["profile"]], **data}
        return data

    @model_validator(mode="after")
    def _rules(self) -> VrrpConfig:
        found = []
        a = self.advert_int
        if self.version == 2 and (a != int(a) or not 1 <= a <= 255):
            found.append(("advertInt", a, "VRRPv2 allows whole seconds 1..255; use vrrp.version 3 for sub-second"))
        if self.version == 3 and not 0.01 <= a <= 40.95:
            found.append(("advertInt", a, "VRRPv3 allows 0.01..40.95 seconds"))
        if self.version == 3 and self.auth_type is not None:
            found.append(("authType", self.auth_type,
                          "VRRPv3 (RFC 5798) has no authentication: set it to none, or use vrrp.version 2"))
        if self.version == 2 and self.auth_type != "PASS":
            found.append(("authType", "none", "VRRPv2 here uses PASS authentication"))
        if self.interface == "lo" or self.interface in (".", ".."):
            found.append(("interface", self.interface, "the loopback cannot carry VRRP: " + g.IFNAME_ALLOWED))
        if self.nopreempt and self.preempt_delay:
            found.append(("preemptDelay", self.preempt_delay,
                          "has no effect with vrrp.nopreempt (nothing preempts): remove one of them"))
        if found:
            raise problems(found)
        return self


class UpstreamActiveCheck(Model):
    """Active health checks of the web nodes from the balancers."""

    enabled: Bool = Field(True, description="probe every web node actively")
    interval: Num(0.1, 10) = Field(0.5, description="seconds between probes")
    timeout: Num(0.1, 30) = Field(1, description="seconds one probe may take")
    fall: Int(1, 10) = Field(2, description="failed probes before a node is out")
    rise: Int(1, 10) = Field(2, description="good probes before a node is back")


class UpstreamConfig(Model):
    weight: Int(1, 1000) = Field(1, description="default weight of a web node")
    max_fails: Int(0, 1000) = Field(3, description="nginx max_fails")
    fail_timeout: Int(1, 86400) = Field(60, description="nginx fail_timeout (s)")
    active_check: UpstreamActiveCheck = Field(default_factory=UpstreamActiveCheck, description="active health checks")


BufSize = Text(g.BUF_SIZE, "a size like 256k or 1m (1k..64m)")


class ProxyConfig(Model):
    connect_timeout: Int(1, 75) = Field(30, description="proxy_connect_timeout (s)")
    send_timeout: Int(1, 3600) = Field(60, description="proxy_send_timeout (s)")
    read_timeout: Int(1, 3600) = Field(60, description="proxy_read_timeout (s)")
    buffering: Bool = Field(True, description="proxy_buffering")
    buffer_size: BufSize = Field("256k", description="proxy_buffer_size")
    buffers: Text(g.BUFFERS, "'<count> <size>' like '4 256k'") = Field("4 256k", description="proxy_buffers")

    @model_validator(mode="after")
    def _busy_buffers(self) -> ProxyConfig:
        """nginx (ngx_http_proxy_merge_loc_conf): at least 2 buffers; busy buffers default to
        2 x max(proxy_buffer_size, one buffer) and must not exceed all buffers minus one."""
        found = []
        count, size = self.buffers.split(" ")
        n, one, bs = int(count), g.size_bytes(size), g.size_bytes(self.buffer_size)
        if not g.BUF_MIN <= bs <= g.BUF_MAX:
            found.append(("bufferSize", self.buffer_size, "a size like 256k or 1m (1k..64m)"))
        if not g.BUF_MIN <= one <= g.BUF_MAX:
            found.append(("buffers", self.buffers, "each buffer 1k..64m"))
        elif not 2 <= n <= 1024:
            found.append(("buffers", self.buffers, "nginx needs 2..1024 proxy buffers"))
        elif 2 * max(bs, one) > (n - 1) * one:
            busy = 2 * max(bs, one)
            found.append(("buffers", self.buffers,
                          f"nginx refuses it: busy buffers (2 x max(bufferSize {self.buffer_size}, one buffer {size}) = "
                          f"{g.human(busy)}) must fit in all buffers minus one ({n - 1} x {size} = "
                          f"{g.human((n - 1) * one)}); use more or larger buffers, or a smaller bufferSize"))
        if found:
            raise problems(found)
        return self


class RouteRule(Model):
    match: Text(g.route_regex, g.ROUTE_ALLOWED) = Field(description="case-insensitive User-Agent regex")
    pool: Text(g.POOL_NAME, "a pool name") = Field(description="the pool for matching requests")


PoolName = Text(g.POOL_NAME, "pool names: a lowercase letter, then lowercase letters, digits, '_', at most 31")


class RoutingConfig(Model):
    """User-Agent routing: named pools of web nodes and ordered {match, pool} rules (first match wins)."""

    pools: dict[PoolName, Annotated[list[Hostname], Field(min_length=1)]] = Field(
        min_length=1, description="pool name -> web node names")
    rules: list[RouteRule] = Field(default_factory=list, description="ordered rules")
    default: PoolName = Field("default", description="the pool for everything else")

    @model_validator(mode="wrap")
    @classmethod
    def _refs(cls, data: Any, handler: Callable) -> RoutingConfig:
        """Pool references are checked on the raw values too, so they show up with any other problem."""
        try:
            pools = [p for p in data.get("pools") or {}] if isinstance(data, dict) else []
            rules = data.get("rules") if isinstance(data, dict) and isinstance(data.get("rules"), list) else []
            default = data.get("default", "default") if isinstance(data, dict) else "default"
        except AttributeError:
            pools, rules, default = [], [], "default"
        found = []
        if isinstance(data, dict) and isinstance(data.get("pools"), dict) and data["pools"]:
            if default not in pools:
                found.append(("default", default, "must name a pool; pools: " + ", ".join(map(str, pools))))
            for i, r in enumerate(rules):
                if isinstance(r, dict) and r.get("pool") not in pools:
                    found.append((f"rules[{i}].pool", r.get("pool"), "unknown pool; pools: " + ", ".join(map(str, pools))))
        try:
            model = handler(data)
        except ValidationError as e:
            raise _with(e, found) from None
        if found:
            raise problems(found)
        return model


def _server_name(v: str) -> str:
    names = v.split(" ")
    if not 1 <= len(names) <= 8 or not g.HOST.fullmatch(names[0]) or any(
            len(n) > 253 or not g.WILDCARD_HOST.fullmatch(n) for n in names):
        raise ValueError(g.SERVER_NAME_ALLOWED)
    return v


def _body_size(v: str) -> str:
    if not g.BODY_SIZE.fullmatch(v) or g.size_bytes(v) > g.MAX_BODY:
        raise ValueError("a size like 200m, 1g or 512k, at most 1024g (0: no limit)")
    return v


class NginxConfig(Model):
    server_name: Text(_server_name, g.SERVER_NAME_ALLOWED) = Field("www.example.local",
        description="server_name; the first is the Host the verifier sends")
    client_max_body_size: Text(_body_size, "a size like 200m, 1g or 512k, at most 1024g (0: no limit)") = Field(
        "200m", description="client_max_body_size")
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig, description="upstream defaults")
    proxy: ProxyConfig = Field(default_factory=ProxyConfig, description="proxy timeouts and buffers")
    persistence: Text(g.PERSISTENCE, "must be none, ip_hash or cookie:<name>") = Field(
        "none", description="none, ip_hash or cookie:NAME")
    routing: RoutingConfig | None = Field(None, description="User-Agent routing (default: one pool of every web node)")


ImagePath = Text(lambda v: g.PATH.fullmatch(v) or g.URL.fullmatch(v) or _raise(g.IMAGE_ALLOWED), g.IMAGE_ALLOWED)


def _raise(msg: str):
    raise ValueError(msg)


class VmConfig(Model):
    image: ImagePath = Field(".images/debian12/disk.qcow2",
        description="base image: project-relative path, absolute path or https://HOST/PATH#sha256=<its sha256>")
    kernel: Annotated[ImagePath | None, BeforeValidator(_empty_is_none)] = Field(
        ".images/debian12/vmlinuz", description="direct kernel boot ('' for the image's own boot loader)")
    initrd: Annotated[ImagePath | None, BeforeValidator(_empty_is_none)] = Field(
        ".images/debian12/initrd.img", description="initrd for direct kernel boot ('' with kernel '')")
    vcpus: Int(1, 64) = Field(1, description="default vCPUs per VM")
    memory: Int(256, 262144) = Field(512, description="default MiB per VM")
    disk_gib: DiskGiB | None = Field(None, alias="diskGiB", description=(
        "default GiB of each VM's disk (unset: the image's own virtual size); at least the image's size, and on a "
        "deployed stack it only grows (in place: the node restarts, its root filesystem grows at boot)"))
    domain_type: DomainType = Field("auto", description="auto: kvm where hardware KVM works, else qemu (TCG)")
    libvirt_uri: LibvirtUri = Field(g.LAB_URI, description="libvirt connection URI (a stack without hypervisors)")
    insecure_tcp: Bool = Field(False, description=(
        "accept a qemu+tcp:// libvirtUri to another host (libvirt's RPC with no authentication or encryption)"))
    pool_path: PoolPath = Field(
        "/var/lib/libvirt/hacluster", description="storage pool directory on the hypervisor")
    install_packages: Bool = Field(False, description="cloud-init installs nginx/keepalived (images without them)")
    admin_user: Text(lambda v: _admin_user(v), "x") = Field(
        "ops", description="the automation user: the stack's own SSH key, exactly the sudo commands day 2 and the verifier run")
    operator_user: Text(lambda v: _admin_user(v), "x") = Field(
        "sysop", description="the operators' user: sshAuthorizedKeys, sudo to read state and logs and restart the services")
    autostart: Bool | None = Field(None, description=(
        "libvirt starts the VMs and the stack's NAT network when libvirtd starts (a hypervisor reboot); "
        "unset: true for a hypervisor of your own (labNetns ''), false in the lab"))

    @model_validator(mode="after")
    def _pair(self) -> VmConfig:
        if bool(self.kernel) != bool(self.initrd):
            raise problems([("initrd" if self.kernel else "kernel", None,
                             "vm.kernel and vm.initrd go together: set both (direct kernel boot) or neither")])
        if self.operator_user == self.admin_user:
            raise problems([("operatorUser", self.operator_user, "must differ from vm.adminUser (the automation user)")])
        return self


def _admin_user(v: str) -> str:
    if not g.USERNAME.fullmatch(v):
        raise ValueError("a Linux user name: a lowercase letter or '_', then lowercase letters, digits, '_' or '-', at most 31")
    if v in g.RESERVED_USERS:
        raise ValueError("a system account or group of the image (it would get NOPASSWD sudo and the SSH keys); "
                         "reserved: " + ", ".join(sorted(g.RESERVED_USERS)))
    return v


class VerifyConfig(Model):
    enabled: Bool = Field(True, description="run the verifier after every deploy")
    failover_drill: Bool = Field(True, description="run the failover drill (briefly disrupts traffic)")
    load_drills: Bool = Field(False, description=(
        "lab stacks: add the drills under load (web node frozen / powered off, balancers starved, VRRP cut, "
        "MASTER powered off), in their quick form"))
    timeout: Int(30, 7200) = Field(600, description=(
        "how long a node's boot or the verifier's wait may go without progress (stage change, console output) "
        "before it gives up"))


class RolloutConfig(Model):
    """How a change that restarts or replaces VMs rolls through the nodes: one at a time, each drained
    first and admitted again only once it serves (web nodes in order, then the BACKUP, then the MASTER)."""

    drain_timeout: Int(1, 3600) = Field(30, description=(
        "seconds a drained node's requests in flight get to finish before it is stopped"))
    allow_downtime: Bool = Field(False, description=(
        "roll a node even when its tier (or a routing pool) has no other node serving meanwhile: a single "
        "web node, a pool of one, a balancer whose peer is down"))


def _count(lo: int, hi: int, allowed: str) -> Callable[[list], list]:
    def check(v: list) -> list:
        if not lo <= len(v) <= hi:
            raise PydanticCustomError("hacluster", allowed)
        return v
    return check


SSH_FROM_ALLOWED = ("1..64 CIDRs like 10.20.0.0/24 (unset: the deploy side); an empty list would let no one SSH in, "
                    "and nft refuses the empty set it renders, so the node would boot with no firewall at all")


class FirewallConfig(Model):
    enabled: Bool = Field(True, description="nftables on every VM")
    ssh_from: Annotated[list[Cidr], AfterValidator(_count(1, 64, SSH_FROM_ALLOWED))] | None = Field(
        None, description="CIDRs allowed to SSH in (default: the deploy side)")
    web_http_from: list[Cidr] = Field(default_factory=list, description="extra CIDRs allowed to reach web nodes' HTTP")


_DEFAULT_LBS = [
    {"name": "lb01", "ip": "192.168.81.210", "state": "MASTER", "priority": 150, "routerId": "lb01"},
    {"name": "lb02", "ip": "192.168.81.220", "state": "BACKUP", "priority": 100, "routerId": "lb02"},
]
_DEFAULT_WEBS = [{"name": "web01", "ip": "192.168.81.230"}, {"name": "web02", "ip": "192.168.81.240"}]


def _netns(v: Any) -> Any:
    return "" if v is None else v  # Pulumi hands a YAML null over as ""


NETNS_ALLOWED = ("a network namespace name (letters, digits, '_', '.', '-', at most 32), or '' for a hypervisor of "
                 "your own (needs a vm.libvirtUri other than qemu:///system)")


def _netns_name(v: str) -> str:
    if v and not g.NETNS.fullmatch(v):
        raise ValueError(NETNS_ALLOWED)
    return v


class StackConfig(Model):
    """Every `hacluster:*` key. Pulumi.yaml's `config:` block is generated from this (model/schema.py)."""

    vip: IPv4 = Field("192.168.81.100", description="The floating virtual IP the balancers share (inside network.cidr).")
    network: NetworkConfig = Field(default_factory=NetworkConfig, description="Where the VMs live.")
    balancers: Annotated[list[BalancerConfig],
                         AfterValidator(_count(2, 2, "exactly two balancers (one MASTER, one BACKUP)"))] = Field(
        default_factory=lambda: [BalancerConfig.model_validate(b) for b in _DEFAULT_LBS],
        description="Exactly two balancers (one MASTER, one BACKUP).")
    web_nodes: Annotated[list[WebNodeConfig],
                         AfterValidator(_count(1, 64, "at least one web node is required (at most 64)"))] = Field(
        default_factory=lambda: [WebNodeConfig.model_validate(w) for w in _DEFAULT_WEBS],
        description="One or more web nodes.")
    vrrp: VrrpConfig = Field(default_factory=VrrpConfig, description="keepalived VRRP and health check.")
    nginx: NginxConfig = Field(default_factory=NginxConfig, description="nginx on the balancers.")
    vm: VmConfig = Field(default_factory=VmConfig, description="VM image, size and hypervisor.")
    hypervisors: Annotated[dict[HvName, HypervisorConfig], Field(max_length=16)] = Field(default_factory=dict,
        description="The libvirt hosts, NAME -> {uri, ...}; unset or {}: one host, vm.libvirtUri. Nodes without "
        "a host are spread: the balancers on different hypervisors, web nodes round robin (in name order).")
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="The post-deploy verification.")
    firewall: FirewallConfig = Field(default_factory=FirewallConfig, description="nftables on every VM.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description=(
        "How changes that restart or replace VMs roll through the nodes."))
    lab_netns: Annotated[Text(_netns_name, NETNS_ALLOWED), BeforeValidator(_netns)] = Field(
        "halab",
            description="Network namespace of the project's libvirt lab (probes run inside it); '' for a "
        "hypervisor of your own, which needs a vm.libvirtUri other than qemu:///system (e.g. qemu+unix:///system).")
    ssh_authorized_keys: list[Text(g.ssh_public_key, g.SSH_KEY_ALLOWED)] = Field(
        default_factory=list, max_length=64, description="Extra OpenSSH public keys for the admin user on every VM.")
    vrrp_auth_pass: Annotated[Text(g.AUTH_PASS, g.AUTH_PASS_ALLOWED) | None, BeforeValidator(_empty_is_none)] = Field(
        None, description="VRRP PASS password (set it with `pulumi config set --secret`); unset or '': generated per stack.")

    # ---- cross-field rules ---------------------------------------------------------------------
    # Each rule names the top-level keys it reads; load() re-runs the rules whose keys all passed
    # field validation when others did not, so every problem comes out in one run.
    @model_validator(mode="after")
    def _cross_field(self, info: ValidationInfo) -> StackConfig:
        skip = set((info.context or {}).get("skip", ()))
        found: list[tuple[str, Any, str]] = []
        for deps, rule in _RULES:
            if not skip & set(deps):
                found += rule(self)
        if found:
            raise problems(found)
        return self


def _rule_addresses(c: StackConfig) -> list:
    """Subnet membership, distinct addresses and names."""
    found = []
    net = c.network.ip_network()
    if net is None:
        return found
    gw = ipaddress.IPv4Address(c.network.gateway) if c.network.gateway else next(net.hosts())
    taken: dict[str, str] = {}
    named: dict[str, str] = {}
    entries = [(f"balancers[{i}]", n) for i, n in enumerate(c.balancers)] + \
              [(f"webNodes[{i}]", n) for i, n in enumerate(c.web_nodes)]
    for key, n in entries:
        if n.name in named:
            found.append((f"{key}.name", n.name, f"duplicate node name: already used by {named[n.name]}"))
        named.setdefault(n.name, f"{key}.name")
    for key, ip in [(f"{k}.ip", n.ip) for k, n in entries] + [("vip", c.vip)]:
        a = ipaddress.IPv4Address(ip)
        if a not in net or a in (net.network_address, net.broadcast_address):
            found.append((key, ip, f"must be a host address inside network.cidr {net}"))
        elif a == gw:
            found.append((key, ip, f"must differ from the gateway {gw}"))
        elif ip in taken:
            found.append((key, ip, f"duplicate address: already used by {taken[ip]}"))
        taken.setdefault(ip, key)
    return found


def _rule_balancers(c: StackConfig) -> list:
    """Distinct priorities and router ids; the MASTER has the higher priority; nopreempt and
    preemptDelay need both balancers BACKUP (keepalived ignores both on a MASTER)."""
    found = []
    a, b = c.balancers
    v = c.vrrp
    if a.priority == b.priority:
        found.append(("balancers[1].priority", b.priority, f"must differ from balancers[0].priority ({a.priority})"))
    if (a.router_id or a.name) == (b.router_id or b.name):
        found.append(("balancers[1].routerId", b.router_id or b.name, "duplicate routerId: must differ from balancers[0]"))
    if v.nopreempt:
        if a.state != "BACKUP" or b.state != "BACKUP":
            i = 0 if a.state != "BACKUP" else 1
            found.append((f"balancers[{i}].state", c.balancers[i].state,
                          "with vrrp.nopreempt both balancers must be BACKUP (keepalived ignores nopreempt on MASTER)"))
    elif v.preempt_delay:
        if a.state != "BACKUP" or b.state != "BACKUP":
            i = 0 if a.state != "BACKUP" else 1
            found.append(("vrrp.preemptDelay", v.preempt_delay,
                          f"keepalived ignores it on a balancer whose state is MASTER (balancers[{i}]): set both "
                          "balancers' state to BACKUP (the higher priority still takes the VIP, after the delay)"))
    elif {a.state, b.state} != {"MASTER", "BACKUP"}:
        found.append(("balancers[1].state", b.state, "one balancer must be MASTER and the other BACKUP"))
    elif a.priority != b.priority:
        m, o = (a, b) if a.state == "MASTER" else (b, a)
        if m.priority < o.priority:
            found.append((f"balancers[{c.balancers.index(m)}].priority", m.priority,
                          f"the MASTER needs the higher priority (BACKUP {o.name} has {o.priority})"))
    return found


def _rule_routing(c: StackConfig) -> list:
    r = c.nginx.routing
    names = [w.name for w in c.web_nodes]
    found = []
    for p, members in (r.pools.items() if r else ()):
        for m in members:
            if m not in names:
                found.append((f"nginx.routing.pools.{p}", m, "unknown web node; known: " + ", ".join(names)))
    return found


def _rule_secret(c: StackConfig) -> list:
    if c.vrrp_auth_pass is not None and c.vrrp.version == 3:
        return [("vrrpAuthPass", "[secret]", "VRRPv3 has no authentication: remove vrrpAuthPass or use vrrp.version 2")]
    return []


def _rule_lab(c: StackConfig) -> list:
    """No sandbox is a decision, not an accident: '' (or null) needs a libvirt URI other than the lab's."""
    lab = [f"hypervisors.{n}.uri" for n, h in c.hypervisors.items() if h.uri == g.LAB_URI]
    if c.lab_netns == "" and lab:
        return [("labNetns", c.lab_netns, f"empty (or null) turns the lab sandbox off, but {lab[0]} is the lab's "
                 "qemu:///system: keep labNetns halab (make lab), or give each host its own URI "
                 "(qemu+ssh://host/system)")]
    if c.lab_netns == "" and not c.hypervisors and c.vm.libvirt_uri == g.LAB_URI:
        return [("labNetns", c.lab_netns,
                 "empty (or null) turns the lab sandbox off, but vm.libvirtUri is the lab's qemu:///system: keep "
                 "labNetns halab (make lab), or, for a libvirtd of your own, set vm.libvirtUri explicitly "
                 "(qemu+ssh://host/system, or qemu+unix:///system for this host)")]
    return []


def _rule_hypervisors(c: StackConfig) -> list:
    """Known hosts; with several hypervisors: the balancers apart, one L2 segment (bridge mode), one
    libvirtd each; the hosts' URIs live in `hypervisors` only."""
    hv, found = c.hypervisors, []
    declared = ", ".join(sorted(hv)) or "none (add the host under hypervisors, or remove host)"
    nodes = [(f"balancers[{i}]", n) for i, n in enumerate(c.balancers)] + \
            [(f"webNodes[{i}]", n) for i, n in enumerate(c.web_nodes)]
    for key, n in nodes:
        if n.host is not None and n.host not in hv:
            found.append((f"{key}.host", n.host, f"unknown hypervisor; declared: {declared}"))
    if not hv:
        return found
    a, b = c.balancers
    if len(hv) > 1 and a.host is not None and a.host == b.host:
        found.append(("balancers[1].host", b.host, f"must differ from balancers[0].host ({a.host!r}): with "
                      f"{len(hv)} hypervisors the balancers never share one: "
                      + ", ".join(sorted(set(hv) - {a.host}))))
    if len(hv) > 1 and c.network.mode == "nat":
        found.append(("network.mode", c.network.mode, f"bridge is required with {len(hv)} hypervisors: a NAT "
                      "network exists on one host only, and VRRP and the VIP need one L2 segment (a bridge on "
                      "every host, joined by a VLAN or switch)"))
    uris: dict[str, str] = {}
    for name, h in hv.items():
        if h.uri in uris:
            found.append((f"hypervisors.{name}.uri", h.uri,
                          f"duplicate URI: hypervisors.{uris[h.uri]} has it (one libvirtd is one hypervisor)"))
        uris.setdefault(h.uri, name)
        if h.bridge is not None and c.network.mode != "bridge":
            found.append((f"hypervisors.{name}.bridge", h.bridge, "only with network.mode bridge"))
    if "libvirt_uri" in c.vm.model_fields_set:
        found.append(("vm.libvirtUri", c.vm.libvirt_uri,
                      "not with hypervisors: each host's URI is hypervisors.NAME.uri (remove vm.libvirtUri)"))
    return found


def _rule_plain_tcp(c: StackConfig) -> list:
    """qemu+tcp:// to another host needs its explicit opt-in (insecureTcp beside the URI); an opt-in without
    such a URI is refused too, so it never waits, forgotten, for a later URI change."""
    found = []
    uris = [(f"hypervisors.{n}", "uri", h.uri, h.insecure_tcp) for n, h in c.hypervisors.items()]
    if not c.hypervisors or c.vm.insecure_tcp:
        uris.append(("vm", "libvirtUri", c.vm.libvirt_uri, c.vm.insecure_tcp))
    for where, key, uri, opted in uris:
        if g.plain_tcp_remote(uri) and not opted:
            found.append((f"{where}.{key}", uri, g.tcp_refused(f"{where}.insecureTcp")))
        elif opted and c.hypervisors and where == "vm":
            found.append(("vm.insecureTcp", True, "not with hypervisors: each host has its own "
                          "(hypervisors.NAME.insecureTcp)"))
        elif opted and not g.plain_tcp_remote(uri):
            found.append((f"{where}.insecureTcp", True, f"only with a qemu+tcp:// {where}.{key} to another host "
                          f"(it is {uri}): remove it"))
    return found


_RULES: list[tuple[tuple[str, ...], Callable[[StackConfig], list]]] = [
    (("network", "balancers", "webNodes", "vip"), _rule_addresses),
    (("balancers", "vrrp"), _rule_balancers),
    (("nginx", "webNodes"), _rule_routing),
    (("vrrpAuthPass", "vrrp"), _rule_secret),
    (("labNetns", "vm", "hypervisors"), _rule_lab),
    (("hypervisors", "balancers", "webNodes", "network", "vm"), _rule_hypervisors),
    (("hypervisors", "vm"), _rule_plain_tcp),
]
