"""VirtualMachine: copy-on-write volume over the base image + cloud-init disk + domain."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt

from model.settings import GIB, Node

# Every Domain input this component sets, except those the plugin changes in place: running and
# autostart, and vcpu and memory (the domain is redefined and restarted cleanly: same disk, UUID and MAC).
REPLACE_ON_CHANGES = ["name", "type", "cloudinit", "disks", "networkInterfaces", "consoles", "xml",
                      "kernel", "initrd", "cmdlines"]


@dataclass
class VmBase:
    """What every VM of a stack shares."""

    pool: pulumi.Input[str]
    """Name of the libvirt storage pool holding the stack's volumes."""
    base_volume_id: pulumi.Input[str]
    """The base image volume; each VM gets a copy-on-write overlay over it."""
    domain_type: str
    """libvirt domain type: `kvm` (hardware) or `qemu` (TCG)."""
    stack: str
    """Stack name: prefixes every libvirt object name."""
    kernel: pulumi.Input[str] | None = None
    """Kernel path on the hypervisor for direct kernel boot (None: boot the image's own loader)."""
    initrd: pulumi.Input[str] | None = None
    """Initrd path on the hypervisor, with `kernel`."""
    network_id: pulumi.Input[str] | None = None
    """libvirt network to attach to (NAT mode)."""
    bridge: str | None = None
    """Existing host bridge to attach to (bridge mode)."""
    xslt: str | None = None
    """XSLT applied to the generated domain XML (TCG translation-cache cap)."""
    autostart: bool = False
    """libvirt starts the domain when libvirtd starts (vm.autostart)."""
    provider: pulumi.ProviderResource | None = None
    """The libvirt provider of the VMs' hypervisor (the tiers hand it to each VM)."""


@dataclass
class VirtualMachineArgs:
    node: Node
    """Name, address, MAC, vcpus, memory and disk size of this node."""
    base: VmBase
    """Shared pool, base image, boot and network settings."""
    user_data: pulumi.Input[str]
    """cloud-init user-data (secret on balancers: it holds the VRRP password)."""
    network_config: str
    """cloud-init network-config (static address)."""
    meta_data: str
    """cloud-init meta-data (instance-id, hostname)."""
    fresh: str = ""
    """The node's replace identity (model/rollout.py): when it changes, the node gets a fresh disk and seed."""
    after: pulumi.Input[list[pulumi.Resource]] | None = None
    """What the node's libvirt objects wait for: its drain, the previous node of the roll."""


class VirtualMachine(pulumi.ComponentResource):
    domain_name: pulumi.Output[str]
    ip: str

    def __init__(self, name: str, args: VirtualMachineArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hacluster:index:VirtualMachine", name, {}, opts)
        node, base = args.node, args.base
        prefix = f"{base.stack}-{node.name}"
        # A new replace identity (image, kernel, network attachment, ...) gives the node a fresh disk and
        # seed, the old ones first (their names are the node's). Both wait for the node's drain.
        fresh = pulumi.ResourceOptions(parent=self, depends_on=args.after, replacement_trigger=args.fresh,
                                       delete_before_replace=True)
        # Its capacity: node.diskGiB, or unset: the base image's virtual size. A bigger size grows it in place
        # (the plugin shuts a running domain down for it and starts it again; the image's hacluster-growfs unit
        # grows the root filesystem at boot); a smaller one is refused (model/rollout.py, and the plugin).
        volume = libvirt.Volume(
            f"{name}-disk", name=f"{prefix}.qcow2", pool=base.pool, base_volume_id=base.base_volume_id,
            format="qcow2", size=node.disk_gib * GIB if node.disk_gib else None, opts=fresh)
        # Read at a node's first boot only. A changed user-data (a config, a key) updates the seed in place
        # for the node's next fresh boot; the running node gets it from its NodeConfig command (day 2).
        seed = libvirt.CloudInitDisk(
            f"{name}-seed", name=f"{prefix}-seed.iso", pool=base.pool, user_data=args.user_data,
            network_config=args.network_config, meta_data=args.meta_data, opts=fresh)
        boot = {}
        if base.kernel:
            # Under TCG the guest's CPU is emulated: no speculative execution to guard against, while
            # the kernel's Spectre mitigations (retpolines, barriers) cost emulated instructions.
            tcg = {"mitigations": "off"} if base.domain_type == "qemu" else {}
            boot = {"kernel": base.kernel, "initrd": base.initrd,
                    "cmdlines": [{"root": "/dev/vda", "console": "ttyS0", "net.ifnames": "0", **tcg}, {"_": "rw"}]}
        domain = libvirt.Domain(
            f"{name}-domain",
            name=prefix,
            type=base.domain_type,
            vcpu=node.vcpus,
            memory=node.memory,
            cloudinit=seed.id,
            disks=[libvirt.DomainDiskArgs(volume_id=volume.id)],
            network_interfaces=[libvirt.DomainNetworkInterfaceArgs(
                network_id=base.network_id, bridge=base.bridge, mac=node.mac, hostname=node.name)],
            consoles=[libvirt.DomainConsoleArgs(type="pty", target_port="0", target_type="serial")],
            xml=libvirt.DomainXmlArgs(xslt=base.xslt) if base.xslt else None,
            autostart=base.autostart,
            running=True,
            **boot,
            # A change of anything but running, autostart, vcpu and memory replaces the domain, and the old
            # one goes first: two domains never run on one overlay. (A fresh disk or seed replaces it
            # through disks and cloudinit.) running and autostart change in place: a domain stopped out of
            # band is started again; vcpu and memory restart it in place.
            opts=pulumi.ResourceOptions(parent=self, replace_on_changes=REPLACE_ON_CHANGES, delete_before_replace=True,
                                        depends_on=args.after),
        )
        self.domain_name = domain.name
        self.domain_id = domain.id
        self.ip = node.ip
        self.register_outputs({"domainName": domain.name, "ip": node.ip})
