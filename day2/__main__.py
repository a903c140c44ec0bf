"""Deploy side of a day-2 change: `python -m day2` (run by each node's config command resource), and
`python -m day2 drain` (its drain command, before a rolling restart or replacement: day2/gate.py).

Env: HACLUSTER_DAY2_SPEC = {"node", "ip", "sshUser", "netns", "timeout", "console"?, "limit"?},
HACLUSTER_NODE_FILES = [{"path", "content", "mode"}] (a secret: it can hold the VRRP password),
HACLUSTER_SSH_KEY (secret), HACLUSTER_HOST_KEYS = {name: public host key} of the node and the balancers
(verifier/hostkeys.py: every connection pins the node's key; another key is refused in one line).
Waits for cloud-init to finish on the node for as long as its boot makes progress (verifier/progress.py:
the stage, read over SSH and from the serial console log "console", changes, or the log grows):
"timeout" is the longest stretch without progress, "limit" an optional cap on the whole wait. Each
stage is printed as it is reached ("lb02: cloud-init modules:config (212 s)"). Then it runs
day2/apply.py on the node as root with the files on stdin.
For lab stacks every connection starts inside the lab namespace (`ip netns exec`), never from the
root one. Prints the node's JSON answer; exit 2 with the reason when the node refused the change. Then
the node's gate: a drained node is admitted again once it serves (day2/gate.py).
SIGTERM (a cancelled `pulumi up`), SIGINT and SIGHUP end it within seconds, exit 128+signal, with one line;
the key lives in a private directory (0700) that is removed however the run ends (verifier/cancel.py).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from day2 import gate
from day2.spec import Day2Spec
from verifier import hostkeys, netns, progress
from verifier.actions import ssh_argv
from verifier.cancel import CANCEL, Cancelled, private_key, sweep_stale

APPLY_TIMEOUT_S = 180.0
KEY_PREFIX = "hacluster-day2"
APPLY = (Path(__file__).resolve().parent / "apply.py").read_text()


def log(msg: str) -> None:
    print(f"day2: {msg}", file=sys.stderr, flush=True)


def node_name() -> str:
    try:
        return str(json.loads(os.environ.get("HACLUSTER_DAY2_SPEC", "{}")).get("node", "?"))
    except (ValueError, AttributeError):
        return "?"


# One cheap look at the node per poll: `cat`s only (`cloud-init status` is a Python process of its own,
# seconds of CPU on a starved guest).
PROBE = ("cat /run/cloud-init/status.json 2>/dev/null; echo; echo @@result@@; "
         "cat /run/cloud-init/result.json 2>/dev/null; echo; echo @@ready@@; "
         "test -e /run/hacluster-ready && echo ready; true")
POLL_S = 1.0  # the console (a file) is read every second
PROBE_S = 4.0  # SSH at most this often
RARE_PROBE_S = 30.0
SSH_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 30.0


def probe(node: str, ssh: list[str], known: hostkeys.KnownHosts) -> str | None:
    """The node's cloud-init stage over SSH, or None when SSH does not answer (yet); gate.Refused when the
    node presents another host key than the stack's."""
    try:
        r = subprocess.run([*ssh, PROBE], capture_output=True, text=True, timeout=SSH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    refused = known.refusal(node, r.stderr) if r.returncode == 255 else None
    if refused:
        raise gate.Refused(refused)
    if r.returncode != 0 or "@@result@@" not in r.stdout:
        return None
    status, _, rest = r.stdout.partition("@@result@@")
    result, _, ready = rest.partition("@@ready@@")
    if ready.strip() == "ready":  # the golden image's hacluster-ready.service ran: this boot is done
        return progress.DONE
    stage, errors = progress.status_stage(status, result)
    if errors:
        log(f"{node}: cloud-init reported errors: {'; '.join(errors)[:300]}")
    return stage


def should_probe(have_console: bool, stage: str | None, now: float, last_probe: float | None,
                 started: float = 0.0) -> bool:
    """Whether to look at the node over SSH now. Without a console to follow: every PROBE_S. With one:
    every PROBE_S from the last cloud-init stage on (that is when result.json appears), before that only
    every RARE_PROBE_S, counted from the start (a booting node's SSH would only time out)."""
    if not have_console or progress.rank(stage) >= progress.rank("cloud-init modules:final"):
        return last_probe is None or now - last_probe >= PROBE_S
    return now - (started if last_probe is None else last_probe) >= RARE_PROBE_S


def wait_booted(spec: dict, ssh: list[str], known: hostkeys.KnownHosts) -> str | None:
    """Wait for cloud-init to finish on the node while its boot makes progress; None when done, else
    the one line saying where it is stuck and what to do."""
    node, console = spec["node"], spec.get("console")
    where = f"read {console}" if console else "look at the VM's serial console (virsh console)"
    follower = progress.Follower(
        node=node, stall=float(spec.get("timeout", 600)), limit=spec.get("limit"),
        hint=(f"what to do: {where}, check the host's CPU load (a busy host makes boots slow), then run "
              f"`pulumi up` again; raise hacluster:verify.timeout (now {spec.get('timeout', 600)} s) to wait "
              "longer for a boot that makes no progress"))
    best, last_probe, started = None, None, time.monotonic()
    while True:
        size, text = progress.read_console(console)
        seen = progress.console_stage(text)
        # Every SSH login costs the booting guest CPU (key exchange, a session, a shell): with a
        # console to follow, ask over SSH only once the console shows the last stage (or rarely).
        now = time.monotonic()
        stage = None
        if should_probe(size is not None, progress.best_stage(seen, best), now, last_probe, started):
            stage, last_probe = probe(node, ssh, known), now
        best = progress.best_stage(seen, stage, best)
        verdict = follower.observe(time.monotonic(), best, size, progress.tail_lines(text))
        if verdict.line and verdict.status != "stuck":
            log(verdict.line)
        if verdict.status == "done":
            return None
        if verdict.status == "stuck":
            return verdict.line
        time.sleep(POLL_S)


def apply(spec: dict, ssh: list[str], files: str, known: hostkeys.KnownHosts,
          hold: bool = False) -> subprocess.CompletedProcess | None:
    """Run apply.py on the node. SSH failures to connect (exit 255 without an answer: a loaded node
    can take long to show its banner) are retried for up to `timeout` seconds; staging is idempotent.
    None (after one line saying why) when it never got through."""
    code = base64.b64encode(APPLY.encode()).decode()
    payload = json.dumps({"node": spec["node"], "files": json.loads(files), "holdVrrpTiming": hold})
    stall = float(spec.get("timeout", 600))
    start = time.monotonic()
    while True:
        try:
            r = subprocess.run([*ssh, f"sudo -n python3 -c \"import base64;exec(base64.b64decode('{code}'))\""],
                               input=payload, capture_output=True, text=True, timeout=APPLY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log(f"{spec['node']}: applying the config did not finish within {APPLY_TIMEOUT_S:.0f} s; the node is "
                "up but overloaded or hung: check the host's load, then run `pulumi up` again")
            return None
        if not (r.returncode == 255 and not r.stdout.strip()):
            return r
        refused = known.refusal(spec["node"], r.stderr)
        if refused:
            raise gate.Refused(refused)
        why = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "ssh exit 255"
        if time.monotonic() - start >= stall:
            log(f"{spec['node']}: ssh {spec['ip']} kept failing for {stall:.0f} s ({why}); the node booted but "
                "does not take logins: check the host's load and the node's console, then run `pulumi up` again")
            return None
        log(f"{spec['node']}: ssh did not get through ({why}); retrying")
        time.sleep(POLL_S)


def day2_ssh(user: str, ip: str, key: str, known_hosts: str) -> list[str]:
    """ssh_argv with a longer connect timeout: a booting, starved node can take tens of seconds to
    send its banner (ssh takes the first value of an option, so it is replaced, not appended)."""
    return [f"ConnectTimeout={CONNECT_TIMEOUT_S:.0f}" if a.startswith("ConnectTimeout=") else a
            for a in ssh_argv(user, ip, key, known_hosts)]


def pins(spec: dict) -> tuple[dict[str, str], dict[str, str]]:
    """The run's pinned host keys and IPs: the node's and the balancers' (env HACLUSTER_HOST_KEYS);
    HostKeyError when one is missing or malformed."""
    ips = {spec["node"]: spec["ip"], **{b["name"]: b["ip"] for b in spec["balancers"]}}
    return hostkeys.parse(os.environ.get(hostkeys.ENV, ""), sorted(ips)), ips


def main(argv: list[str]) -> int:
    spec = Day2Spec.model_validate_json(os.environ["HACLUSTER_DAY2_SPEC"]).model_dump(by_alias=True)
    prefix: list[str] = []
    if spec.get("netns"):
        if not netns.exists(spec["netns"]):
            log(f"network namespace {spec['netns']!r} does not exist (is the lab up?); refusing to reach "
                f"{spec['ip']} from anywhere else")
            return 2
        prefix = ["ip", "netns", "exec", spec["netns"]]
    try:
        keys, ips = pins(spec)
    except hostkeys.HostKeyError as e:
        log(f"{spec['node']}: {e}")
        return 2
    sweep_stale(KEY_PREFIX, log=log)
    with private_key(os.environ["HACLUSTER_SSH_KEY"], KEY_PREFIX) as key:
        # the known_hosts file goes in the key's private dir: removed with it, however the run ends
        known = hostkeys.KnownHosts(keys, ips, os.path.dirname(key))
        nodes = gate.Nodes(spec["sshUser"], key, prefix, known)
        try:
            return run(spec, argv, nodes, [*prefix, *day2_ssh(spec["sshUser"], spec["ip"], key, known.path)], known)
        finally:
            with CANCEL.shielded():
                nodes.close()
                known.close()


def run(spec: dict, argv: list[str], nodes: gate.Nodes, ssh: list[str], known: hostkeys.KnownHosts) -> int:
    try:
        if argv[1:] == ["drain"]:
            gate.drain(spec, nodes)
            return 0
        # First boot: let cloud-init finish writing and starting things before anything is compared.
        stuck = wait_booted(spec, ssh, known)
        if stuck:
            log(stuck)
            return 2
        r = apply(spec, ssh, os.environ["HACLUSTER_NODE_FILES"], known, hold=gate.may_hold(spec, nodes))
        if r is None:
            return 2
        answer = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        print(answer)
        if r.returncode != 0:
            reason = json.loads(answer).get("error") if answer.startswith("{") else r.stderr.strip()[-400:]
            log(f"{spec['node']}: change refused: {reason}")
            return 2
        log(f"{spec['node']}: {answer}")
        gate.admit(spec, nodes, held="keepalived" in (json.loads(answer).get("held") or ()))
        return 0
    except gate.Refused as e:
        log(str(e))
        return 2


def guarded() -> int:
    """main(), with every unexpected failure as one line (never a traceback) and exit 2."""
    try:
        with CANCEL.installed(log):
            return main(sys.argv)
    except Cancelled as e:
        log(f"{node_name()}: {e} (the deployment was cancelled or ended early); run `pulumi up` again to finish "
            "this node's change")
        return e.exit_code
    except KeyboardInterrupt:  # SIGINT before the handler was in place
        log(f"{node_name()}: interrupted (the deployment was cancelled or ended early)")
        return 130
    except ValidationError as e:
        why = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        log(f"{node_name()}: invalid day-2 spec (HACLUSTER_DAY2_SPEC): {why}")
        return 2
    except Exception as e:  # the user sees one line, whatever went wrong
        log(f"{node_name()}: internal error: {type(e).__name__}: {' '.join(str(e).split())}")
        return 2


if __name__ == "__main__":
    sys.exit(guarded())
