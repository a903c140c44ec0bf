"""Bad stack config through the real engine: `pulumi config set` a bad value, `pulumi preview` fails
with a message naming the key, and no resource is registered (only the stack itself)."""

import shutil
import subprocess
import uuid

import pytest

from tests.conftest import ROOT, ssh_key

KEY = ssh_key("e2e")
CASES = [
    (["--path", "balancers[0].priority", "300"], "balancers[0].priority = 300"),
    (["--path", "balancers[1].priority", "150"], "balancers[1].priority = 150"),
    (["--path", "balancers[1].routerId", "lb01"], "balancers[1].routerId"),
    (["--path", "balancers[1].ip", "192.168.81.210"], "balancers[1].ip"),
    (["--path", "vrrp.virtualRouterId", "256"], "vrrp.virtualRouterId = 256"),
    (["--path", "vrrp.advertInt", "0"], "vrrp.advertInt"),
    (["vip", "192.168.81.240"], "vip = '192.168.81.240'"),
    (["vip", "192.168.82.100"], "vip = '192.168.82.100'"),
    (["--path", "network.cidr", "192.168.81.0/33"], "network.cidr"),
    (["--secret", "vrrpAuthPass", "toolongpass"], "vrrpAuthPass"),
    (["--path", "nginx.upstrem.weight", "2"], "nginx.upstrem"),
    (["--path", "webNodes[0].weight", "0"], "webNodes[0].weight = 0"),
    # issue 13: one per class of injection / silent no-effect value
    (["--path", "sshAuthorizedKeys[0]", KEY + "\n- name: evil\n  sudo: ALL=(ALL) NOPASSWD:ALL"], "sshAuthorizedKeys[0] = "),
    (["--path", "sshAuthorizedKeys[0]", "ssh-ed25519 QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"], "sshAuthorizedKeys[0] = "),
    (["--secret", "vrrpAuthPass", "ab}{cd"], "vrrpAuthPass = [secret]"),
    (["--path", "vm.adminUser", "www-data"], "vm.adminUser = 'www-data'"),
    (["--path", "nginx.persistence", "ip_hash\n"], "nginx.persistence = 'ip_hash\\n'"),
    (["--path", "nginx.clientMaxBodySize", "99999999999g"], "nginx.clientMaxBodySize = '99999999999g'"),
    (["--path", "nginx.proxy.buffers", "4 8k"], "nginx.proxy.buffers = '4 8k'"),
    (["--path", "nginx.serverName", "*"], "nginx.serverName = '*'"),
    (["--path", "network.bridge", "br0; reboot"], "network.bridge = 'br0; reboot'"),
    (["--path", "vm.libvirtUri", "http://x"], "vm.libvirtUri = 'http://x'"),
    (["--path", "vrrp.advertInt", "nan"], "vrrp.advertInt = 'nan'"),
    (["labNetns", ""], "labNetns = ''"),
    (["--path", "vrrp.preemptDelay", "30"], "vrrp.preemptDelay = 30"),
    (["--path", "vrrp.interface", "lo"], "vrrp.interface = 'lo'"),
    (["--path", "vm.image", "/nonexistent/disk.qcow2"], "vm.image = '/nonexistent/disk.qcow2'"),
    (["--path", "vm.poolPath", "/"], "vm.poolPath = '/'"),
]


def pulumi(*args, stack):
    return subprocess.run(["pulumi", *args, "--stack", stack, "--non-interactive"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def stack():
    if shutil.which("pulumi") is None:
        pytest.fail("needs the toolchain: run with `make test-e2e`")
    name = f"cfg-{uuid.uuid4().hex[:6]}"
    subprocess.run(["pulumi", "stack", "init", name, "--non-interactive"], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["pulumi", "stack", "rm", name, "--yes", "--force", "--non-interactive"], cwd=ROOT,
                       capture_output=True)
        (ROOT / f"Pulumi.{name}.yaml").unlink(missing_ok=True)


@pytest.mark.parametrize("setting, message", CASES, ids=[f"{i}-{c[1].split(' ')[0]}" for i, c in enumerate(CASES)])
def test_bad_value_fails_preview_before_any_resource(stack, setting, message):
    config_file = ROOT / f"Pulumi.{stack}.yaml"
    config_file.write_text((ROOT / "Pulumi.dev.yaml").read_text())
    assert pulumi("config", "set", *setting, stack=stack).returncode == 0
    r = pulumi("preview", stack=stack)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert message in out, out
    assert "invalid stack configuration" in out
    assert "+ 1 to create" in out and "libvirt:" not in out and "command:" not in out, out
    if "--secret" in setting:
        assert setting[-1] not in out and setting[-1] not in config_file.read_text()
