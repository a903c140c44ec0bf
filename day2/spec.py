"""The day-2 spec (env HACLUSTER_DAY2_SPEC): a model, serialised by components/tiers.py and parsed
here, with the same grammars as the stack settings (no second hand-written validator). It serves both
commands of a node: its drain (`python -m day2 drain`) and its config (`python -m day2`)."""

from __future__ import annotations

from pydantic import Field

from model import grammar as g
from model.config import Bool, Choice, Hostname, Int, IPv4, LibvirtUri, Model, Num, Text


class Peer(Model):
    name: Hostname = Field(description="a balancer's name")
    ip: IPv4 = Field(description="its address")


class Day2Spec(Model):
    node: Hostname = Field(description="the node's name")
    ip: IPv4 = Field(description="where to reach it over SSH")
    ssh_user: Text(g.USERNAME, "a Linux user name") = Field(description="the admin user")
    netns: Text(g.NETNS, "a network namespace name") | None = Field(None, description="reach the node from inside it")
    timeout: Int(1, 7200) = Field(600, description="seconds the node's boot (or a gate) may go without progress")
    console: Text(g.PATH, "a file path") | None = Field(
        None, description="the node's serial console log on the deploy host (its boot progress), if readable")
    limit: Num(1, 86400) | None = Field(None, description="an overall bound in seconds, if any")
    # ---- the rolling change's gates (day2/gate.py) ----
    role: Choice("web", "lb") = Field("web", description="web node or balancer")
    domain: Text(g.STACK, "a libvirt domain name") | None = Field(None, description="its libvirt domain")
    uri: LibvirtUri | None = Field(None, description="the libvirt URI of its hypervisor")
    balancers: list[Peer] = Field(default_factory=list, description="both balancers")
    vip: IPv4 | None = Field(None, description="the VIP")
    interface: Text(g.IFNAME, g.IFNAME_ALLOWED) = Field("eth0", description="the balancers' VRRP interface")
    pools: list[list[Hostname]] = Field(default_factory=list, description="the routing pools this web node is in")
    master: Hostname | None = Field(None, description="the balancer that holds the VIP once settled (None: either)")
    drain: Bool = Field(True, description="the balancers' health agents probe web nodes, so they can drain one")
    drain_timeout: Int(1, 3600) = Field(30, description="seconds a drained node's requests in flight get")
    allow_downtime: Bool = Field(False, description="roll even without another serving node (rollout.allowDowntime)")
