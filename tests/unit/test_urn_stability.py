"""A stack without `hypervisors` keeps its resources: the dev stack's URNs (and each resource's provider)
are the ones recorded in tests/unit/data/dev-urns.txt. Re-record only on purpose:

    venv/bin/python -m tests.unit.test_urn_stability
"""

import pulumi
import yaml
from pulumi.runtime.mocks import MockMonitor

from model.settings import HostFacts, load
from tests.conftest import ROOT
from tests.unit.test_graph_mocks import MockLibvirt

RECORDED = ROOT / "tests/unit/data/dev-urns.txt"
STACK_TYPE = "pulumi:pulumi:Stack"


class EngineUrns(MockMonitor):
    """URNs as the engine makes them: the parent's whole qualified type chain (the stock mock keeps only
    the parent's last type) and nothing for the root stack."""

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        if parent and parent.split("::")[2] != STACK_TYPE:
            type_ = f"{parent.split('::')[2]}${type_}"
        return "urn:pulumi:" + "::".join([pulumi.get_stack(), pulumi.get_project(), type_, name])


def dev_config() -> dict:
    raw = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: v for k, v in raw.items()}


def record(raw: dict) -> pulumi.Output:
    """Build the stack under mocks; resolves to sorted lines `URN [provider URN]`."""
    from components import HaCluster, HaClusterArgs

    mocks = MockLibvirt()
    monitor = EngineUrns(mocks)
    pulumi.runtime.set_mocks(mocks, project="hacluster", stack="dev", preview=False, monitor=monitor)
    cluster = HaCluster("hacluster", HaClusterArgs(load(raw, "dev", ROOT, HostFacts(True, False))))
    waits = [*cluster.domain_names, cluster.private_key, *([cluster.verification] if cluster.verification else [])]

    def lines(_):
        providers = {r.name: r.provider.rsplit("::", 1)[0] for r in mocks.resources if r.provider}
        return sorted(f"{urn} {providers.get(urn.rsplit('::', 1)[1], '')}".strip() for urn in monitor.resources)
    return pulumi.Output.all(*waits).apply(lines)


@pulumi.runtime.test
def test_dev_stack_keeps_its_urns_and_providers():
    def check(lines):
        want = RECORDED.read_text().splitlines()
        assert lines == want, "\n".join(["URNs changed:"] + [f"- {x}" for x in want if x not in lines]
                                        + [f"+ {x}" for x in lines if x not in want])
    return record(dev_config()).apply(check)


if __name__ == "__main__":
    import asyncio

    async def main():
        lines = await record(dev_config()).future()
        RECORDED.write_text("\n".join(lines) + "\n")
        print(f"recorded {len(lines)} URNs in {RECORDED}")

    asyncio.run(main())
