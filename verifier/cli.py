"""Entry point: read the spec, the key and the nodes' host keys, enter the lab namespace, run, print one JSON
report.

stdout carries only the JSON report (the stack output `verification`); progress and one
"FAILED <check>: <reason>" line per failed check go to stderr. Exit 0 passed, 1 a check failed,
2 the verifier could not run (bad spec, missing namespace).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from . import hostkeys, netns
from .actions import ActionError, NetnsActions, SshActions
from .cancel import CANCEL, Cancelled, private_key, sweep_stale
from .run import Verifier, progress
from .spec import Spec, SpecError, parse

SPEC_ENV = "HACLUSTER_VERIFY_SPEC"
KEY_ENV = "HACLUSTER_SSH_KEY"
REEXEC_ENV = "HACLUSTER_VERIFY_REEXEC"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def enter_netns(spec: Spec, argv: list[str]) -> None:
    """Return when this process is where its connections must start from; else re-exec or refuse."""
    name = spec.netns
    if name is None:
        if spec.actions == "netns":
            raise netns.NamespaceError("netns actions need spec netns (the client namespace)")
        return  # a real hypervisor: run from the deploy host
    if not netns.exists(name):
        raise netns.NamespaceError(f"network namespace {name!r} does not exist (is the lab up? `make lab`); refusing "
                                   "to probe lab addresses from anywhere else")
    if netns.in_named(name):
        return
    if not netns.in_root():
        raise netns.NamespaceError(f"running in a network namespace that is neither {name!r} nor the root one: refusing")
    if os.environ.get(REEXEC_ENV):
        raise netns.NamespaceError(f"re-exec under `ip netns exec {name}` did not land in {name!r}")
    env = dict(os.environ, **{REEXEC_ENV: name})
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    progress(f"entering network namespace {name}")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe("ip", ["ip", "netns", "exec", name, sys.executable, "-m", "verifier", *argv], env)


KEY_PREFIX = "hacluster-verify"


def key_file() -> contextlib.AbstractContextManager[str | None]:
    """The SSH key from the environment in a private directory (0700, file 0600), removed when the block
    ends, also on a signal; never printed. Without a key: None."""
    key = os.environ.get(KEY_ENV, "")
    return private_key(key, KEY_PREFIX) if key.strip() else contextlib.nullcontext(None)


def pinned(spec: Spec, directory: str | None = None) -> hostkeys.KnownHosts:
    """The run's known_hosts (in `directory` when given): the host key of every balancer the ssh actions log
    in to (env HACLUSTER_HOST_KEYS)."""
    keys = hostkeys.parse(os.environ.get(hostkeys.ENV, ""), [b.name for b in spec.balancers])
    return hostkeys.KnownHosts(keys, {b.name: b.ip for b in spec.balancers}, directory)


def failure(name: str, detail: str) -> dict:
    return {"passed": False, "checks": [{"name": name, "passed": False, "detail": detail}], "gaps": {},
            "holder": None, "distribution": {}, "durations": {}}


def emit(report: dict, rc: int | None = None) -> int:
    print(json.dumps(report, sort_keys=True), flush=True)
    for c in report["checks"]:
        if not c["passed"]:
            print(f"FAILED {c['name']}: {c['detail']}", file=sys.stderr, flush=True)
    return rc if rc is not None else (0 if report["passed"] else 1)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m verifier", description=__doc__.splitlines()[0])
    ap.add_argument("--spec", metavar="FILE", help=f"the spec as a JSON file (default: env {SPEC_ENV})")
    args = ap.parse_args(argv)
    # SIGTERM (a cancelled `pulumi up`), SIGINT, SIGHUP: the drill's restore and the key's removal run,
    # within verifier.cancel.BUDGET_S (verifier/cancel.py). The re-exec into the namespace keeps the PID
    # and installs them again.
    with CANCEL.installed(progress):
        try:
            try:
                text = Path(args.spec).read_text() if args.spec else os.environ.get(SPEC_ENV, "")
                if not text.strip():
                    raise SpecError(f"no spec: pass --spec FILE or set {SPEC_ENV}")
                spec = parse(text)
                enter_netns(spec, argv)
            except (SpecError, netns.NamespaceError, OSError, ValueError) as e:
                return emit(failure("environment", str(e)), rc=2)
            return _run(spec)
        except Cancelled as e:  # before the run began: nothing to restore
            return emit(interrupted(None, e), rc=e.exit_code)


def _run(spec: Spec) -> int:
    sweep_stale(KEY_PREFIX, log=progress)
    actions = verifier = None
    try:
        with key_file() as key:
            # the known_hosts file goes in the key's private dir (removed with it, also on a signal)
            with pinned(spec, os.path.dirname(key) if key else None) if spec.actions == "ssh" \
                    else contextlib.nullcontext(None) as known_hosts:
                actions = SshActions(spec, key, known_hosts) if spec.actions == "ssh" else NetnsActions(spec)
                verifier = Verifier(spec, actions)
                try:
                    report = verifier.run()
                finally:
                    actions.close()
    except (ActionError, hostkeys.HostKeyError) as e:
        return emit(failure("environment", str(e)), rc=2)
    except Cancelled as e:
        return emit(interrupted(verifier.report() if verifier is not None else None, e), rc=e.exit_code)
    except Exception as e:  # one line for the user, never a traceback
        return emit(failure("internal", f"the verifier failed: {type(e).__name__}: {e}"), rc=2)
    return emit(report)


def interrupted(report: dict | None, e: Cancelled) -> dict:
    """The report of a cancelled run: what was checked until then, and one failed check saying so."""
    report = report or failure("interrupted", "")
    checks = [c for c in report["checks"] if c["name"] != "interrupted"]
    restored = next((c for c in checks if c["name"] == "cluster_restored"), None)
    after = ("" if restored is None else "; the drill's changes were undone (cluster_restored)" if restored["passed"]
             else "; undoing the drill's changes failed (see cluster_restored)")
    checks.append({"name": "interrupted", "passed": False, "detail": f"the verifier was {e}{after}"})
    return {**report, "passed": False, "checks": checks}
