"""The golden image's own systemd units (image/rootfs/etc/systemd/system): each one is enabled by
image/build.sh for the target its [Install] section names, and checked there, so a unit added to the
rootfs is never silently left out of the image. The image itself is not built here."""

from __future__ import annotations

import configparser
import re

import pytest

from tests.conftest import ROOT

UNITS = ROOT / "image" / "rootfs" / "etc" / "systemd" / "system"
BUILD = (ROOT / "image" / "build.sh").read_text()
# `for unit in A B \
#    C; do ... done` loops of build.sh, with their bodies
LOOPS = [(m[1].replace("\\\n", " ").split(), m[2]) for m in re.finditer(r"^for unit in (.*?); do\n(.*?)^done$", BUILD,
                                                                       re.M | re.S)]


def unit(name: str) -> configparser.ConfigParser:
    c = configparser.ConfigParser(strict=False, interpolation=None)
    c.optionxform = str
    c.read_string((UNITS / name).read_text())
    return c


def enabled_for(name: str) -> set[str]:
    """The targets whose .wants build.sh links `name` into (a loop that runs ln -sf .../$unit ...wants/$unit)."""
    targets = set()
    for units, body in LOOPS:
        m = re.search(r'ln -sf "/etc/systemd/system/\$unit" "\$ROOTFS/etc/systemd/system/([a-z.-]+)\.wants/\$unit"', body)
        if m and name in units:
            targets.add(m[1])
    return targets


OWN = sorted(p.name for p in UNITS.glob("*.service"))


@pytest.mark.parametrize("name", OWN)
def test_each_own_unit_is_enabled_for_its_install_target_and_checked(name):
    wanted = set(unit(name)["Install"]["WantedBy"].split())
    assert enabled_for(name) == wanted, f"{name}: build.sh must link it into {wanted}.wants"
    (checked,) = [units for units, body in LOOPS if "is not enabled in the image" in body]
    assert name in checked, f"{name}: add it to build.sh's 'is not enabled in the image' check"


def test_the_root_filesystem_grows_early_at_every_boot_bounded():
    assert "hacluster-growfs.service" in OWN
    u = unit("hacluster-growfs.service")
    assert u["Service"]["ExecStart"] == "/sbin/resize2fs /dev/vda"  # the whole-disk ext4 (root=/dev/vda)
    assert u["Service"]["Type"] == "oneshot" and 0 < int(u["Service"]["TimeoutStartSec"]) <= 300
    assert u["Unit"]["DefaultDependencies"] == "no" and "sysinit.target" in u["Unit"]["Before"].split()
    assert "RemainAfterExit" not in u["Service"]  # `systemctl start hacluster-growfs` runs it again
    # the nodes' kernel command line (components/vm.py) mounts that disk as root, read-write: resize2fs grows it online
    vm = (ROOT / "components" / "vm.py").read_text()
    assert '"root": "/dev/vda"' in vm and '{"_": "rw"}' in vm
