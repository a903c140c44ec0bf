"""WebTier (N web nodes) and LoadBalancerPair (MASTER + BACKUP): VMs with their rendered cloud-init, and
per node two command resources around the VM:
- `<node>-drain` (before the VM's objects): runs when the node's VM identity changes (model/rollout.py),
  that is before its VM is restarted or replaced: drains the node (day2/gate.py);
- `<node>-config` (after the VM): pushes the node's files (day 2), then admits it again once it serves.
On a deployed stack the nodes roll one at a time, in model.rollout.order: each node's drain waits for the
previous node's config, so a change that restarts or replaces VMs, and every day-2 change, goes one node
after the other, each behind its health gates. A cold `up` has nothing to roll: its nodes are made at once.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from dataclasses import dataclass, field

import pulumi
from pulumi_command import local

from day2.spec import Day2Spec, Peer
from model import render, rollout
from model.settings import Node, Settings

from .check import PROJECT_ROOT
from .secrets import HostKey
from .vm import VirtualMachine, VirtualMachineArgs, VmBase


@dataclass
class Roll:
    """The chain of a rolling change across both tiers (model.rollout.order)."""

    deployed: pulumi.Input[bool]
    """The stack has nodes already (its previous deployment's outputs say so): chain the nodes."""
    gate: pulumi.Input[list]
    """Resolves to [] once the rolling plan holds no refused change (else it fails the deployment)."""
    last: pulumi.Resource | None = None
    """The previous node's config command."""
    identities: dict[str, dict] = field(default_factory=dict)
    """Each node's VM identity, as the program built it."""

    def after(self) -> pulumi.Output[list[pulumi.Resource]]:
        """What the next node's drain waits for: the plan's gate, and on a deployed stack the previous node."""
        last = self.last
        return pulumi.Output.all(self.deployed, self.gate).apply(
            lambda v: [*([last] if v[0] and last is not None else [])])


@dataclass
class TierArgs:
    settings: Settings
    """Validated stack settings."""
    bases: dict[str | None, VmBase]
    """Shared VM settings (provider, pool, base image, boot, network) per hypervisor name (None: the one
    host of a stack without hypervisors)."""
    ssh_public_key: pulumi.Input[str]
    """The stack's own public key (the verifier logs in with its private half)."""
    ssh_private_key: pulumi.Input[str]
    """Its private half (a secret): NodeConfig logs in with it to apply day-2 changes."""
    roll: Roll
    """The rolling chain the tiers share."""
    host_keys: dict[str, HostKey]
    """Each node's SSH host key pair: the private half goes into its user-data (a secret) only, the public
    half to every SSH client of the project (env HACLUSTER_HOST_KEYS)."""


# Where templates/domain-tcg.xsl has libvirt keep each guest's serial console (its log_dir default).
CONSOLE_LOG_DIR = "/var/log/libvirt/qemu"


def console_log(s: Settings, node: Node) -> str | None:
    """The node's serial console log when this host can read it: the XSLT adds the log (TCG domains)
    and libvirt runs here (a local URI). The day-2 wait follows the boot through it."""
    hv = s.hypervisor(node)
    if hv.domain_type != "qemu" or not re.match(r"^[a-z]+(\+unix)?:///", hv.uri):
        return None
    return f"{CONSOLE_LOG_DIR}/{s.stack}-{node.name}-serial0.log"


def day2_spec(s: Settings, node: Node) -> Day2Spec:
    """What the node's drain and config commands need (no secrets)."""
    return Day2Spec(
        node=node.name, ip=node.ip, ssh_user=s.vm.admin_user, netns=s.lab_netns, timeout=s.verify.timeout,
        console=console_log(s, node), role=node.role, domain=f"{s.stack}-{node.name}", uri=s.hypervisor(node).uri,
        balancers=[Peer(name=b.name, ip=b.ip) for b in s.balancers], vip=s.vip, interface=s.vrrp.interface,
        pools=[list(p.members) for p in s.nginx.pools if node.name in p.members],
        master=None if s.vrrp.nopreempt else s.master.name, drain=s.nginx.active_check.enabled,
        drain_timeout=s.rollout.drain_timeout, allow_downtime=s.rollout.allow_downtime)


def host_keys_env(host_keys: dict[str, HostKey], names: list[str]) -> pulumi.Output[str]:
    """env HACLUSTER_HOST_KEYS (verifier/hostkeys.py): {name: public host key} of `names` (not secret)."""
    wanted = sorted(set(names))
    return pulumi.Output.all(*(host_keys[n].public for n in wanted)).apply(
        lambda keys: json.dumps(dict(zip(wanted, keys, strict=True)), sort_keys=True))


# A drain acts only when its node's VM is about to restart or be replaced: its triggers change, and a
# replaced command runs `create`. A change of what it merely reads (the pools a web node is in, the SSH
# key) updates it with this no-op: adding web03 must not drain web01 and web02.
DRAIN_UPDATE = "true"


def _command(parent, name: str, spec: Day2Spec, env: dict, triggers: list, after, mode: str = "",
             update: str | None = None) -> local.Command:
    return local.Command(
        name, create=f"{sys.executable} -m day2{mode}", update=update, dir=str(PROJECT_ROOT),
        environment={"HACLUSTER_DAY2_SPEC": spec.model_dump_json(by_alias=True), **env},
        triggers=triggers, logging=local.Logging.STDERR, opts=pulumi.ResourceOptions(parent=parent, depends_on=after))


def _vms(parent: pulumi.ComponentResource, args: TierArgs, nodes, auth_pass: pulumi.Input[str] | None):
    """Per node: its drain, its VM, its config; one node after the other on a deployed stack."""
    s, roll = args.settings, args.roll
    vms, configs = {}, []
    for node in nodes:
        base = args.bases[node.host]
        network_config, meta_data = render.network_config(s, node), render.meta_data(s, node)
        identity = roll.identities[node.name]
        spec = day2_spec(s, node)
        # The host keys day 2 pins: the node's and the balancers' (its gates ask them), no other node's (a
        # node added elsewhere changes no command here).
        pins = host_keys_env(args.host_keys, [node.name, *(b.name for b in s.balancers)])
        key = {"HACLUSTER_SSH_KEY": args.ssh_private_key, "HACLUSTER_HOST_KEYS": pins}
        host = args.host_keys[node.name]
        # Runs when the node's VM is about to restart or be replaced (its identity changed): the drain.
        drain = _command(parent, f"{node.name}-drain", spec, key, [rollout.digest(identity)], roll.after(), " drain",
                         update=DRAIN_UPDATE)
        user_data = pulumi.Output.all(args.ssh_public_key, auth_pass, host.private, host.public).apply(
            lambda v, node=node: render.user_data(s, node, v[1], [v[0]], (v[2], v[3])))
        vm = vms[node.name] = VirtualMachine(node.name, VirtualMachineArgs(
            node=node, base=base, user_data=user_data, network_config=network_config, meta_data=meta_data,
            fresh=rollout.digest(identity["replace"]), after=[drain],
        ), pulumi.ResourceOptions(parent=parent, providers=[base.provider]))
        files = pulumi.Output.secret(pulumi.Output.all(auth_pass, args.ssh_public_key).apply(
            lambda v, node=node: json.dumps([dataclasses.asdict(f) for f in render.node_files(
                s, node, v[0], ssh_keys=[v[1]])], sort_keys=True)))
        # Pushes the files (again when one changes: environment -> update; or when the VM restarted or was
        # replaced: triggers), then admits the node once it serves.
        # The pools matter to the drain only (never empty one): a web node joining them leaves the others' configs be.
        config = _command(parent, f"{node.name}-config", spec.model_copy(update={"pools": []}),
                          {"HACLUSTER_NODE_FILES": files, **key},
                          [vm.domain_id, rollout.digest(identity)], [vm, *configs[-1:]])
        configs.append(config)
        roll.last = config
    return vms, configs


class WebTier(pulumi.ComponentResource):
    def __init__(self, name: str, args: TierArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hacluster:index:WebTier", name, {}, opts)
        self.vms, self.configs = _vms(self, args, args.settings.web_nodes, None)
        self.register_outputs({"nodes": {n: vm.ip for n, vm in self.vms.items()}})


@dataclass
class LoadBalancerPairArgs(TierArgs):
    vrrp_auth_pass: pulumi.Input[str] | None = None
    """VRRP PASS password (a secret); None with VRRPv3."""


class LoadBalancerPair(pulumi.ComponentResource):
    def __init__(self, name: str, args: LoadBalancerPairArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hacluster:index:LoadBalancerPair", name, {}, opts)
        # BACKUP first, then MASTER: the VIP stays on the MASTER while its peer changes.
        self.vms, self.configs = _vms(self, args, [args.settings.backup, args.settings.master], args.vrrp_auth_pass)
        self.register_outputs({"nodes": {n: vm.ip for n, vm in self.vms.items()}})
