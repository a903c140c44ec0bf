"""Pinned SSH host keys against a real sshd: the verifier's SSH actions (verifier/actions.py, with the per-run
known_hosts of verifier/hostkeys.py) log in to a node whose host key is the pinned one, and refuse, in one
line naming the node and both fingerprints, the same node once its host key was replaced.

The node is a real `sshd -D -f CONFIG` in a network namespace this test creates (its address on that
namespace's loopback), started through verifier.guard; the client runs in the same namespace, so no packet
leaves it. The login runs `true` as root there: the verifier's readiness probe and nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.harness import ROOT, sh
from verifier import netns

NODE_IP = "192.168.77.10"
SPEC = {"vip": "192.168.77.100", "serverName": "www.example.local", "actions": "ssh", "sshUser": "root",
        "balancers": [{"name": "lb01", "ip": NODE_IP, "priority": 150, "state": "MASTER"},
                      {"name": "lb02", "ip": "192.168.77.11", "priority": 100, "state": "BACKUP"}],
        "webNodes": [{"name": "web01", "ip": "192.168.77.20"}]}
# Inside the namespace: the verifier's own SshActions.ready() on lb01, with a known_hosts of the pinned keys.
READY = """
import json, sys, time
from verifier.actions import HostKeyRefused, SshActions
from verifier.hostkeys import KnownHosts
from verifier.spec import from_dict
spec, pinned, key = from_dict(json.loads(sys.argv[1])), json.loads(sys.argv[2]), sys.argv[3]
with KnownHosts(pinned, {b.name: b.ip for b in spec.balancers}) as kh:
    t0 = time.monotonic()
    try:
        out = {"ready": SshActions(spec, key, kh).ready(spec.master)}
    except HostKeyRefused as e:
        out = {"refused": str(e)}
    out["seconds"] = round(time.monotonic() - t0, 3)
    out["knownHostsLeft"] = kh.path
print(json.dumps(out))
"""


def keygen(path: Path) -> str:
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path))
    return path.with_suffix(".pub").read_text().strip()


def fingerprint(public: str) -> str:
    r = subprocess.run(["ssh-keygen", "-lf", "-"], input=public + "\n", capture_output=True, text=True, check=True)
    return r.stdout.split()[1]


@pytest.fixture
def node(tmp_path_factory):
    """A namespace of this test's own with NODE_IP on its loopback; yields (ns, dir, start(host_key))."""
    if not shutil.which("sshd") and not Path("/usr/sbin/sshd").exists():
        pytest.skip("sshd is not installed (openssh-server)")
    ns = f"hcssh-{os.getpid() % 10000:04d}{secrets.token_hex(2)}"
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    procs: list[subprocess.Popen] = []
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", f"{NODE_IP}/32", "dev", "lo")

        def start(host_key: Path) -> None:
            for p in procs:
                p.terminate()
                p.wait(timeout=10)
            procs.clear()
            conf = d / "sshd_config"
            conf.write_text(f"ListenAddress {NODE_IP}:22\nHostKey {host_key}\nAuthorizedKeysFile {d}/authorized_keys\n"
                            f"PidFile {d}/sshd.pid\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
                            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n")
            log = open(d / "sshd.log", "ab")
            procs.append(subprocess.Popen(netns.guarded(ns, ["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)]),
                                          env=netns.guard_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          start_new_session=True))
            log.close()
            deadline = time.monotonic() + 10
            while f"{NODE_IP}:22 " not in sh("ip", "netns", "exec", ns, "ss", "-Hltn").stdout:
                assert procs[0].poll() is None, (d / "sshd.log").read_text()
                assert time.monotonic() < deadline, "sshd did not listen within 10 s"
                time.sleep(0.05)

        yield ns, d, start
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        sh("ip", "netns", "del", ns, check=False)


def ready(ns: str, pinned: dict, key: Path) -> dict:
    r = subprocess.run(netns.guarded(ns, [sys.executable, "-c", READY, json.dumps(SPEC), json.dumps(pinned), str(key)]),
                       env=netns.guard_env(), cwd=ROOT, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_pinned_key_connects_and_a_replaced_one_is_refused_in_one_line(node):
    ns, d, start = node
    stack_key = d / "stack_host_key"
    pinned_public = keygen(stack_key)
    other_public = keygen(d / "replaced_host_key")
    keygen(d / "id")
    shutil.copy(d / "id.pub", d / "authorized_keys")
    pinned = {"lb01": pinned_public, "lb02": other_public}  # lb02 is never asked

    start(stack_key)
    got = ready(ns, pinned, d / "id")
    assert got["ready"] is None, got  # logged in: ssh ran `true`
    assert not os.path.exists(got["knownHostsLeft"])  # the run's known_hosts is gone with it
    print(f"pinned login: {got['seconds']} s")

    start(d / "replaced_host_key")  # the same node, another host key
    got = ready(ns, pinned, d / "id")
    line = got.get("refused", "")
    assert line.startswith(f"lb01 ({NODE_IP}) presents SSH host key {fingerprint(other_public)}, the stack expects "
                           f"{fingerprint(pinned_public)}: refused"), got
    assert "\n" not in line
    print(f"refused in {got['seconds']} s: {line}")

    # and with the stack's key back, it connects again (nothing was written to any known_hosts)
    start(stack_key)
    assert ready(ns, pinned, d / "id")["ready"] is None
