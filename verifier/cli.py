"""Entry point: read the spec, the key and the nodes' host keys, enter the lab namespace, run, print one JSON
report.

stdout carries only the JSON report (the stack output `verification`); progress and one
"FAILED <check>: <reason>" line per failed check go to stderr. Exit 0 passed, 1 a check failed,
2 the verifier could not run (bad spec, missing namespace).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from . import hostkeys, netns
from .actions import ActionError, NetnsActions, SshActions
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


def write_key() -> str | None:
    """The SSH key from the environment into a 0600 file (deleted by main at exit); never printed."""
    key = os.environ.get(KEY_ENV, "")
    if not key.strip():
        return None
    fd, path = tempfile.mkstemp(prefix="hacluster-verify-", suffix=".key")
    with os.fdopen(fd, "w") as f:
        f.write(key if key.endswith("\n") else key + "\n")
    os.chmod(path, 0o600)
    return path


def pinned(spec: Spec) -> hostkeys.KnownHosts:
    """The run's known_hosts: the host key of every balancer the ssh actions log in to (env HACLUSTER_HOST_KEYS)."""
    keys = hostkeys.parse(os.environ.get(hostkeys.ENV, ""), [b.name for b in spec.balancers])
    return hostkeys.KnownHosts(keys, {b.name: b.ip for b in spec.balancers})


def failure(name: str, detail: str) -> dict:
    return {"passed": False, "checks": [{"name": name, "passed": False, "detail": detail}], "gaps": {},
            "holder": None, "distribution": {}, "durations": {}}


def emit(report: dict, rc: int | None = None) -> int:
    print(json.dumps(report, sort_keys=True), flush=True)
    for c in report["checks"]:
        if not c["passed"]:
            print(f"FAILED {c['name']}: {c['detail']}", file=sys.stderr, flush=True)
    return rc if rc is not None else (0 if report["passed"] else 1)


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds through the drill's restore and the key file's removal


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m verifier", description=__doc__.splitlines()[0])
    ap.add_argument("--spec", metavar="FILE", help=f"the spec as a JSON file (default: env {SPEC_ENV})")
    args = ap.parse_args(argv)
    try:
        text = Path(args.spec).read_text() if args.spec else os.environ.get(SPEC_ENV, "")
        if not text.strip():
            raise SpecError(f"no spec: pass --spec FILE or set {SPEC_ENV}")
        spec = parse(text)
        enter_netns(spec, argv)
    except (SpecError, netns.NamespaceError, OSError, ValueError) as e:
        return emit(failure("environment", str(e)), rc=2)

    signal.signal(signal.SIGTERM, _terminate)
    key_file = None
    known_hosts = None
    actions = None
    try:
        key_file = write_key()
        if spec.actions == "ssh":
            known_hosts = pinned(spec)
            actions = SshActions(spec, key_file, known_hosts)
        else:
            actions = NetnsActions(spec)
        report = Verifier(spec, actions).run()
    except (ActionError, hostkeys.HostKeyError) as e:
        return emit(failure("environment", str(e)), rc=2)
    except KeyboardInterrupt:
        return emit(failure("interrupted", "the verifier was interrupted"), rc=130)
    except Exception as e:  # one line for the user, never a traceback
        return emit(failure("internal", f"the verifier failed: {type(e).__name__}: {e}"), rc=2)
    finally:
        if actions is not None:
            actions.close()
        if key_file:
            Path(key_file).unlink(missing_ok=True)
        if known_hosts is not None:
            known_hosts.close()
    return emit(report)
