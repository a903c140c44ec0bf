"""Deploy side of a day-2 change: `python -m day2` (run by each node's config command resource).

Env: HACLUSTER_DAY2_SPEC = {"node", "ip", "sshUser", "netns", "timeout"}, HACLUSTER_NODE_FILES =
[{"path", "content", "mode"}] (a secret: it can hold the VRRP password), HACLUSTER_SSH_KEY (secret).
Waits (bounded) for the node's SSH, then runs day2/apply.py on it as root with the files on stdin.
For lab stacks every connection starts inside the lab namespace (`ip netns exec`), never from the
root one. Prints the node's JSON answer; exit 2 with the reason when the node refused the change.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from day2.spec import Day2Spec
from verifier import netns
from verifier.actions import ssh_argv

APPLY = (Path(__file__).resolve().parent / "apply.py").read_text()


def log(msg: str) -> None:
    print(f"day2: {msg}", file=sys.stderr, flush=True)


def main() -> int:
    spec = Day2Spec.model_validate_json(os.environ["HACLUSTER_DAY2_SPEC"]).model_dump(by_alias=True)
    files = os.environ["HACLUSTER_NODE_FILES"]
    prefix: list[str] = []
    if spec.get("netns"):
        if not netns.exists(spec["netns"]):
            log(f"network namespace {spec['netns']!r} does not exist (is the lab up?); refusing to reach "
                f"{spec['ip']} from anywhere else")
            return 2
        prefix = ["ip", "netns", "exec", spec["netns"]]
    fd, key = tempfile.mkstemp(prefix="hacluster-day2-", suffix=".key")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(os.environ["HACLUSTER_SSH_KEY"].rstrip("\n") + "\n")
        ssh = [*prefix, *ssh_argv(spec["sshUser"], spec["ip"], key)]
        deadline = time.monotonic() + float(spec.get("timeout", 600))
        while subprocess.run([*ssh, "true"], capture_output=True, timeout=30).returncode != 0:
            if time.monotonic() > deadline:
                log(f"{spec['node']}: ssh {spec['ip']} did not answer within {spec.get('timeout', 600)} s")
                return 2
            time.sleep(3)
        # First boot: let cloud-init finish writing and starting things before anything is compared.
        left = max(10.0, deadline - time.monotonic())
        r = subprocess.run([*ssh, "cloud-init status --wait >/dev/null; cloud-init status"], capture_output=True,
                           text=True, timeout=left)
        log(f"{spec['node']}: {r.stdout.strip() or r.stderr.strip()}")
        code = base64.b64encode(APPLY.encode()).decode()
        payload = json.dumps({"node": spec["node"], "files": json.loads(files)})
        r = subprocess.run([*ssh, f"sudo -n python3 -c \"import base64;exec(base64.b64decode('{code}'))\""],
                           input=payload, capture_output=True, text=True, timeout=180)
    finally:
        Path(key).unlink(missing_ok=True)
    answer = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    print(answer)
    if r.returncode != 0:
        reason = json.loads(answer).get("error") if answer.startswith("{") else r.stderr.strip()[-400:]
        log(f"{spec['node']}: change refused: {reason}")
        return 2
    log(f"{spec['node']}: {answer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
