"""A throwaway e2e stack in the project directory: made with its config file, always destroyed, and
checked to leave nothing behind (whatever the test did)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import yaml
from pulumi import automation as auto

from tests.conftest import ROOT
from verifier.actions import ssh_argv
from verifier.hostkeys import KnownHosts

NETNS = os.environ.get("HACLUSTER_NETNS", "halab")
URI = "qemu:///system"
SUBNET = "192.168.91"  # test_recovery.py's stacks: not the dev stack's 192.168.81 (both can exist in one lab)


def stack_config(name: str, subnet: str = SUBNET) -> dict:
    """The dev stack's config moved to `subnet`, with a network named after the stack."""
    text = (ROOT / "Pulumi.dev.yaml").read_text().replace("192.168.81.", f"{subnet}.")
    config = yaml.safe_load(text)["config"]
    config["hacluster:network"]["name"] = f"hacluster-{name}"
    return config


def edit_config(name: str, change) -> None:
    """Change the stack's config file in place (as a person editing Pulumi.<stack>.yaml would)."""
    path = ROOT / f"Pulumi.{name}.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc["config"])
    path.write_text(yaml.safe_dump(doc))


def lab_exec(*cmd, timeout=30) -> subprocess.CompletedProcess:
    """Traffic to lab addresses only from inside the lab namespace."""
    return subprocess.run(["ip", "netns", "exec", NETNS, *cmd], capture_output=True, text=True, timeout=timeout)


def node_ssh(outputs, node: str, command: str, keyfile, user: str = "ops") -> subprocess.CompletedProcess:
    """`command` on `node` as `user` (the automation user; "sysop": the operators'), its host key pinned
    from the stack output hostKeys."""
    ip = outputs["nodes"].value[node]["ip"]
    with KnownHosts({node: outputs["hostKeys"].value[node]}, {node: ip}) as known:
        return lab_exec(*ssh_argv(user, ip, str(keyfile), known.path), command, timeout=60)


def host_keys_env(outputs) -> dict[str, str]:
    """env HACLUSTER_HOST_KEYS for the verifier run by hand: the stack's pinned host keys."""
    return {"HACLUSTER_HOST_KEYS": json.dumps(outputs["hostKeys"].value)}


def virsh(*args) -> str:
    return subprocess.run(["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, timeout=60).stdout


def libvirt_objects(name: str) -> list[str]:
    found = [f"domain {d}" for d in virsh("list", "--all", "--name").split() if d.startswith(f"{name}-")]
    found += [f"network {n}" for n in virsh("net-list", "--all", "--name").split() if n == f"hacluster-{name}"]
    found += [f"pool {p}" for p in virsh("pool-list", "--all", "--name").split() if p == f"hacluster-{name}"]
    return found


@contextmanager
def e2e_stack(name: str, config: dict, leftovers: Callable[[str], list[str]], label: str,
              opts: auto.LocalWorkspaceOptions | None = None) -> Iterator[tuple[auto.Stack, dict[str, float]]]:
    """Stack `name` with Pulumi.<name>.yaml holding `config`; yields it and a timings dict. On the way
    out: destroy, remove the stack and its files, print the timings, and fail if `leftovers(name)`
    (what libvirt still holds of it) is not empty."""
    st = auto.create_stack(name, work_dir=str(ROOT), opts=opts)
    config_file = ROOT / f"Pulumi.{name}.yaml"
    config_file.write_text(yaml.safe_dump({"config": config}))
    timings: dict[str, float] = {}
    try:
        yield st, timings
    finally:
        t = time.monotonic()
        try:
            st.destroy(on_output=print, color="never")
        finally:
            timings["destroy"] = time.monotonic() - t
            left = leftovers(name)
            st.workspace.remove_stack(name)
            config_file.unlink(missing_ok=True)
            (ROOT / ".state" / f"{name}.key").unlink(missing_ok=True)
            print(f"{label} durations (s):", json.dumps({k: round(v, 1) for k, v in timings.items()}))
            assert left == [], f"destroy left {left}"


def up(st: auto.Stack, on_output=print) -> auto.UpResult:
    """`pulumi up` of `st`. A failed one leads its error with the lines saying why (the verifier's FAILED
    checks, the resources' errors): a CI log keeps the start and the end of a long message, not its middle."""
    try:
        return st.up(on_output=on_output, color="never")
    except auto.CommandError as e:
        why = [ln.strip() for ln in str(e).splitlines() if " FAILED " in ln or "error:" in ln]
        if why:
            e.args = ("\n".join(list(dict.fromkeys(why))[:12]) + "\n" + "".join(map(str, e.args[:1])), *e.args[1:])
        raise


def timed_up(st: auto.Stack, timings: dict[str, float], key: str = "up_cold") -> auto.UpResult:
    """`pulumi up` of `st`, its duration recorded as timings[key]."""
    t = time.monotonic()
    result = up(st)
    timings[key] = time.monotonic() - t
    return result


NOT_CHANGES = ("same", "refresh", "read")  # refresh-before-update reads; the stack's read of its own outputs


def changes(result) -> dict:
    """What an up changed."""
    return {k: v for k, v in (result.summary.resource_changes or {}).items() if k not in NOT_CHANGES}


def changed_by_preview(st: auto.Stack) -> set[tuple[str, str]]:
    """(resource type, operation) of each resource `pulumi preview` of `st` would change."""
    events: list = []
    st.preview(on_output=print, color="never", on_event=events.append)
    steps = {(e.resource_pre_event.metadata.type, str(getattr(e.resource_pre_event.metadata.op, "value",
                                                               e.resource_pre_event.metadata.op)))
             for e in events if e.resource_pre_event}
    return {(typ, op) for typ, op in steps if op not in NOT_CHANGES}


# No VM or disk touched: commands, and the seeds' user-data rewritten in place (what a new node would boot with)
SEED_UPDATE = ("libvirt:index/cloudInitDisk:CloudInitDisk", "update")


def only_commands_and_seeds(changing: set[tuple[str, str]]) -> bool:
    return all(typ.startswith("command:") or (typ, op) == SEED_UPDATE for typ, op in changing)
