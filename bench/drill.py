"""`python -m bench drill --spec FILE --rounds N --out FILE`: the verifier's drill, round after round.

Runs inside the lab namespace only (bench.cli starts it with `ip netns exec`); refuses anywhere else.
It is the verifier itself (verifier.run.Verifier over SshActions, its Prober and longest-gap logic): first
the cluster must be healthy (VIP, both balancers, one holder: the MASTER), then each round breaks and
repairs the MASTER once per drill kind of the spec. The output: per round, each step's gap, failed probes,
when the VIP moved and when the new holder served; for the first round also every probe (for the timeline).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from verifier import netns
from verifier.actions import ActionError, SshActions
from verifier.cancel import CANCEL, Cancelled
from verifier.cli import KEY_PREFIX, key_file, pinned
from verifier.hostkeys import HostKeyError
from verifier.run import KINDS, Verifier
from verifier.spec import LOAD_KINDS, SpecError, from_dict

from .lab import NETNS, progress


def rounds(v: Verifier, kinds: list[str], n: int, timeline_round: int = 0) -> tuple[list[dict], dict | None]:
    """Drill `n` rounds; stop at the first round with a failed check (the cluster is broken)."""
    out, timeline = [], None
    for r in range(n):
        progress(f"drill round {r + 1}/{n}: {', '.join(kinds)}")
        began = time.monotonic()
        failed_before = sum(not c.passed for c in v.checks)
        v.gaps = {}
        v.drill(kinds)
        steps = {}
        for kind in kinds:
            if kind in LOAD_KINDS:  # one measurement under load, no break/restore pair
                if kind in v.gaps:
                    steps[kind] = {**v.gaps[kind], "kind": kind, "role": "load"}
                continue
            k = KINDS[kind]
            for role, step in (("break", k.break_step), ("restore", k.restore_step)):
                if step in v.gaps:
                    w = v.windows[step]
                    steps[step] = {**v.gaps[step], "kind": kind, "role": role,
                                   "start_s": round(w.start - began, 3), "end_s": round(w.end - began, 3)}
        out.append({"round": r + 1, "steps": steps})
        if r == timeline_round:
            timeline = {"t0": 0.0, "probes": [[round(p.t - began, 3), p.ok, p.balancer, p.node, p.error]
                                              for p in v.timeline],
                        "marks": [{"step": s, "kind": d["kind"], "role": d["role"], "t": d["start_s"], "end": d["end_s"],
                                   "gap_s": d["gap_s"], "failed_probes": d["failed_probes"]}
                                  for s, d in steps.items() if d["role"] != "load"]}
        if sum(not c.passed for c in v.checks) > failed_before:
            break
    return out, timeline


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench drill")
    ap.add_argument("--spec", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        netns.check_inside(NETNS)
        spec = from_dict(json.loads(Path(args.spec).read_text()))
    except (netns.NamespaceError, SpecError, OSError, ValueError) as e:
        print(f"bench drill: {e}", file=sys.stderr)
        return 2
    with CANCEL.installed(progress):  # a signal unwinds through the drill's restore and the key's removal
        result = _drill(spec, args)
    Path(args.out).write_text(json.dumps(result))
    for c in result.get("checks", []):
        if not c["passed"]:
            print(f"FAILED {c['name']}: {c['detail']}", file=sys.stderr, flush=True)
    return 0 if result["passed"] else 1


def _drill(spec, args) -> dict:
    from verifier.cancel import sweep_stale

    sweep_stale(KEY_PREFIX, log=progress)
    result: dict = {"passed": False, "rounds": [], "timeline": None}
    v = None
    try:
        # env HACLUSTER_HOST_KEYS: the balancers' host keys, from the stack output hostKeys; the known_hosts
        # file in the key's private dir (removed with it, also on a signal)
        with key_file() as key, pinned(spec, os.path.dirname(key) if key else None) as known:
            actions = SshActions(spec, key, known)
            v = Verifier(spec, actions, log=lambda m: progress(f"verifier: {m}"))
            try:
                vip_ok, lbs_ok = v.wait_ready()
                holder_ok = v.check_holder()
                if vip_ok and lbs_ok and holder_ok:
                    result["rounds"], result["timeline"] = rounds(v, list(spec.drill_kinds), args.rounds)
                else:
                    v.check("failover_drill", False, "not run: the cluster was not healthy before it")
            finally:
                v._pool.shutdown(wait=True, cancel_futures=True)
        result["checks"] = [asdict(c) for c in v.checks]
        result["passed"] = bool(v.checks) and all(c.passed for c in v.checks)
    except (ActionError, HostKeyError) as e:
        result["checks"] = [{"name": "environment", "passed": False, "detail": str(e)}]
    except Cancelled as e:
        result["checks"] = [*(asdict(c) for c in (v.checks if v else [])),
                            {"name": "interrupted", "passed": False, "detail": f"the bench drill was {e}"}]
    return result
