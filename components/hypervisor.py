"""Hypervisor: one libvirt host of the stack: its provider, the stack's storage pool there and the image
volumes (disk, kernel, initrd) its VMs boot from."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt

from model.images import ImageSet
from model.settings import HypervisorSettings, VmSettings


@dataclass
class HypervisorArgs:
    hypervisor: HypervisorSettings
    """The host: URI, pool directory."""
    vm: VmSettings
    """The image set uploaded to it (image, kernel, initrd)."""
    stack: str
    """Stack name: names the pool and the volumes."""
    images: ImageSet
    """The identities of the image set: each volume's name carries its file's, so a rebuilt image is a new
    volume beside the old one (which goes once no node uses it)."""
    gate: pulumi.Input[list[pulumi.Resource]] | None = None
    """What every object waits for: the rolling plan's refusal of an unsafe change."""


@dataclass
class HostObjects:
    """What a host holds for the stack's VMs."""

    provider: libvirt.Provider
    pool: libvirt.Pool
    base: libvirt.Volume
    kernel: libvirt.Volume | None
    initrd: libvirt.Volume | None


def host_objects(name: str, parent: pulumi.Resource, args: HypervisorArgs) -> HostObjects:
    """Provider, pool and image volumes of one host, named `<name>-*` under `parent`. A stack without
    `hypervisors` makes them under its HaCluster, as before there were several hosts (same URNs)."""
    hv, vm, stack = args.hypervisor, args.vm, args.stack
    provider = libvirt.Provider(f"{name}-libvirt", uri=hv.uri, opts=pulumi.ResourceOptions(parent=parent))
    child = pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=args.gate)
    pool = libvirt.Pool(f"{name}-pool", name=f"hacluster-{stack}", type="dir", path=f"{hv.pool_path}/{stack}",
                        opts=child)

    def image(rname: str, which: str, src: str | None, fmt: str) -> libvirt.Volume | None:
        """A file of the image set uploaded into the stack's pool."""
        if not src:
            return None
        return libvirt.Volume(f"{name}-{rname}", name=f"{stack}-{rname}-{args.images.short(which)}", pool=pool.name,
                              source=src, format=fmt, opts=child)

    return HostObjects(provider, pool, image("base", "image", vm.image, "qcow2"),
                       image("kernel", "kernel", vm.kernel, "raw"), image("initrd", "initrd", vm.initrd, "raw"))


class Hypervisor(pulumi.ComponentResource):
    objects: HostObjects

    def __init__(self, name: str, args: HypervisorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hacluster:index:Hypervisor", name, {}, opts)
        self.objects = host_objects(name, self, args)
        self.register_outputs({"uri": args.hypervisor.uri, "pool": self.objects.pool.name})
