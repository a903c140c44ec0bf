"""`ip netns exec CLIENT python -m tests.integration.probe VIP SERVER_NAME SECONDS`: GET the VIP every
0.1 s for SECONDS (bounded), then print the probes as JSON lines [t, ok, balancer]. Run from inside the
lab's client namespace only: it refuses the root one."""

import json
import sys
import time

from verifier import netns
from verifier.http import Prober


def main(argv: list[str]) -> int:
    if netns.in_root():
        print("probe: refusing to send lab traffic from the root network namespace", file=sys.stderr)
        return 2
    vip, server_name, seconds = argv[0], argv[1], min(float(argv[2]), 120.0)
    t0 = time.monotonic()
    with Prober(vip, server_name, 0.1, 1.0, max_seconds=seconds) as p:
        time.sleep(seconds)
    print(json.dumps([[round(x.t - t0, 3), x.ok, x.balancer] for x in p.snapshot()]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
