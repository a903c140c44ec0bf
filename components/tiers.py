"""WebTier (N web nodes) and LoadBalancerPair (MASTER + BACKUP): VMs with their rendered cloud-init,
and per node a NodeConfig command that applies later config changes in place (day 2)."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from dataclasses import dataclass

import pulumi
from pulumi_command import local

from day2.spec import Day2Spec
from model import render
from model.settings import Node, Settings

from .check import PROJECT_ROOT
from .vm import VirtualMachine, VirtualMachineArgs, VmBase


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


# Where templates/domain-tcg.xsl has libvirt keep each guest's serial console (its log_dir default).
CONSOLE_LOG_DIR = "/var/log/libvirt/qemu"


def console_log(s: Settings, node: Node) -> str | None:
    """The node's serial console log when this host can read it: the XSLT adds the log (TCG domains)
    and libvirt runs here (a local URI). The day-2 wait follows the boot through it."""
    hv = s.hypervisor(node)
    if hv.domain_type != "qemu" or not re.match(r"^[a-z]+(\+unix)?:///", hv.uri):
        return None
    return f"{CONSOLE_LOG_DIR}/{s.stack}-{node.name}-serial0.log"


def _node_config(parent, s: Settings, node: Node, vm: VirtualMachine, files: pulumi.Output,
                 private_key: pulumi.Input[str], after: list[pulumi.Resource]) -> local.Command:
    """Pushes the node's rendered files over SSH; the node validates, swaps and reloads (day2/).
    Runs again when a file changes (environment -> update) or the VM is replaced (trigger)."""
    spec = Day2Spec(node=node.name, ip=node.ip, ssh_user=s.vm.admin_user, netns=s.lab_netns,
                    timeout=s.verify.timeout, console=console_log(s, node))
    return local.Command(
        f"{node.name}-config",
        create=f"{sys.executable} -m day2",
        dir=str(PROJECT_ROOT),
        environment={"HACLUSTER_DAY2_SPEC": spec.model_dump_json(by_alias=True), "HACLUSTER_NODE_FILES": files,
                     "HACLUSTER_SSH_KEY": private_key},
        triggers=[vm.domain_id],
        logging=local.Logging.STDERR,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[vm, *after]),
    )


def _vms(parent: pulumi.ComponentResource, args: TierArgs, nodes, auth_pass: pulumi.Input[str] | None):
    """One VM per node, and their NodeConfig commands one after another (a rolling change)."""
    s = args.settings
    vms, configs = {}, []
    for node in nodes:
        user_data = pulumi.Output.all(args.ssh_public_key, auth_pass).apply(
            lambda v, node=node: render.user_data(s, node, v[1], [v[0], *s.ssh_authorized_keys]))
        base = args.bases[node.host]
        vm = vms[node.name] = VirtualMachine(node.name, VirtualMachineArgs(
            node=node, base=base, user_data=user_data,
            network_config=render.network_config(s, node), meta_data=render.meta_data(s, node),
        ), pulumi.ResourceOptions(parent=parent, providers=[base.provider]))
        files = pulumi.Output.secret(pulumi.Output.from_input(auth_pass).apply(lambda pw, node=node: json.dumps(
            [dataclasses.asdict(f) for f in render.node_files(s, node, pw)], sort_keys=True)))
        configs.append(_node_config(parent, s, node, vm, files, args.ssh_private_key, configs[-1:]))
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
        order = sorted(args.settings.balancers, key=lambda b: b.priority or 0)
        self.vms, self.configs = _vms(self, args, order, args.vrrp_auth_pass)
        self.register_outputs({"nodes": {n: vm.ip for n, vm in self.vms.items()}})
