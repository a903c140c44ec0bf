"""WebTier (N web nodes) and LoadBalancerPair (MASTER + BACKUP): VMs with their rendered cloud-init."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from model import render
from model.settings import Settings

from .vm import VirtualMachine, VirtualMachineArgs, VmBase


@dataclass
class TierArgs:
    settings: Settings
    """Validated stack settings."""
    base: VmBase
    """Shared VM settings (pool, base image, boot, network)."""
    ssh_public_key: pulumi.Input[str]
    """The stack's own public key (the verifier logs in with its private half)."""


def _vms(parent: pulumi.ComponentResource, args: TierArgs, nodes, auth_pass: pulumi.Input[str] | None):
    s = args.settings
    vms = {}
    for node in nodes:
        user_data = pulumi.Output.all(args.ssh_public_key, auth_pass).apply(
            lambda v, node=node: render.user_data(s, node, v[1], [v[0], *s.ssh_authorized_keys]))
        vms[node.name] = VirtualMachine(node.name, VirtualMachineArgs(
            node=node, base=args.base, user_data=user_data,
            network_config=render.network_config(s, node), meta_data=render.meta_data(s, node),
        ), pulumi.ResourceOptions(parent=parent))
    return vms


class WebTier(pulumi.ComponentResource):
    def __init__(self, name: str, args: TierArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hacluster:index:WebTier", name, {}, opts)
        self.vms = _vms(self, args, args.settings.web_nodes, None)
        self.register_outputs({"nodes": {n: vm.ip for n, vm in self.vms.items()}})


@dataclass
class LoadBalancerPairArgs(TierArgs):
    vrrp_auth_pass: pulumi.Input[str] | None = None
    """VRRP PASS password (a secret); None with VRRPv3."""


class LoadBalancerPair(pulumi.ComponentResource):
    def __init__(self, name: str, args: LoadBalancerPairArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hacluster:index:LoadBalancerPair", name, {}, opts)
        self.vms = _vms(self, args, args.settings.balancers, args.vrrp_auth_pass)
        self.register_outputs({"nodes": {n: vm.ip for n, vm in self.vms.items()}})
