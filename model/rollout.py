"""The rolling plan of a change: what each node's VM is made of, which nodes a change restarts or replaces,
in which order they roll, and the changes that cannot roll safely (refused before any resource is touched).

A node's VM identity has two parts:
- `replace`: what its disk, seed and domain are made of (image, kernel, boot shape, network attachment,
  hypervisor). A change gives the node a fresh disk and seed: a rolled replacement.
- `restart`: what libvirt changes in place on the same disk, UUID and MAC (vCPUs, memory, and a disk that
  grows: the plugin resizes the volume while the domain is shut down, and the guest grows its root filesystem
  at boot): a rolled restart. A disk never shrinks: a smaller one than deployed is refused.
Everything else a node runs (configs, authorized keys) is pushed in place by day 2 (components/tiers.py),
also one node at a time; its SSH host key comes with its first boot only (HOST_KEYS). The previous
deployment's identities come from the stack's own `rollout` output.
Pure Python: no Pulumi import.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .images import ImageSet
from .settings import Node, Settings, disk_key

VERSION = 1
# What a domain is made of besides the settings (components/vm.py: consoles, boot command line, the TCG
# XSLT). Bump it when that changes: deployed nodes then roll to the new shape one at a time.
SHAPE = 1
# Where a node's SSH host key comes from. Since pinned host keys: made by the stack (components/secrets.py),
# given in the first-boot user-data, pinned by every SSH client. A node deployed before has keys the stack
# does not know: it is replaced (with this in its identity), one at a time.
HOST_KEYS = "ed25519-from-stack"
# The users a node gets at first boot: the automation user (the stack key) and the operators' user, each
# with its own sudo rules (templates/sudoers.j2). A node made before has one user with every key and full sudo.
USERS = "automation+operator"


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def order(s: Settings) -> list[Node]:
    """The roll order: the web nodes as configured, then the BACKUP, then the MASTER (the VIP moves once
    away from the MASTER while it is replaced, and back when it serves)."""
    return [*s.web_nodes, s.backup, s.master]


def vm_identity(s: Settings, node: Node, images: ImageSet, seed: str, xslt: str | None) -> dict:
    """What makes the node's VM. `seed` is its cloud-init network-config and meta-data (the user-data is
    first-boot only: day 2 carries what it holds), `xslt` the domain XSLT (TCG)."""
    hv = s.hypervisor(node)
    return {
        "replace": {
            "image": images.image, "kernel": images.kernel, "initrd": images.initrd,
            "domainType": hv.domain_type, "hypervisor": hv.uri, "mac": node.mac,
            "network": {"mode": s.network.mode, "name": s.network.name if s.network.mode == "nat" else None,
                        "bridge": hv.bridge},
            "seed": digest(seed), "shape": digest([SHAPE, xslt]), "hostKey": HOST_KEYS,
            "users": USERS,
        },
        # diskGiB None (the image's own size) is left out of the record (outputs drop nulls): a stack deployed
        # before the setting existed compares equal.
        "restart": {"vcpus": node.vcpus, "memory": node.memory, "diskGiB": node.disk_gib},
    }


def fixed(s: Settings) -> dict:
    """Settings a deployed stack keeps: changing one would rebuild every node (or its network, pool or
    hypervisor connection) at once, or only acts at a node's first boot."""
    return {
        "network.mode": s.network.mode, "network.cidr": s.network.cidr,
        "network.name": s.network.name if s.network.mode == "nat" else None, "network.bridge": s.network.bridge,
        "vm.adminUser": s.vm.admin_user, "vm.operatorUser": s.vm.operator_user,
        "vm.installPackages": s.vm.install_packages, "labNetns": s.lab_netns,
        **{(f"hypervisors.{h.name}.uri" if h.name else "vm.libvirtUri"): h.uri for h in s.hypervisors},
        **{(f"hypervisors.{h.name}.poolPath" if h.name else "vm.poolPath"): h.pool_path for h in s.hypervisors},
    }


FIXED_WHY = {
    "network": "the network and every node on it would be rebuilt at once",
    "vm.adminUser": "the admin user is made at a node's first boot",
    "vm.operatorUser": "the operators' user is made at a node's first boot",
    "vm.installPackages": "packages are installed at a node's first boot only",
    "labNetns": "the stack's nodes live in the lab it was deployed into",
    "uri": "every object on that hypervisor would be replaced at once",
    "poolPath": "every volume in the pool would be replaced at once",
}


def _why(key: str) -> str:
    return next(w for k, w in FIXED_WHY.items() if key.startswith(k) or key.lower().endswith(k.split(".")[-1].lower()))


@dataclass(frozen=True)
class Step:
    node: str
    role: str
    action: str  # create | replace | restart | same
    changes: tuple[str, ...] = ()

    def line(self, i: int, n: int, s: Settings) -> str:
        role = "web" if self.role == "web" else ("MASTER" if self.node == s.master.name else "BACKUP")
        what = {"replace": "drain, replace (fresh disk and seed), boot, check, admit",
                "restart": "drain, restart in place (same disk, UUID and MAC), check, admit",
                "create": "create, boot, check, admit"}[self.action]
        return f"roll {i}/{n}: {self.node} ({role}): {what}" + (f" [{'; '.join(self.changes)}]" if self.changes else "")


def _norm(v: Any) -> Any:
    """A value as read back from the stack's outputs compares equal to the program's: no null members
    (outputs drop them), whole floats as integers (outputs keep numbers as floats)."""
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _show(v: Any) -> str:
    return v[:12] if isinstance(v, str) and len(v) >= 40 else json.dumps(v)


def _changes(old: dict, new: dict) -> tuple[str, ...]:
    a, b = _flat(_norm(old)), _flat(_norm(new))
    return tuple(f"{k} {_show(a.get(k))} -> {_show(b.get(k))}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def plan(s: Settings, identities: dict[str, dict], previous: dict | None) -> tuple[list[Step], list[str]]:
    """The steps in roll order and the problems (one line each, `key = value: why, what to do`) that refuse
    the change. No previous deployment: every node is created, nothing rolls."""
    prev_nodes = (previous or {}).get("nodes") or {}
    steps = []
    for node in order(s):
        old, new = _norm(prev_nodes.get(node.name)), _norm(identities[node.name])
        if old is None:
            steps.append(Step(node.name, node.role, "create"))
        elif old.get("replace") != new["replace"]:
            steps.append(Step(node.name, node.role, "replace", _changes(old, new)))
        elif old.get("restart") != new["restart"]:
            steps.append(Step(node.name, node.role, "restart", _changes(old, new)))
        else:
            steps.append(Step(node.name, node.role, "same"))
    problems = []
    now_fixed, was_fixed = _norm(fixed(s)), _norm((previous or {}).get("fixed") or {})
    for key in sorted(set(was_fixed) | set(now_fixed)) if was_fixed else ():
        now, was = now_fixed.get(key), was_fixed.get(key)
        if now != was:
            problems.append(f"{key} = {json.dumps(now)}: cannot change on a deployed stack (it is {json.dumps(was)}): "
                            f"{_why(key)}; deploy a new stack for it, or set it back")
    problems += _shrunk(s, steps, prev_nodes)
    if not s.rollout.allow_downtime:
        problems += _alone(s, {st.node for st in steps if st.action in ("replace", "restart")})
        problems += unpinned(s, prev_nodes)
    return steps, problems


def unpinned(s: Settings, prev_nodes: dict) -> list[str]:
    """Deployed nodes whose SSH host keys the stack does not know (deployed before pinned host keys): the
    rolling gates refuse to log in to them, so their replacement needs rollout.allowDowntime (the gates are
    then skipped where a node's key is unknown; nothing is sent to it)."""
    names = [n.name for n in order(s) if n.name in prev_nodes
             and ((prev_nodes[n.name] or {}).get("replace") or {}).get("hostKey") != HOST_KEYS]
    if not names:
        return []
    return [f"nodes {', '.join(names)}: deployed before pinned SSH host keys, so the stack does not know their "
            "host keys and the rolling gates (drain, admit) cannot log in to them; each is replaced to get its "
            "pinned key: set rollout.allowDowntime true for this one `pulumi up` (the gates are skipped where a "
            "node's key is unknown), then set it back"]


def _shrunk(s: Settings, steps: list[Step], prev_nodes: dict) -> list[str]:
    """A node that keeps its disk (restarted or unchanged, not replaced) cannot get a smaller one: the volume only
    grows (shrinking it would cut the guest's filesystem). Unset after a size was set counts as smaller: the disk
    would stay at the deployed size while the settings say the image's."""
    found = []
    nodes = {n.name: n for n in s.nodes}
    for st in steps:
        if st.action not in ("restart", "same"):
            continue
        was = _norm(prev_nodes[st.node]).get("restart", {}).get("diskGiB")
        now = nodes[st.node].disk_gib
        if was is not None and (now is None or now < was):
            found.append(f"{disk_key(s, nodes[st.node])} = {json.dumps(now)}: {st.node}'s disk is {was} GiB on the "
                         f"deployed stack and a disk only grows (shrinking would cut its filesystem); set it to {was} "
                         "or more")
    return found


def _alone(s: Settings, rolling: set[str]) -> list[str]:
    """A rolling web node that is the only one of its tier or of a routing pool leaves it with no server."""
    hint = "add another node first (scale out, then change), or set rollout.allowDowntime true to accept the outage"
    webs = [w.name for w in s.web_nodes]
    if len(webs) == 1 and webs[0] in rolling:
        return [f"webNodes = {json.dumps(webs)}: restarting or replacing {webs[0]} leaves no web node serving "
                f"meanwhile; {hint}"]
    return [f"nginx.routing.pools.{p.name} = {json.dumps(list(p.members))}: restarting or replacing {p.members[0]} "
            f"leaves the pool without a server meanwhile; {hint}"
            for p in s.nginx.pools if len(p.members) == 1 and p.members[0] in rolling]


def record(s: Settings, identities: dict[str, dict]) -> dict:
    """The stack output `rollout`: what the next deployment compares against (no secrets)."""
    return {"version": VERSION, "order": [n.name for n in order(s)], "nodes": identities, "fixed": fixed(s)}
