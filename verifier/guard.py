"""`python -m verifier.guard NETNS -- COMMAND [ARGS...]`: exec COMMAND only from inside NETNS.

Run as `ip netns exec NETNS python -m verifier.guard NETNS -- keepalived ...`. Before exec'ing, it checks
that its own network namespace is NETNS (same nsfs inode as /run/netns/NETNS) and not PID 1's. So a
keepalived or nginx can never start in the root namespace, whatever went wrong before. Exit 97 on refusal.
"""

from __future__ import annotations

import os
import sys

from .netns import NamespaceError, check_inside

REFUSED = 97


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m verifier.guard NETNS -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    name, command = argv[0], argv[2:]
    try:
        check_inside(name)
    except (NamespaceError, OSError) as e:
        print(f"verifier.guard: {e}; not starting {command[0]}", file=sys.stderr)
        return REFUSED
    sys.stderr.flush()
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
