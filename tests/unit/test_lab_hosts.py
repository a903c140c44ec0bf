"""make lab HOSTS=N: bad settings are refused with one line naming the setting and the allowed values,
before any namespace or daemon is touched (scripts/labhosts.sh hv_validate)."""

import os
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lab.sh up needs root before it validates")


@pytest.mark.parametrize("env, says", [
    ({"HACLUSTER_LAB_HOSTS": "5"}, "HOSTS (HACLUSTER_LAB_HOSTS) must be 1, 2, 3 or 4 (got '5')"),
    ({"HACLUSTER_LAB_HOSTS": "2;reboot"}, "HOSTS (HACLUSTER_LAB_HOSTS) must be 1, 2, 3 or 4"),
    ({"HACLUSTER_LAB_HOSTS": "2", "HACLUSTER_LAB_SSH_PORT_BASE": "22x"}, "HACLUSTER_LAB_SSH_PORT_BASE must be a port"),
    ({"HACLUSTER_LAB_HOSTS": "2", "HACLUSTER_LAB_SEGMENT_ADDR": "192.168.85.1"}, "HACLUSTER_LAB_SEGMENT_ADDR must be"),
    ({"HACLUSTER_LAB_HOSTS": "2", "HACLUSTER_NETNS": "a-namespace-name-too-long"}, "is too long"),
])
def test_bad_lab_settings_are_refused_before_anything_is_touched(tmp_path, env, says):
    run_dir = tmp_path / "run"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "lab.sh"), "up"], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "HACLUSTER_LAB_RUN_DIR": str(run_dir),
                            "HACLUSTER_LAB_STATE_DIR": str(tmp_path / "state"), **env})
    assert r.returncode == 1 and says in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "lab: error:" in r.stderr
    assert not run_dir.exists() and not (tmp_path / "state").exists()
