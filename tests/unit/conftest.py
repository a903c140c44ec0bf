"""Unit tier fixtures: a network namespace of the tests' own for the real tools' config checks."""

import os
import subprocess
import uuid

import pytest

from model import render


@pytest.fixture(scope="module")
def netns():
    """A namespace of the test's own with an eth0: keepalived -t checks interfaces where it runs."""
    name = f"hcunit-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # (no dummy driver on every kernel: a veth pair that never leaves the namespace does the same)
        subprocess.run(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def write_node(s, node, prefix: str) -> render.Paths:
    """Every file of `node` written below `prefix` (the paths nginx -p / keepalived -f then use)."""
    paths = render.VM_PATHS.under(prefix)
    for d in (prefix, paths.log_dir, paths.temp_dir, paths.webroot):
        os.makedirs(d, mode=0o755, exist_ok=True)
    for f in render.node_files(s, node, "pw" if s.vrrp.auth_type else None, paths):
        with open(f.path, "w") as fh:
            fh.write(f.content)
        os.chmod(f.path, int(f.mode, 8))
    return paths
