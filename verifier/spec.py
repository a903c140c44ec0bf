"""The verifier's input: a JSON object (components.cluster.verifier_spec builds it; no secrets in it).

Keys (camelCase, as in the stack config):

  vip, serverName            the virtual IP and the Host header to send (required)
  balancers                  [{name, ip, priority, state, domain, mac}] x 2; the highest priority is the MASTER
  webNodes                   [{name, ip, weight, domain}]
  pools, rules, defaultPool  User-Agent routing: {pool: [web names]}, [{match, pool}] (first match,
                             case-insensitive regex), the pool for everything else
  persistence                "none" | "ip_hash" | "cookie:<name>"
  healthCheck, preempt       what the balancers are configured to do (the drill expects it)
  interface                  the balancers' VRRP interface (default eth0)
  netns                      run inside this network namespace (re-exec under `ip netns exec`); null: here
  actions                    "ssh" (VMs, default) or "netns" (the integration tier)
  sshUser                    for "ssh" actions; the key comes from env HACLUSTER_SSH_KEY
  libvirtUri                 for the hard-failure step with "ssh" actions (virsh suspend/resume)
  hypervisors                {NAME: {uri, netns}}: the stack's hosts (several hypervisors); netns: the lab
                             namespace holding that host's libvirtd and qemu processes (lab stacks only);
                             each balancer and web node then names its `host`, whose uri its virsh
                             steps use (instead of libvirtUri)
  hosts                      for "netns" actions: {balancer name: {netns, keepalived: SERVICE, nginx: SERVICE}}
                             SERVICE = {pidFile, childPidFiles: [...], start: [argv], foreground: bool, log}
  drill, hardFailure         run the failover drill; add the pause/resume step (default false)
  drillKinds                 the drill's ways to break the VIP holder, in order (default: keepalived, nginx if
                             healthCheck, hard if hardFailure). Each is a break step and a repair step:
                               keepalived   keepalived_stop / keepalived_start   (graceful: priority 0 advert)
                               nginx        nginx_stop / nginx_start             (the health check moves the VIP)
                               nginx_kill   nginx_kill / nginx_restart           (SIGKILL of every nginx process)
                               hard         hard_pause / hard_resume             (frozen: virsh suspend, SIGSTOP)
                               poweroff     poweroff / poweron                   (virsh destroy/start; ssh only)
                               switchover   switchover / switchback              (planned: priority lowered below
                                            the other balancer's in keepalived.conf + reload, then restored;
                                            needs preempt)
                             and under client load (`loadRate` GETs/s, each allowed `loadTimeout` s):
                               web_freeze   the first web node frozen `webFreezeSeconds`, then resumed
                               web_poweroff the first web node powered off `webFreezeSeconds`, then started
                                            (netns actions: its link down, then up)
                               lb_starve    both balancers CPU-starved (libvirt vcpu_quota `starveQuota` of
                                            100000) for `starveSeconds`, then restored (ssh)
                               vrrp_cut     VRRP dropped on the MASTER for `cutSeconds`, then healed
                               host_lost    the MASTER's hypervisor lost: every qemu process of it frozen
                                            (SIGSTOP) `hostFreezeSeconds`, then killed, down
                                            `hostDownSeconds`, then its domains started (ssh actions; needs
                                            two hypervisors with a netns and a web node on the MASTER's host)
  hosts (netns actions)      web nodes too: {web name: {netns, nginx: SERVICE}}; balancers may add
                             healthState: the agent's state file
  firewall                   {enabled, sshFrom: [CIDR], webHttpFrom: [CIDR]}: what the nodes' nftables rules
                             let in, for the firewall_closed check (lab stacks: probes from netns). Absent: the
                             nat default, enabled, SSH only from this namespace's own address on the nodes'
                             subnet (the gateway), HTTP to the web nodes only from the balancers
  timeout                    seconds to wait for the VIP and the balancers to answer (default 600)
  stepTimeout                seconds each drill step may take to move the VIP (default 30)
  settle                     seconds over which the VIP holder is sampled (default 5)
  converge                   seconds a converging pair may take to show one steady holder before two
                             holders count as split brain, a moving VIP as flapping (default 20)
  requests                   GETs for the distribution check (default 30)
  probeInterval, probeTimeout  the drill's background probe (default 0.1 s, 1.0 s)
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

# The drill kinds (verifier/drills.py): break/repair pairs, and those under client load (verifier.scenarios).
from .drills import DRILL_KINDS, FULL_SECONDS, LOAD_KINDS, SSH_ONLY_KINDS


class SpecError(ValueError):
    pass


@dataclass(frozen=True)
class Balancer:
    name: str
    ip: str
    priority: int
    state: str = "BACKUP"
    domain: str = ""
    mac: str = ""  # its NIC's MAC: who answers ARP for the VIP
    host: str = ""  # its hypervisor's name (several hosts); "" = the one host


@dataclass(frozen=True)
class WebNode:
    name: str
    ip: str
    weight: int = 1
    domain: str = ""
    host: str = ""  # its hypervisor's name (several hosts); "" = the one host


@dataclass(frozen=True)
class Hypervisor:
    name: str
    uri: str
    netns: str = ""  # the lab namespace of its libvirtd and qemu processes; "" = not a lab host


@dataclass(frozen=True)
class Firewall:
    """What the nodes' firewall lets in (model.settings.FirewallSettings), for the firewall_closed check."""

    enabled: bool = True
    ssh_from: tuple[str, ...] | None = None  # None: this namespace's own address on the nodes' subnet only
    web_http_from: tuple[str, ...] = ()  # besides the balancers


@dataclass(frozen=True)
class Spec:
    vip: str
    server_name: str
    balancers: tuple[Balancer, Balancer]
    web_nodes: tuple[WebNode, ...]
    pools: dict[str, list[str]]
    rules: tuple[tuple[str, str], ...]
    default_pool: str
    persistence: str = "none"
    health_check: bool = True
    preempt: bool = True
    interface: str = "eth0"
    netns: str | None = None
    actions: str = "ssh"
    ssh_user: str = "ops"
    libvirt_uri: str = "qemu:///system"
    hosts: dict[str, Any] = field(default_factory=dict)
    hypervisors: dict[str, Hypervisor] = field(default_factory=dict)
    drill: bool = True
    hard_failure: bool = False
    drill_kinds: tuple[str, ...] = ("keepalived", "nginx")
    timeout: float = 600.0
    step_timeout: float = 30.0
    settle: float = 5.0
    converge: float = 20.0
    requests: int = 30
    probe_interval: float = 0.1
    probe_timeout: float = 1.0
    stack: str = ""
    load_rate: float = 10.0
    load_timeout: float = 10.0
    web_freeze_seconds: float = FULL_SECONDS["webFreezeSeconds"]
    starve_seconds: float = FULL_SECONDS["starveSeconds"]
    starve_quota: int = 10000
    cut_seconds: float = FULL_SECONDS["cutSeconds"]
    rejoin_timeout: float = 300.0
    host_freeze_seconds: float = FULL_SECONDS["hostFreezeSeconds"]
    host_down_seconds: float = FULL_SECONDS["hostDownSeconds"]
    firewall: Firewall = Firewall()

    @property
    def master(self) -> Balancer:
        return max(self.balancers, key=lambda b: b.priority)

    @property
    def backup(self) -> Balancer:
        return min(self.balancers, key=lambda b: b.priority)

    def weights(self) -> dict[str, int]:
        return {w.name: w.weight for w in self.web_nodes}

    def uri(self, node: Balancer | WebNode) -> str:
        """The libvirt URI of `node`'s hypervisor: its host's (several hosts), else the spec's libvirtUri."""
        h = self.hypervisors.get(node.host)
        return h.uri if h else self.libvirt_uri

    def on_host(self, host: str) -> list[Balancer | WebNode]:
        """The balancers and web nodes on hypervisor `host`."""
        return [n for n in (*self.balancers, *self.web_nodes) if host and n.host == host]


def parse(text: str) -> Spec:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"the spec is not JSON: {e}") from e
    if not isinstance(raw, dict):
        raise SpecError("the spec must be a JSON object")
    return from_dict(raw)


def from_dict(raw: dict[str, Any]) -> Spec:
    problems: list[str] = []

    def need(key: str) -> Any:
        if raw.get(key) in (None, "", []):
            problems.append(f"{key}: required")
        return raw.get(key)

    def num(key: str, default: float, lo: float, hi: float) -> float:
        v = raw.get(key, default)
        if v is None:
            v = default
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            problems.append(f"{key} = {v!r}: must be a number in {lo}..{hi}")
            return default
        return float(v)

    vip, server_name = need("vip"), need("serverName")
    try:
        lbs = tuple(Balancer(name=str(b["name"]), ip=str(b["ip"]), priority=int(b.get("priority") or 0),
                             state=str(b.get("state") or "BACKUP"), domain=str(b.get("domain") or ""),
                             mac=str(b.get("mac") or "").lower(), host=str(b.get("host") or ""))
                    for b in need("balancers") or [])
    except (KeyError, TypeError, ValueError) as e:
        problems.append(f"balancers: each needs name, ip, priority ({e})")
        lbs = ()
    if len(lbs) != 2:
        problems.append(f"balancers: exactly two expected, got {len(lbs)}")
    elif lbs[0].priority == lbs[1].priority:
        problems.append("balancers: priorities must differ (the higher one is the expected MASTER)")
    try:
        webs = tuple(WebNode(name=str(w["name"]), ip=str(w["ip"]), weight=int(w.get("weight") or 1),
                             domain=str(w.get("domain") or ""), host=str(w.get("host") or ""))
                     for w in need("webNodes") or [])
    except (KeyError, TypeError, ValueError) as e:
        problems.append(f"webNodes: each needs name and ip ({e})")
        webs = ()
    names = [w.name for w in webs]
    pools = raw.get("pools") or {"web": names}
    default_pool = raw.get("defaultPool") or next(iter(pools), "web")
    rules = tuple((str(r["match"]), str(r["pool"])) for r in raw.get("rules") or [])
    for p in [default_pool, *(pool for _, pool in rules)]:
        if p not in pools:
            problems.append(f"pool {p!r} is used but not defined in pools")
    for p, members in pools.items():
        for m in members:
            if m not in names:
                problems.append(f"pools.{p}: unknown web node {m!r}")
    actions = raw.get("actions") or "ssh"
    if actions not in ("ssh", "netns"):
        problems.append(f"actions = {actions!r}: must be ssh or netns")
    hosts = raw.get("hosts") or {}
    if actions == "netns":
        if not raw.get("netns"):
            problems.append("actions netns needs netns: the client namespace to probe from")
        for b in lbs:
            h = hosts.get(b.name)
            if not isinstance(h, dict) or not h.get("netns") or not all(
                    isinstance(h.get(s), dict) and h[s].get("pidFile") and h[s].get("start")
                    for s in ("keepalived", "nginx")):
                problems.append(f"hosts.{b.name}: netns actions need netns, keepalived and nginx "
                                "({pidFile, start, ...}) for every balancer")
    health_check, hard_failure = bool(raw.get("healthCheck", True)), bool(raw.get("hardFailure", False))
    kinds = raw.get("drillKinds")
    if kinds is None:
        kinds = ["keepalived"] + (["nginx"] if health_check else []) + (["hard"] if hard_failure else [])
    if not isinstance(kinds, list) or not kinds or any(k not in DRILL_KINDS + LOAD_KINDS for k in kinds):
        problems.append(f"drillKinds = {kinds!r}: a non-empty list of {', '.join(DRILL_KINDS + LOAD_KINDS)}")
        kinds = []
    elif actions != "ssh" and any(k in SSH_ONLY_KINDS for k in kinds):
        problems.append(f"drillKinds: {', '.join(k for k in kinds if k in SSH_ONLY_KINDS)} needs ssh actions (VMs)")
    hypervisors = _hypervisors(raw.get("hypervisors"), [*lbs, *webs], problems)
    if "host_lost" in kinds:
        problems += _host_lost_problems(hypervisors, lbs, webs)
    firewall = _firewall(raw.get("firewall"), problems)
    persistence = str(raw.get("persistence") or "none")
    if not (persistence in ("none", "ip_hash") or persistence.startswith("cookie:")):
        problems.append(f"persistence = {persistence!r}: none, ip_hash or cookie:<name>")
    timing = {"timeout": num("timeout", 600, 1, 7200), "step_timeout": num("stepTimeout", 30, 1, 600),
              "settle": num("settle", 5, 0, 120), "converge": num("converge", 20, 0, 600),
              "requests": int(num("requests", 30, 2, 1000)),
              "probe_interval": num("probeInterval", 0.1, 0.02, 5),
              "probe_timeout": num("probeTimeout", 1.0, 0.1, 30),
              "load_rate": num("loadRate", 10, 0.5, 100), "load_timeout": num("loadTimeout", 10, 0.5, 120),
              "web_freeze_seconds": num("webFreezeSeconds", FULL_SECONDS["webFreezeSeconds"], 1, 600),
              "starve_seconds": num("starveSeconds", FULL_SECONDS["starveSeconds"], 1, 600),
              "starve_quota": int(num("starveQuota", 10000, 1000, 100000)),
              "cut_seconds": num("cutSeconds", FULL_SECONDS["cutSeconds"], 1, 600),
              "rejoin_timeout": num("rejoinTimeout", 300, 5, 1800),
              "host_freeze_seconds": num("hostFreezeSeconds", FULL_SECONDS["hostFreezeSeconds"], 1, 600),
              "host_down_seconds": num("hostDownSeconds", FULL_SECONDS["hostDownSeconds"], 1, 600)}
    if problems:
        raise SpecError("invalid verifier spec: " + "; ".join(problems))
    return Spec(
        vip=str(vip), server_name=str(server_name), balancers=(lbs[0], lbs[1]), web_nodes=webs,
        pools={k: list(v) for k, v in pools.items()}, rules=rules, default_pool=str(default_pool),
        persistence=persistence, health_check=health_check,
        preempt=bool(raw.get("preempt", True)), interface=str(raw.get("interface") or "eth0"),
        netns=raw.get("netns") or None, actions=actions, ssh_user=str(raw.get("sshUser") or "ops"),
        libvirt_uri=str(raw.get("libvirtUri") or "qemu:///system"), hosts=hosts, hypervisors=hypervisors,
        drill=bool(raw.get("drill", True)), hard_failure=hard_failure, drill_kinds=tuple(kinds),
        stack=str(raw.get("stack") or ""), firewall=firewall, **timing,
    )


def _firewall(raw: Any, problems: list[str]) -> Firewall:
    """The `firewall` key; absent: the nat default (see the module docstring)."""
    if raw is None:
        return Firewall()
    try:
        nets = lambda key: tuple(str(ipaddress.IPv4Network(x, strict=False)) for x in raw[key])  # noqa: E731
        return Firewall(enabled=bool(raw.get("enabled", True)),
                        ssh_from=nets("sshFrom") if raw.get("sshFrom") is not None else None,
                        web_http_from=nets("webHttpFrom") if raw.get("webHttpFrom") else ())
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        problems.append(f"firewall: {{enabled, sshFrom: [CIDR], webHttpFrom: [CIDR]}} expected ({e})")
        return Firewall()


def _hypervisors(raw: Any, nodes: list, problems: list[str]) -> dict[str, Hypervisor]:
    """The `hypervisors` key; every node's `host` must be one of them."""
    if raw in (None, {}):
        out: dict[str, Hypervisor] = {}
    elif not isinstance(raw, dict) or not all(isinstance(h, dict) and h.get("uri") for h in raw.values()):
        problems.append("hypervisors: {name: {uri, netns}} with a uri for each")
        return {}
    else:
        out = {str(n): Hypervisor(str(n), str(h["uri"]), str(h.get("netns") or "")) for n, h in raw.items()}
    for n in nodes:
        if n.host and n.host not in out:
            problems.append(f"{n.name}: host {n.host!r} is not one of the hypervisors")
    return out


def _host_lost_problems(hypervisors: dict[str, Hypervisor], lbs: tuple, webs: tuple) -> list[str]:
    """Why the host_lost drill cannot run on this spec (one line), or nothing."""
    if sum(1 for h in hypervisors.values() if h.netns) < 2:
        return ["drillKinds: host_lost needs at least two hypervisors with a netns (a lab stack across 2 hosts)"]
    if len(lbs) == 2:
        master = max(lbs, key=lambda b: b.priority)
        if not master.host or not hypervisors.get(master.host, Hypervisor("", "")).netns:
            return [f"drillKinds: host_lost needs the MASTER {master.name} on a hypervisor with a netns"]
        if not any(w.host == master.host for w in webs):
            return [f"drillKinds: host_lost needs a web node on the MASTER's host {master.host}"]
    return []
