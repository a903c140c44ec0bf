"""ClusterNetwork: a libvirt NAT network of the stack's own, or an existing host bridge."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt

from model.settings import NetworkSettings


@dataclass
class ClusterNetworkArgs:
    settings: NetworkSettings
    """Validated network settings (mode nat: create; mode bridge: attach to `bridge`)."""
    autostart: bool = False
    """libvirt starts the network when libvirtd starts (with the VMs: vm.autostart)."""
    gate: pulumi.Input[list] | None = None
    """What the network waits for: the rolling plan's refusal of an unsafe change."""


class ClusterNetwork(pulumi.ComponentResource):
    network_id: pulumi.Output[str] | None
    """The libvirt network id (nat mode), else None."""
    bridge: str | None
    """The existing host bridge (bridge mode), else None."""

    def __init__(self, name: str, args: ClusterNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hacluster:index:ClusterNetwork", name, {}, opts)
        s = args.settings
        self.bridge = s.bridge if s.mode == "bridge" else None
        self.network_id = None
        if s.mode == "nat":
            net = libvirt.Network(
                f"{name}-net",
                name=s.name,
                mode="nat",
                addresses=[s.cidr],
                autostart=args.autostart,
                dhcp=libvirt.NetworkDhcpArgs(enabled=False),  # every node has a static address
                opts=pulumi.ResourceOptions(parent=self, depends_on=args.gate),
            )
            self.network_id = net.id
        self.register_outputs({"networkId": self.network_id, "bridge": self.bridge})
