"""`ip netns exec NS python -m verifier.load VIP SERVER_NAME OUT [RATE] [PATIENCE] [MAX_SECONDS]`: client
load through the VIP while something else happens (a rolling change, a drill): RATE requests/s (default 10),
each on a new connection with PATIENCE seconds to answer (default 10, as curl -m 10), until SIGTERM or
MAX_SECONDS (default 1800), whichever comes first. Then writes OUT (JSON, `summary` below) and exits.

Refuses to run in the root network namespace: lab addresses are reached from inside the lab only.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import netns
from .http import Probe, Prober


def summary(probes: list[Probe], started: float, ended: float) -> dict:
    """requests, failed (with the first errors), the longest window in which no request got an answer
    (between consecutive answers, and from the start and to the end), the slowest answer."""
    answers = sorted(p.t + (p.latency or 0.0) for p in probes if p.ok)
    marks = sorted([started, *(a for a in answers if a <= ended), ended])
    gaps = [b - a for a, b in itertools.pairwise(marks)]
    failed = [p for p in probes if not p.ok]
    wall = time.time() - time.monotonic()  # monotonic -> wall clock, to line failures up with other logs
    return {"requests": len(probes), "failed": len(failed), "errors": sorted({str(p.error) for p in failed})[:5],
            "failures": [{"at": time.strftime("%H:%M:%S", time.gmtime(wall + p.t)) + f".{int((wall + p.t) % 1 * 10)}",
                          "after_s": round(p.t - started, 1), "error": str(p.error)} for p in failed[:10]],
            "longest_no_answer_s": round(max(gaps, default=0.0), 3),
            "max_latency_s": round(max((p.latency or 0.0 for p in probes), default=0.0), 3),
            "seconds": round(ended - started, 1)}


@contextmanager
def running(ns: str, vip: str, server_name: str, out: Path, rate: float = 10.0, patience: float = 10.0,
            bound: float = 1800.0) -> Iterator[dict]:
    """On the deploy host: this load, from inside lab namespace `ns`, for the duration of the block (and
    2 s either side); the block's dict gets the summary once it ends."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "verifier.load", vip, server_name, str(out),
                          str(rate), str(patience), str(bound)], cwd=Path(__file__).resolve().parent.parent)
    result: dict = {}
    try:
        time.sleep(2)
        yield result
        time.sleep(2)
    finally:
        p.terminate()
        p.wait(timeout=60)
    result.update(json.loads(out.read_text()))


def rolled(lines: list[str]) -> list[str]:
    """From `pulumi up` output: the nodes whose drain ran, in the order they ran."""
    return [m.group(1) for ln in lines if (m := re.search(r"Command (\w+)-drain created", ln))]


def boots(lines: list[str]) -> dict[str, float]:
    """From `pulumi up` output: each node's boot, start to ready, as day 2 reported it (the last one seen)."""
    return {m.group(1): float(m.group(2)) for ln in lines
            if (m := re.search(r"day2: (\w+): (?:cloud-init done|ready) \((\d+(?:\.\d+)?) s\)", ln))}


def main(argv: list[str]) -> int:
    if netns.in_root():
        print("load: refusing to send lab traffic from the root network namespace", file=sys.stderr)
        return 2
    vip, server_name, out = argv[0], argv[1], Path(argv[2])
    rate = float(argv[3]) if len(argv) > 3 else 10.0
    patience = float(argv[4]) if len(argv) > 4 else 10.0
    bound = min(float(argv[5]) if len(argv) > 5 else 1800.0, 7200.0)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Prober(vip, server_name, 1.0 / rate, patience, max_seconds=bound, max_in_flight=int(rate * patience) + 4) as p:
        started = time.monotonic()
        stop.wait(bound)
        ended = time.monotonic()
    out.write_text(json.dumps(summary(p.snapshot(), started, ended)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
