"""HaCluster: per hypervisor its provider, pool and images; the network; two web nodes + a balancer pair on
their hosts; the post-deploy check."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi

from model import render, rollout
from model.images import image_set
from model.settings import FirewallSettings, HypervisorSettings, Settings
from verifier.drills import QUICK_KINDS, quick_form

from .check import FailoverCheck, FailoverCheckArgs
from .hypervisor import Hypervisor, HypervisorArgs, host_objects
from .network import ClusterNetwork, ClusterNetworkArgs
from .secrets import StackSecrets, StackSecretsArgs
from .tiers import LoadBalancerPair, LoadBalancerPairArgs, Roll, TierArgs, WebTier, host_keys_env
from .vm import VmBase


@dataclass
class HaClusterArgs:
    settings: Settings
    """Validated stack settings (model.settings.load)."""
    previous: pulumi.Input[dict] | None = None
    """The stack's previous deployment: {"nodes": its `nodes` output, "rollout": its `rollout` output}
    (components/previous.py); None or {}: none (a cold up)."""


def verifier_spec(s: Settings) -> dict:
    """What the verifier checks, from the settings alone (no secrets). A one-host stack's spec has none of
    the several-hosts keys (hypervisors, each node's host): it must not change, or deployed stacks re-verify."""
    node = lambda n: {"name": n.name, "ip": n.ip, "domain": f"{s.stack}-{n.name}",  # noqa: E731
                      **({"host": n.host} if s.hypervisors_declared else {})}
    load_drills = s.verify.failover_drill and s.verify.load_drills and s.lab_netns is not None
    return {
        "stack": s.stack, "vip": s.vip, "serverName": s.nginx.server_name.split()[0],
        # the MASTER's host; with several hosts each node's virsh steps go to its host in `hypervisors`
        "netns": s.lab_netns, "libvirtUri": s.hypervisor(s.master).uri, "sshUser": s.vm.admin_user,
        "interface": s.vrrp.interface,
        "balancers": [{**node(b), "state": b.state, "priority": b.priority, "mac": b.mac} for b in s.balancers],
        "webNodes": [{**node(w), "weight": w.weight} for w in s.web_nodes],
        "pools": {p.name: list(p.members) for p in s.nginx.pools},
        "rules": [{"match": r.match, "pool": r.pool} for r in s.nginx.rules],
        "defaultPool": s.nginx.default_pool, "persistence": s.nginx.persistence,
        "healthCheck": s.vrrp.health_check, "preempt": not s.vrrp.nopreempt,
        "drill": s.verify.failover_drill, "timeout": s.verify.timeout,
        # Pausing the MASTER through libvirt is part of the drill on lab stacks only.
        "hardFailure": s.verify.failover_drill and s.lab_netns is not None,
        **(LOAD_DRILLS if load_drills else {}),
        **(_hosts_spec(s, load_drills) if s.hypervisors_declared else {}),
        **_firewall_spec(s),
    }


def _firewall_spec(s: Settings) -> dict:
    """Lab stacks: what the nodes' firewall lets in, for the verifier's firewall_closed check. Left out where
    it is what a spec without the key means (nat mode, the firewall on, SSH only from the gateway, which is
    the lab namespace's own address there, HTTP to the web nodes only from the balancers): so the recorded
    one-host specs (tests/unit/data) stay byte for byte, and real stacks, which the check skips, too."""
    fw = s.firewall
    if s.lab_netns is None or (s.network.mode == "nat" and fw == FirewallSettings(
            enabled=True, ssh_from=(f"{s.network.gateway}/32",), web_http_from=())):
        return {}
    return {"firewall": {"enabled": fw.enabled, "sshFrom": list(fw.ssh_from), "webHttpFrom": list(fw.web_http_from)}}


def _hosts_spec(s: Settings, load_drills: bool) -> dict:
    """Several hypervisors: each one's URI and, on lab stacks, its namespace (`<labNetns>-<name>`). A lab
    stack's failover drill across 2+ hosts, with a web node beside the MASTER, ends with the hypervisor-lost
    drill (quick form), after the load drills or after the default kinds."""
    out: dict = {"hypervisors": {h.name: {"uri": h.uri, **({"netns": f"{s.lab_netns}-{h.name}"} if s.lab_netns else {})}
                                 for h in s.hypervisors}}
    if (s.verify.failover_drill and s.lab_netns and len(s.hypervisors) >= 2
            and any(w.host == s.master.host for w in s.web_nodes)):
        kinds = LOAD_DRILLS["drillKinds"] if load_drills else ["keepalived", *(["nginx"] if s.vrrp.health_check else []), "hard"]
        out.update(HOST_LOST_DRILL, drillKinds=[*kinds, "host_lost"])
    return out


# verify.loadDrills on a lab stack: the drills under client load in their quick form (the bench runs them
# at full length). Powered-off VMs boot again within the step timeout.
LOAD_DRILLS = {"drillKinds": QUICK_KINDS, **quick_form(QUICK_KINDS), "stepTimeout": 240, "rejoinTimeout": 300}
# ... and across two or more lab hypervisors: the MASTER's host lost (issue 14), in its quick form too.
HOST_LOST_DRILL = quick_form(["host_lost"])


class HaCluster(pulumi.ComponentResource):
    vip: str
    nodes: dict
    verification: pulumi.Output[dict] | None

    def __init__(self, name: str, args: HaClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hacluster:index:HaCluster", name, {}, opts)
        s = args.settings
        images = image_set(s.vm.image, s.vm.kernel, s.vm.initrd)
        xslt = (render.TEMPLATES / "domain-tcg.xsl").read_text()
        identities = {n.name: rollout.vm_identity(
            s, n, images, render.network_config(s, n) + render.meta_data(s, n),
            xslt if s.hypervisor(n).domain_type == "qemu" else None) for n in s.nodes}
        previous = pulumi.Output.from_input(args.previous or {})
        # Nothing is touched before the rolling plan holds no refused change (model/rollout.py).
        gate = previous.apply(lambda p: _plan(s, identities, p))
        self.rollout = rollout.record(s, identities)
        if not s.hypervisors_declared:  # one host: its objects right here (URNs as before)
            hosts = {None: host_objects(name, self, HypervisorArgs(s.hypervisors[0], s.vm, s.stack, images, gate))}
        else:
            hosts = {h.name: Hypervisor(f"{name}-{h.name}", HypervisorArgs(h, s.vm, s.stack, images, gate),
                                        pulumi.ResourceOptions(parent=self)).objects for h in s.hypervisors}
        # A NAT network exists on one host: validation allows nat with one hypervisor only.
        first = next(iter(hosts.values()))
        network = ClusterNetwork(f"{name}-network", ClusterNetworkArgs(s.network, autostart=s.vm.autostart, gate=gate),
                                 pulumi.ResourceOptions(parent=self, providers=[first.provider]))
        secrets = StackSecrets(f"{name}-secrets", StackSecretsArgs(
            stack=s.stack, vrrp_auth_pass=s.vrrp_auth_pass, need_vrrp_pass=bool(s.vrrp.auth_type),
            nodes=tuple(n.name for n in s.nodes)),
            pulumi.ResourceOptions(parent=self))

        def vm_base(h: HypervisorSettings) -> VmBase:
            o = hosts[h.name]
            return VmBase(
                pool=o.pool.name, base_volume_id=o.base.id, domain_type=h.domain_type, stack=s.stack,
                kernel=o.kernel.id if o.kernel else None, initrd=o.initrd.id if o.initrd else None,
                autostart=s.vm.autostart, network_id=network.network_id, bridge=h.bridge, provider=o.provider,
                xslt=xslt if h.domain_type == "qemu" else None,
            )
        roll = Roll(deployed=previous.apply(lambda p: bool((p or {}).get("nodes"))), gate=gate, identities=identities)
        tier = TierArgs(settings=s, bases={h.name: vm_base(h) for h in s.hypervisors},
                        ssh_public_key=secrets.public_key, ssh_private_key=secrets.private_key, roll=roll,
                        host_keys=secrets.host_keys)
        child = pulumi.ResourceOptions(parent=self)
        web = WebTier(f"{name}-web", tier, child)
        lbs = LoadBalancerPair(f"{name}-lb", LoadBalancerPairArgs(
            **vars(tier), vrrp_auth_pass=secrets.vrrp_auth_pass), child)
        vms = {**web.vms, **lbs.vms}

        self.vip = s.vip
        self.nodes = {n.name: {"ip": n.ip, "role": n.role, "state": n.state, "priority": n.priority,
                               "domain": f"{s.stack}-{n.name}", **({"host": n.host} if n.host else {})}
                      for n in s.nodes}
        self.domain_names = [vm.domain_name for vm in vms.values()]
        self.private_key = secrets.private_key
        self.host_keys = pulumi.Output.all(**{n: k.public for n, k in secrets.host_keys.items()})
        self.verification = None
        if s.verify.enabled:
            # A hash of every rendered config (auth included) re-runs the check on any change, without
            # putting the secret itself in the trigger; the domain ids re-run it when a VM is re-created
            # (replaced, or restored after it was deleted out of band).
            configs = pulumi.Output.all(secrets.vrrp_auth_pass).apply(lambda v: hashlib.sha256("".join(
                f.content for n in s.nodes for f in render.node_files(s, n, v[0])).encode()).hexdigest())
            check = FailoverCheck(f"{name}-check", FailoverCheckArgs(
                spec=verifier_spec(s), private_key=secrets.private_key,
                host_keys=host_keys_env(secrets.host_keys, [b.name for b in s.balancers]),
                depends_on=[*vms.values(), *web.configs, *lbs.configs],
                triggers=[pulumi.Output.unsecret(configs), *[vm.domain_id for vm in vms.values()],
                          rollout.digest(identities)]),
                pulumi.ResourceOptions(parent=self))
            self.verification = check.report
        self.register_outputs({"vip": self.vip, "nodes": self.nodes, "verification": self.verification,
                               "rollout": self.rollout, "hostKeys": self.host_keys})


def _plan(s: Settings, identities: dict[str, dict], previous: dict | None) -> list:
    """The rolling plan, shown in the preview (one line per node that rolls, in order); a refused change
    fails the deployment here, with one line per problem, before any resource is touched."""
    prev = previous or {}
    record = prev.get("rollout")
    if record is None and prev.get("nodes"):  # deployed before the rolling plan existed: every node may roll
        steps = [rollout.Step(n.name, n.role, "replace", ("deployed before rolling updates",))
                 for n in rollout.order(s) if n.name in prev["nodes"]]
        problems: list[str] = [] if s.rollout.allow_downtime else rollout.unpinned(s, prev["nodes"])
    else:
        steps, problems = rollout.plan(s, identities, record)
    if problems:
        for line in problems:
            pulumi.log.error(line)
        raise pulumi.RunError(f"{len(problems)} change(s) cannot roll safely (see above); nothing was changed")
    rolling = [st for st in steps if st.action in ("replace", "restart")]
    for i, st in enumerate(rolling, 1):
        pulumi.log.info(st.line(i, len(rolling), s))
    return []
