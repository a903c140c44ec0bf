"""The bench stacks' configuration: the dev stack's config moved to a subnet of their own (as the e2e test
does), with the lab host allowed to reach the web nodes directly (for the overhead baseline)."""

from __future__ import annotations

import ipaddress
from typing import Any

import yaml

DEV_PREFIX = "192.168.81."
# One subnet per bench profile: neither dev (81) nor e2e (91).
SUBNETS = {"reference": "192.168.101", "fast": "192.168.102"}
KINDS = ("keepalived", "nginx_kill", "hard", "poweroff", "switchover",
         "web_freeze", "web_poweroff", "lb_starve", "vrrp_cut")
# A powered-off master boots again (~40 s under TCG) before it takes the VIP back: steps may take this long.
STEP_TIMEOUT = 240


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
    """The verifier spec (components.cluster.verifier_spec) for the bench's drill rounds."""
    return {**base, "drill": True, "drillKinds": list(kinds), "stepTimeout": STEP_TIMEOUT, "timeout": 600}
