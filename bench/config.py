"""The bench stacks' configuration: the dev stack's config moved to a subnet of their own (as the e2e test
does), with the lab host allowed to reach the web nodes directly (for the overhead baseline); the dev2
stack's (two hypervisors) moved to addresses and a VRRP router id of their own on the lab's one segment."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

from components.cluster import HOST_LOST_DRILL, LOAD_DRILLS
from verifier.actions import lab_run_dir
from verifier.drills import BENCH_KINDS, SEVERAL_HOSTS_KINDS

DEV_PREFIX = "192.168.81."
# One subnet per bench profile: neither dev (81) nor e2e (91).
SUBNETS = {"reference": "192.168.101", "fast": "192.168.102"}
KINDS = BENCH_KINDS
# A powered-off master boots again (~40 s under TCG) before it takes the VIP back: steps may take this long.
STEP_TIMEOUT = 240

# The two-hypervisor profile: Pulumi.dev2.yaml on the lab's hv1 and hv2 (make lab HOSTS=2). They share one
# L2 segment whose subnet the lab fixes (its own address on it is the gateway), so the bench stack keeps the
# subnet and takes other host addresses and another VRID than the dev2 stack: both can exist at once.
TWO_HOSTS = "two-hosts"
# The same stack with the fast VRRP profile, after the reference rounds: the hypervisor lost again.
TWO_HOSTS_FAST = "two-hosts-fast"
PROFILES = (*SUBNETS, TWO_HOSTS, TWO_HOSTS_FAST)
DEV2_PREFIX = "192.168.85."
TWO_HOSTS_HOSTS = {"vip": 150, "lb01": 151, "lb02": 152, "web01": 153, "web02": 154}
TWO_HOSTS_VRID = 62  # dev2: 52
# What the two-host profile may drill (every one-host kind works there too); by default the host lost.
TWO_HOSTS_KINDS = (*KINDS, *SEVERAL_HOSTS_KINDS)
TWO_HOSTS_DEFAULT_KINDS = ("host_lost",)
LAB_HOSTS_MARKER = "hosts/hv1"  # written by make lab HOSTS=2 under the lab's run directory


def stack_config(dev_yaml: str, stack: str, profile: str, failover_drill: bool = True) -> dict[str, Any]:
    """Pulumi.<stack>.yaml's `config` for a bench stack of `profile` (reference: the dev config as it is;
    fast: vrrp {profile: fast} instead of the dev stack's explicit VRRPv2 keys, which would override it)."""
    if profile not in SUBNETS:
        raise ValueError(f"unknown profile {profile!r}: {', '.join(SUBNETS)}")
    config = dict(yaml.safe_load(dev_yaml.replace(DEV_PREFIX, f"{SUBNETS[profile]}."))["config"])
    network = dict(config.get("hacluster:network") or {})
    network["name"] = f"hacluster-{stack}"
    config["hacluster:network"] = network
    gateway = next(ipaddress.IPv4Network(network.get("cidr", f"{SUBNETS[profile]}.0/24")).hosts())
    firewall = dict(config.get("hacluster:firewall") or {})
    firewall["webHttpFrom"] = [f"{gateway}/32"]  # the lab host side of the bridge: wrk's direct baseline
    config["hacluster:firewall"] = firewall
    if profile == "fast":
        config["hacluster:vrrp"] = {"profile": "fast"}
    verify = dict(config.get("hacluster:verify") or {})
    verify["failoverDrill"] = failover_drill
    config["hacluster:verify"] = verify
    return config


def raw_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Stack config keys without the project prefix, as model.settings.load wants them."""
    return {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("hacluster:")}


def drill_spec(base: dict[str, Any], kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """The verifier spec (components.cluster.verifier_spec) for the bench's drill rounds, at full length
    (without the stack verification's quick-form timings)."""
    base = {k: v for k, v in base.items() if k not in {**HOST_LOST_DRILL, **LOAD_DRILLS}}
    return {**base, "drill": True, "drillKinds": list(kinds), "stepTimeout": STEP_TIMEOUT, "timeout": 600}


def subnet(profile: str) -> str:
    """The profile's subnet (CIDR)."""
    return f"{DEV2_PREFIX}0/24" if profile in (TWO_HOSTS, TWO_HOSTS_FAST) else f"{SUBNETS[profile]}.0/24"


def two_hosts_config(dev2_yaml: str, stack: str, failover_drill: bool = True, fast: bool = False) -> dict[str, Any]:
    """Pulumi.<stack>.yaml's `config` for the two-hypervisor bench stack: dev2's, on TWO_HOSTS_HOSTS and
    TWO_HOSTS_VRID, its libvirt network named after the stack; `fast`: vrrp {profile: fast} instead of
    dev2's explicit VRRPv2 timing (as the one-host fast profile does)."""
    config = dict(yaml.safe_load(dev2_yaml)["config"])
    ip = lambda key: f"{DEV2_PREFIX}{TWO_HOSTS_HOSTS[key]}"  # noqa: E731
    config["hacluster:vip"] = ip("vip")
    for key in ("hacluster:balancers", "hacluster:webNodes"):
        config[key] = [{**n, "ip": ip(n["name"])} for n in config[key]]
    config["hacluster:network"] = {**config["hacluster:network"], "name": f"hacluster-{stack}"}
    config["hacluster:vrrp"] = ({"profile": "fast"} if fast else config["hacluster:vrrp"]) | {"virtualRouterId": TWO_HOSTS_VRID}
    config["hacluster:verify"] = {**(config.get("hacluster:verify") or {}), "failoverDrill": failover_drill}
    return config


def two_hosts_missing(run_dir: str | None = None) -> str | None:
    """Why the two-hypervisor profile cannot run here (None: the lab has its hypervisors)."""
    root = Path(run_dir) if run_dir else lab_run_dir()
    if not (root / LAB_HOSTS_MARKER).exists():
        return f"the lab has no hypervisors ({root / LAB_HOSTS_MARKER} is missing: make lab HOSTS=2)"
    return None
