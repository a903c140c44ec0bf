"""A throwaway e2e stack in the project directory: made with its config file, always destroyed, and
checked to leave nothing behind (whatever the test did)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import yaml
from pulumi import automation as auto

from tests.conftest import ROOT


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


def timed_up(st: auto.Stack, timings: dict[str, float], key: str = "up_cold") -> auto.UpResult:
    """`pulumi up` of `st`, its duration recorded as timings[key]."""
    t = time.monotonic()
    up = st.up(on_output=print, color="never")
    timings[key] = time.monotonic() - t
    return up


NOT_CHANGES = ("same", "refresh", "read")  # refresh-before-update reads; the stack's read of its own outputs


def changes(result) -> dict:
    """What an up changed."""
    return {k: v for k, v in (result.summary.resource_changes or {}).items() if k not in NOT_CHANGES}
