"""The stack's previous deployment, read back from its own outputs (a StackReference to itself).

The rolling plan compares against it: which nodes exist (a deployed stack rolls its changes one node at
a time; a cold `up` creates every node at once) and what each node's VM was made of. The engine reads the
last checkpoint of this stack, in preview too; a stack that never deployed has no outputs.
"""

from __future__ import annotations

import pulumi

OUTPUTS = ("nodes", "rollout")


def previous_deployment() -> pulumi.Output[dict]:
    """{"nodes": <the `nodes` output or None>, "rollout": <the `rollout` output or None>}."""
    me = pulumi.StackReference(f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}")
    return pulumi.Output.all(*(me.get_output(k) for k in OUTPUTS)).apply(lambda v: dict(zip(OUTPUTS, v, strict=True)))
