"""FailoverCheck: runs the project's verifier on the deploy host once every VM is up.

Re-runs whenever the spec or any VM changes (triggers). A failed check fails `pulumi up` with one
line per failed check; the JSON report becomes the stack output `verification`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pulumi
from pulumi_command import local

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class FailoverCheckArgs:
    spec: dict
    """What to verify (verifier/spec.py documents the keys); no secrets in here."""
    private_key: pulumi.Input[str]
    """SSH private key (a secret), handed to the verifier through its environment only."""
    host_keys: pulumi.Input[str]
    """The balancers' public SSH host keys, JSON {name: key} (env HACLUSTER_HOST_KEYS): the verifier pins them."""
    depends_on: list[pulumi.Resource]
    """Every VM: the check runs after all of them."""
    triggers: list[pulumi.Input]
    """Values whose change re-runs the check (domain ids, rendered configs' hashes)."""


class FailoverCheck(pulumi.ComponentResource):
    report: pulumi.Output[dict]

    def __init__(self, name: str, args: FailoverCheckArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hacluster:index:FailoverCheck", name, {}, opts)
        spec = json.dumps(args.spec, sort_keys=True)
        cmd = local.Command(
            f"{name}-verify",
            create=f"{sys.executable} -m verifier",
            dir=str(PROJECT_ROOT),
            environment={"HACLUSTER_VERIFY_SPEC": spec, "HACLUSTER_SSH_KEY": args.private_key,
                         "HACLUSTER_HOST_KEYS": args.host_keys, "PYTHONUNBUFFERED": "1"},
            triggers=[spec, *args.triggers],
            logging=local.Logging.STDERR,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        # The command provider marks stdout secret because the environment holds the key; the report
        # itself never carries it (the verifier prints no secret), so the stack output stays readable.
        self.report = pulumi.Output.unsecret(cmd.stdout).apply(json.loads)
        self.register_outputs({"report": self.report})
