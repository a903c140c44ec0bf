"""Network-namespace identity and the guard every daemon start goes through.

A namespace is identified by the (st_dev, st_ino) of its nsfs file: /proc/<pid>/ns/net for a process,
/run/netns/<name> for a namespace made by `ip netns add`. The root namespace is PID 1's; where PID 1's
handle cannot be read (some sandboxes deny it even to root), kthreadd's (PID 2): kernel threads always
live in the initial namespace. If neither can be read, everything that needs the answer refuses.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

NETNS_DIR = Path("/run/netns")
ROOT_NS = Path("/proc/1/ns/net")
KTHREADD_NS = Path("/proc/2/ns/net")
SELF_NS = Path("/proc/self/ns/net")


class NamespaceError(RuntimeError):
    """A namespace is missing, or we are not where we must be."""


def ns_id(path: str | os.PathLike) -> tuple[int, int]:
    st = os.stat(path)  # follows the /proc magic link to the nsfs inode
    return st.st_dev, st.st_ino


def root_id() -> tuple[int, int]:
    try:
        return ns_id(ROOT_NS)
    except PermissionError:
        if Path("/proc/2/comm").read_text().strip() != "kthreadd":
            raise NamespaceError("cannot tell the root network namespace: /proc/1/ns/net is unreadable "
                                 "and PID 2 is not kthreadd") from None
        return ns_id(KTHREADD_NS)


def named(name: str) -> Path:
    if not name or "/" in name or name in (".", ".."):
        raise NamespaceError(f"invalid network namespace name {name!r}")
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return named(name).exists()


def in_root() -> bool:
    return ns_id(SELF_NS) == root_id()


def in_named(name: str) -> bool:
    """True when this process runs in network namespace `name` (and that is not the root one)."""
    path = named(name)
    if not path.exists():
        raise NamespaceError(f"network namespace {name!r} does not exist ({path} is missing)")
    here = ns_id(SELF_NS)
    return here == ns_id(path) and here != root_id()


def process_in(pid: int, name: str) -> bool:
    """True when process `pid` exists and lives in namespace `name` (so it is one of ours)."""
    try:
        return ns_id(f"/proc/{pid}/ns/net") == ns_id(named(name))
    except OSError:
        return False


def guarded(name: str, argv: list[str]) -> list[str]:
    """The command line that runs `argv` inside namespace `name`, through the guard below."""
    return ["ip", "netns", "exec", name, sys.executable, "-m", "verifier.guard", name, "--", *argv]


def guard_env() -> dict[str, str]:
    """Environment for `guarded` commands: the guard module must be importable from anywhere."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("HACLUSTER_SSH_KEY", None)  # daemons never need it
    return env


def check_inside(name: str) -> None:
    """Raise unless this process is inside namespace `name`, which must differ from the root one."""
    here = ns_id(SELF_NS)
    if here == root_id():
        raise NamespaceError(f"refusing: this process is in the root network namespace, not in {name!r}")
    if not in_named(name):
        raise NamespaceError(f"refusing: this process is not in network namespace {name!r}")
