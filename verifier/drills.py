"""The one registry of failover drill kinds. The verifier (which kinds exist and what each needs), the
stack's verifier spec (components.cluster: the quick form of the drills under load) and the bench (which
kinds it rounds through, in which order it reports them) all read it; a new kind is one line here plus
its break/repair in verifier/run.py or its run in verifier/scenarios.py."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Drill:
    name: str
    under_load: bool = False  # one measurement under client load (verifier.scenarios), not a break/repair pair
    ssh_only: bool = False  # needs ssh actions (real VMs), not the integration tests' netns actions
    quick: bool = True  # in a lab stack's verification with verify.loadDrills (its quick form)
    bench: bool = True  # in the bench's drill rounds
    hosts: int = 1  # hypervisors it needs
    seconds: dict[str, tuple[int, int]] = field(default_factory=dict)  # spec key -> (quick form, full length)


# Both web drills hold the web node down for the same `webFreezeSeconds`: one declaration for the two.
_WEB_DOWN = {"webFreezeSeconds": (8, 20)}

DRILLS: tuple[Drill, ...] = (
    Drill("keepalived"),
    Drill("nginx", bench=False),
    Drill("nginx_kill"),
    Drill("hard"),
    Drill("poweroff", ssh_only=True),
    Drill("switchover", quick=False),
    Drill("web_freeze", under_load=True, seconds=_WEB_DOWN),
    Drill("web_poweroff", under_load=True, seconds=_WEB_DOWN),
    Drill("lb_starve", under_load=True, ssh_only=True, seconds={"starveSeconds": (20, 60)}),
    Drill("vrrp_cut", under_load=True, seconds={"cutSeconds": (8, 15)}),
    Drill("host_lost", under_load=True, ssh_only=True, hosts=2,
          seconds={"hostFreezeSeconds": (5, 10), "hostDownSeconds": (5, 10)}),
)

DRILL_KINDS = tuple(d.name for d in DRILLS if not d.under_load)  # break/repair pairs (verifier/run.py)
LOAD_KINDS = tuple(d.name for d in DRILLS if d.under_load)
SSH_ONLY_KINDS = tuple(d.name for d in DRILLS if d.ssh_only)
BENCH_KINDS = tuple(d.name for d in DRILLS if d.bench and d.hosts == 1)
SEVERAL_HOSTS_KINDS = tuple(d.name for d in DRILLS if d.hosts > 1)
QUICK_KINDS = [d.name for d in DRILLS if d.quick and d.hosts == 1]  # a list: the spec's JSON drillKinds
FULL_SECONDS = {k: full for d in DRILLS for k, (_, full) in d.seconds.items()}


def quick_form(kinds: tuple[str, ...] | list[str]) -> dict[str, int]:
    """The spec keys of these kinds' quick form (the stack verification's timings), in registry order."""
    return {k: quick for d in DRILLS if d.name in kinds for k, (quick, _) in d.seconds.items()}
