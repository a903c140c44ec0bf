"""The rolling-change rows of the bench: on the reference stack, after its drills, each day-2 change the
e2e tier tries (tests/e2e/test_drift_and_reboot.py), under 10 requests/s through the VIP with 10 s
patience: memory, vCPUs, a new image, an added SSH key, an nginx and a keepalived setting, scale out and
in. Each row: the `up`'s duration, the requests and failures, the longest window without an answer, the
roll order and, for a roll, its target: the sum over the rolled nodes of (that node's boot + 20 s)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verifier import load

from .lab import NETNS, progress
from .stacks import BenchStack

PER_NODE_S = 20.0  # the target's allowance per node beyond its boot (drain, configure, admit)


def changes(subnet: str, image: Path) -> list[tuple[str, Callable[[dict], None]]]:
    def vm(**kw):
        return lambda c: c["hacluster:vm"].update(**kw)

    def scale_in(c):
        c["hacluster:webNodes"] = [w for w in c["hacluster:webNodes"] if w["name"] != "web03"]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(image.parent / "k")],
                   capture_output=True, timeout=30, check=True)
    key = (image.parent / "k.pub").read_text().strip()
    return [("memory 512 -> 640 (restart)", vm(memory=640)), ("vcpus 1 -> 2 (restart)", vm(vcpus=2)),
            ("image: another file (replace)", vm(image=str(image))),
            ("SSH key added (day 2)", lambda c: c.update({"hacluster:sshAuthorizedKeys": [key]})),
            ("nginx clientMaxBodySize (day 2)", lambda c: c["hacluster:nginx"].update(clientMaxBodySize="150m")),
            ("vrrp advertInt 1 -> 2 (day 2)", lambda c: c["hacluster:vrrp"].update(advertInt=2)),
            ("scale out: web03 (create)", lambda c: c["hacluster:webNodes"].append(
                {"name": "web03", "ip": f"{subnet}.250"})),
            ("scale in: web03 (delete)", scale_in)]


def run(root: Path, st: BenchStack, config: dict[str, Any], vip: str, subnet: str) -> list[dict[str, Any]]:
    """Every change in turn on the deployed stack `st` (its config is changed as it goes); the rows."""
    config["hacluster:verify"] = {**config.get("hacluster:verify", {}), "failoverDrill": False}
    st.configure(config)
    st.up()  # the verifier without its drill from here on
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-roll-") as tmp:
        image = Path(tmp) / "disk.qcow2"
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", "-o", "cluster_size=131072",
                        str(root / ".images/debian12/disk.qcow2"), str(image)], check=True, timeout=600)
        for title, change in changes(subnet, image):
            change(config)
            st.configure(config)
            lines: list[str] = []
            with load.running(NETNS, vip, "www.example.local", Path(tmp) / "load.json") as got:
                seconds, _, _ = st.up(lines)
            order, boots = load.rolled(lines), load.boots(lines)
            target = round(sum(boots.get(n, 0.0) + PER_NODE_S for n in order), 1) if order else None
            rows.append({"change": title, "up_s": seconds, "requests": got["requests"], "failed": got["failed"],
                         "errors": got["errors"], "longest_no_answer_s": got["longest_no_answer_s"],
                         "max_latency_s": got["max_latency_s"], "order": order, "boots_s": boots, "target_s": target})
            progress(f"rolling: {title}: {seconds:.0f} s, {got['failed']} of {got['requests']} failed, "
                     f"longest without an answer {got['longest_no_answer_s']} s")
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    rolls = [r for r in rows if r["target_s"]]
    return {"failed_max": max((r["failed"] for r in rows), default=None),
            "longest_no_answer_max_s": max((r["longest_no_answer_s"] for r in rows), default=None),
            "roll_vs_target_max": max((round(r["up_s"] / r["target_s"], 3) for r in rolls), default=None)}
