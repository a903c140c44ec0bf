"""hacluster: two nginx web nodes behind an nginx + keepalived balancer pair on libvirt."""

import json
import os
import sys
from pathlib import Path

import pulumi

from components import HaCluster, HaClusterArgs, quiet
from components.previous import previous_deployment
from model.passphrase import backend_url, refusal
from model.settings import SettingsError, load

PROJECT = pulumi.get_project()
quiet.install()  # the engine's interrupt at an early end: no KeyboardInterrupt traceback


def raw_config() -> dict:
    """Every `hacluster:*` key of the stack, structured values decoded (validation is model.settings)."""
    raw = {}
    for full, value in pulumi.runtime.get_config_env().items():
        project, _, key = full.partition(":")
        if project != PROJECT:
            continue
        try:
            raw[key] = json.loads(value) if value[:1] in "[{" or value in ("true", "false") else value
        except json.JSONDecodeError:
            raw[key] = value
    return raw


try:
    settings = load(raw_config(), pulumi.get_stack(), Path(__file__).parent)
except SettingsError as err:
    # Fail before any resource is registered, with one line per problem.
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
# The built-in passphrase (the Makefile's, model/passphrase.py) encrypts lab stacks on the file backend only.
problem = refusal(settings.lab_netns, backend_url(os.environ), os.environ)
if problem:
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(1)

cluster = HaCluster("hacluster", HaClusterArgs(settings, previous=previous_deployment()))

pulumi.export("vip", cluster.vip)
pulumi.export("vipUrl", f"http://{cluster.vip}/")
pulumi.export("nodes", cluster.nodes)
pulumi.export("domainType", settings.hypervisor(settings.master).domain_type)
pulumi.export("labNetns", settings.lab_netns)
pulumi.export("sshPrivateKey", cluster.private_key)
# Each node's public SSH host key (not secret): pin it (`<ip> <key>` in a known_hosts) before logging in.
pulumi.export("hostKeys", cluster.host_keys)
# What the next deployment rolls against (components/previous.py): each node's VM identity.
pulumi.export("rollout", cluster.rollout)
if cluster.verification is not None:
    pulumi.export("verification", cluster.verification)
