"""A cancelled deployment mid-drill, against real keepalived + nginx in network namespaces: the real verifier
(a subprocess, as the command plugin runs it) gets SIGTERM while the MASTER is broken, restores it within
its budget (verifier/cancel.py) and leaves no key file; SIGKILLed instead, it leaves the break behind, and
the next run finds and undoes it first. Restore times are printed; they are also asserted to fit in the
command plugin's kill grace, which is what the test is about."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model.settings import load
from tests.integration.harness import ROOT, sh, wait_for
from verifier.actions import CUT_TABLE, PRIORITY_LINE, _state, read_pid
from verifier.cancel import BUDGET_S

PLUGIN_GRACE_S = 30.0  # toolchain/provider-command/run.go killGrace (tests/unit/test_cancel.py keeps them apart)


def settings():
    return load({}, "it", ROOT)


def priority(lab, host: str) -> int:
    m = PRIORITY_LINE.search((lab.hosts[host].prefix / "keepalived.conf").read_text())
    return int(m.group(0).split()[-1])


def cut(lab, host: str) -> bool:
    return sh("ip", "netns", "exec", lab.hosts[host].ns, "nft", "list", "table", "inet", CUT_TABLE,
              check=False).returncode == 0


def paused(lab, host: str) -> bool:
    pid = read_pid(lab.hosts[host].service("keepalived")["pidFile"])
    return pid is not None and _state(pid) == "T"


# kind -> (spec overrides, "the drill has broken lb01 now")
BROKEN = {
    "switchover": ({"drillKinds": ["switchover"]}, lambda lab: priority(lab, "lb01") != 150),
    "hard": ({"drillKinds": ["hard"]}, lambda lab: paused(lab, "lb01")),
    "vrrp_cut": ({"drillKinds": ["vrrp_cut"], "cutSeconds": 30}, lambda lab: cut(lab, "lb01")),
}


def start_verifier(spec: dict, tmp: Path, log: Path) -> subprocess.Popen:
    """The real verifier as the command plugin runs it: its own process group, a key in the environment,
    TMPDIR a directory of this test's (to see every key file it makes)."""
    env = {**os.environ, "HACLUSTER_VERIFY_SPEC": json.dumps(spec), "TMPDIR": str(tmp),
           "HACLUSTER_SSH_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----\nmock-it\n-----END OPENSSH PRIVATE KEY-----"}
    with open(log, "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "verifier"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, start_new_session=True)


def broken_mid_drill(lab, kind: str, tmp: Path, log: Path) -> subprocess.Popen:
    overrides, is_broken = BROKEN[kind]
    proc = start_verifier(lab.spec(**overrides), tmp, log)
    if not wait_for(lambda: is_broken(lab) or proc.poll() is not None, 120, every=0.1):
        proc.kill()
        raise AssertionError(f"the {kind} drill did not break lb01 within 120 s: {log.read_text()[-2000:]}")
    assert proc.poll() is None, f"the verifier ended before the drill broke lb01: {log.read_text()[-2000:]}"
    keys = list(tmp.iterdir())
    assert [k.name.startswith(f"hacluster-verify-{proc.pid}-") for k in keys] == [True], keys  # what must go
    return proc


def assert_restored(lab) -> None:
    assert wait_for(lambda: lab.holders() == ["lb01"], 20, every=0.1), f"holders {lab.holders()}"
    time.sleep(2)
    assert lab.holders() == ["lb01"], "the VIP must stay on the MASTER alone"
    assert not cut(lab, "lb01") and not cut(lab, "lb02"), "the VRRP cut table is still there"
    assert priority(lab, "lb01") == 150 and priority(lab, "lb02") == 100
    assert not paused(lab, "lb01")


@pytest.mark.parametrize("kind", list(BROKEN))
def test_sigterm_mid_drill_restores_the_cluster_and_removes_the_key(lab_factory, tmp_path, kind):
    lab = lab_factory(settings())
    tmp, log = tmp_path / "tmp", tmp_path / "verifier.log"
    tmp.mkdir(mode=0o700)
    proc = broken_mid_drill(lab, kind, tmp, log)
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)  # what the command plugin does on a cancelled `pulumi up`
    try:
        out, _ = proc.communicate(timeout=PLUGIN_GRACE_S + 10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"the verifier was still running {PLUGIN_GRACE_S + 10:g} s after SIGTERM") from None
    took = time.monotonic() - t0
    err = log.read_text()
    print(err[-3000:])
    print(f"{kind}: SIGTERM -> exit {proc.returncode} after {took:.1f} s (budget {BUDGET_S:g} s, grace {PLUGIN_GRACE_S:g} s)")
    assert proc.returncode == 128 + signal.SIGTERM
    assert took < PLUGIN_GRACE_S, "the restore must end before the plugin's SIGKILL"
    report = json.loads(out)
    checks = {c["name"]: c for c in report["checks"]}
    assert not report["passed"] and "cancelled by SIGTERM" in checks["interrupted"]["detail"]
    assert checks["cluster_restored"]["passed"], checks["cluster_restored"]["detail"]
    assert "Traceback" not in err and "SIGTERM: cancelling" in err
    assert not list(tmp.iterdir()), "a key file stayed behind"
    assert_restored(lab)


@pytest.mark.parametrize("kind", list(BROKEN))
def test_after_a_sigkill_mid_drill_the_next_run_undoes_the_residue(lab_factory, tmp_path, kind):
    lab = lab_factory(settings())
    tmp, log = tmp_path / "tmp", tmp_path / "verifier.log"
    tmp.mkdir(mode=0o700)
    proc = broken_mid_drill(lab, kind, tmp, log)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9: no restore at all
    proc.communicate(timeout=10)
    time.sleep(0.5)
    assert BROKEN[kind][1](lab), f"the {kind} break should have stayed behind after SIGKILL"
    assert len(list(tmp.iterdir())) == 1, "the killed run's key directory is there"

    again = start_verifier(lab.spec(drill=False), tmp, tmp_path / "again.log")
    out, _ = again.communicate(timeout=300)
    err = (tmp_path / "again.log").read_text()
    print(err[-3000:])
    report = json.loads(out)
    checks = {c["name"]: c for c in report["checks"]}
    assert again.returncode == 0 and report["passed"], {n: c["detail"] for n, c in checks.items() if not c["passed"]}
    assert checks["drill_residue"]["passed"]
    found = [line for line in err.splitlines() if "left by an interrupted drill: lb01:" in line]
    assert len(found) == 1, err[-2000:]
    assert "removed 1 key directory left by a killed run" in err
    assert not list(tmp.iterdir())
    assert_restored(lab)
