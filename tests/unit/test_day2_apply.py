"""day2/apply.py, the node side of a day-2 change, run for real against real nginx -t: a good change
is swapped in and reloaded, a bad one is refused and the running config stays as it was."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from model import render
from model.settings import HostFacts, load
from tests.conftest import ROOT

APPLY = str(ROOT / "day2" / "apply.py")


@pytest.fixture
def node_dir():
    d = f"/run/hacluster-day2-{os.getpid()}"
    os.makedirs(d, mode=0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def files_for(raw, prefix):
    s = load(raw, "t", ROOT, HostFacts(True, False))
    paths = render.VM_PATHS.under(prefix)
    for sub in (paths.log_dir, paths.temp_dir):
        os.makedirs(sub, exist_ok=True)
    lb = s.balancers[0]
    return [{"path": f.path, "content": f.content, "mode": f.mode} for f in render.node_files(s, lb, "pw", paths)
            if f.path.endswith("nginx.conf")]


def apply(files, reload_log, healthy=("true",)):
    cmds = {"nginx": {"match": "nginx.conf", "check": ["nginx", "-t", "-q", "-c", "{staged}"],
                      "reload": ["sh", "-c", f"echo reloaded >> {reload_log}"], "healthy": list(healthy)}}
    stamp = os.path.join(os.path.dirname(reload_log), "applied.json")
    r = subprocess.run([sys.executable, APPLY], input=json.dumps({"node": "lb01", "files": files}),
                       capture_output=True, text=True, env={**os.environ, "HACLUSTER_APPLY_CMDS": json.dumps(cmds),
                                                            "HACLUSTER_APPLY_STAMP": stamp})
    return r.returncode, json.loads(r.stdout)


def test_good_change_is_swapped_and_reloaded_bad_change_is_refused(node_dir):
    log = f"{node_dir}/reloads"
    first = files_for({}, node_dir)
    rc, out = apply(first, log)
    assert (rc, out["reloaded"]) == (0, ["nginx"])
    conf = first[0]["path"]

    rc, out = apply(first, log)  # nothing changed: nothing staged, nothing reloaded
    assert (rc, out["changed"], out["reloaded"]) == (0, [], [])

    changed = files_for({"nginx": {"clientMaxBodySize": "100m"}}, node_dir)
    rc, out = apply(changed, log)
    assert rc == 0 and out["changed"] == [conf]
    assert "client_max_body_size 100m;" in open(conf).read()
    assert open(log).read().count("reloaded") == 2

    bad = [{**changed[0], "content": changed[0]["content"].replace("worker_connections 1024;", "worker_connections x;")}]
    before = open(conf).read()
    rc, out = apply(bad, log)
    assert rc == 2 and "refused" in out["error"] and "unchanged" in out["error"]
    assert open(conf).read() == before
    assert not os.path.exists(conf + ".hacluster-new")
    assert open(log).read().count("reloaded") == 2


def test_agent_and_unit_changes_reload_units_first_then_restart_the_agent(node_dir):
    """A changed health agent config is checked (it must parse), and a unit file change makes systemd reload
    its units before the agent restarts: COMMANDS order, whatever the order of the files."""
    log = f"{node_dir}/reloads"
    cmds = {"units": {"match": ["hacluster-health.service", "10-hacluster.conf"], "check": ["true"],
                      "reload": ["sh", "-c", f"echo units >> {log}"]},
            "agent": {"match": ["health.json", "health.py"],
                      "check": ["python3", "-c", "import json, sys; json.load(open(sys.argv[1]))", "{staged}"],
                      "reload": ["sh", "-c", f"echo agent >> {log}"]}}
    files = [{"path": f"{node_dir}/health.json", "content": '{"node": "lb01"}\n', "mode": "0644"},
             {"path": f"{node_dir}/hacluster-health.service", "content": "[Service]\n", "mode": "0644"}]
    env = {**os.environ, "HACLUSTER_APPLY_CMDS": json.dumps(cmds), "HACLUSTER_APPLY_STAMP": f"{node_dir}/applied.json"}
    r = subprocess.run([sys.executable, APPLY], input=json.dumps({"node": "lb01", "files": files}),
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["reloaded"] == ["units", "agent"]
    assert open(log).read().split() == ["units", "agent"]
    bad = [{**files[0], "content": "{not json"}]
    r = subprocess.run([sys.executable, APPLY], input=json.dumps({"node": "lb01", "files": bad}),
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "refused" in json.loads(r.stdout)["error"]
    assert open(f"{node_dir}/health.json").read() == '{"node": "lb01"}\n'


def test_staged_files_are_created_private_then_given_their_mode(node_dir):
    log = f"{node_dir}/reloads"
    files = [{**files_for({}, node_dir)[0], "mode": "0640"}]
    rc, _ = apply(files, log)
    assert rc == 0 and oct(os.stat(files[0]["path"]).st_mode & 0o777) == "0o640"
    assert oct(os.stat(f"{node_dir}/applied.json").st_mode & 0o777) == "0o600"
    src = open(APPLY).read()
    assert "os.O_EXCL, 0o600)" in src and "os.fsync(fh.fileno())" in src  # created private, synced before the rename


def test_a_reload_that_leaves_the_service_unhealthy_puts_the_previous_files_back(node_dir):
    log = f"{node_dir}/reloads"
    first = files_for({}, node_dir)
    assert apply(first, log)[0] == 0
    conf = first[0]["path"]
    before = open(conf).read()
    changed = files_for({"nginx": {"clientMaxBodySize": "100m"}}, node_dir)
    # the new config's service does not come up healthy; the old one does
    rc, out = apply(changed, log, healthy=("sh", "-c", f"! grep -q 'client_max_body_size 100m' {conf}"))
    assert rc == 2 and "not healthy after its reload" in out["error"] and "put back and reloaded" in out["error"]
    assert open(conf).read() == before
    assert open(log).read().count("reloaded") == 3  # the first apply, the failed one, the restore


def test_matching_files_that_were_never_confirmed_applied_are_reloaded_again(node_dir):
    """A run that swapped the files but did not finish its reload (cancelled, failed): the next run sees the
    rendered content on disk, yet reloads it, because the stamp does not say it was applied."""
    log = f"{node_dir}/reloads"
    first = files_for({}, node_dir)
    assert apply(first, log)[0] == 0
    changed = files_for({"nginx": {"clientMaxBodySize": "100m"}}, node_dir)
    open(changed[0]["path"], "w").write(changed[0]["content"])  # swapped by an interrupted run, never reloaded
    rc, out = apply(changed, log)
    assert rc == 0 and out["changed"] == [] and out["pending"] == [changed[0]["path"]]
    assert out["reloaded"] == ["nginx"]
    rc, out = apply(changed, log)  # confirmed now
    assert (rc, out["pending"], out["reloaded"]) == (0, [], [])


def test_every_unit_file_a_node_gets_makes_day2_reload_systemd():
    """Turning the firewall on by day 2 writes its unit and the nginx/sshd drop-ins: systemd must reload
    them (the `units` kind, first in COMMANDS order), so the next start of nginx or sshd requires the rules."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("day2_apply", APPLY)
    apply_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(apply_mod)
    s = load({}, "t", ROOT, HostFacts(False, False))
    for node in s.nodes:
        for f in render.node_files(s, node, "pw"):
            if f.path.startswith("/etc/systemd/"):
                assert apply_mod.kind_of(f.path) == "units", f.path


@pytest.mark.skipif(not shutil.which("visudo"), reason="visudo (sudo) is not installed")
def test_a_sudoers_file_sudo_cannot_parse_is_refused_and_the_old_one_stays(node_dir):
    """The real COMMANDS entry of apply.py (visudo -cqf on the staged file): a broken sudoers file would
    disable sudo on the node, and with it every later day-2 change."""
    sys.path.insert(0, str(ROOT / "day2"))
    try:
        import apply as node_apply
    finally:
        sys.path.pop(0)
    s = load({}, "t", ROOT, HostFacts(True, False))
    path = f"{node_dir}/90-hacluster"
    assert node_apply.kind_of(path) == "sudoers" and node_apply.kind_of("/etc/systemd/system/hacluster-health.service") == "units"
    good = render.sudoers(s, s.master)
    cmds = {"sudoers": {**node_apply.COMMANDS["sudoers"], "reload": ["true"]}}
    stamp = f"{node_dir}/applied.json"

    def push(content):
        r = subprocess.run([sys.executable, APPLY], capture_output=True, text=True, env={
            **os.environ, "HACLUSTER_APPLY_CMDS": json.dumps(cmds), "HACLUSTER_APPLY_STAMP": stamp},
            input=json.dumps({"node": "lb01", "files": [{"path": path, "content": content, "mode": "0440"}]}))
        return r.returncode, json.loads(r.stdout)
    assert push(good)[0] == 0 and open(path).read() == good
    rc, out = push(good.replace("NOPASSWD:", "NOPASSWD"))
    assert rc != 0 and "visudo" in out["error"], out
    assert open(path).read() == good and not os.path.exists(path + ".hacluster-new")


def keepalived_files(raw, prefix):
    s = load(raw, "t", ROOT, HostFacts(True, False))
    paths = render.VM_PATHS.under(prefix)
    return [{"path": f.path, "content": f.content, "mode": f.mode} for f in render.node_files(s, s.balancers[1], "pw", paths)
            if f.path.endswith("keepalived.conf")]


def test_a_vrrp_timing_change_on_the_backup_holds_keepalived_instead_of_reloading_it(node_dir):
    log = f"{node_dir}/ops"
    cmds = {"keepalived": {"match": "keepalived.conf", "check": ["keepalived", "-t", "-f", "{staged}"],
                           "reload": ["sh", "-c", f"echo reload >> {log}"], "hold": ["sh", "-c", f"echo hold >> {log}"],
                           "unhold": ["sh", "-c", f"echo unhold >> {log}"], "healthy": ["true"]}}
    env = {**os.environ, "HACLUSTER_APPLY_CMDS": json.dumps(cmds), "HACLUSTER_APPLY_STAMP": f"{node_dir}/applied.json"}

    def push(files, hold, rc=0):
        r = subprocess.run([sys.executable, APPLY], input=json.dumps({"node": "lb02", "files": files, "holdVrrpTiming": hold}),
                           capture_output=True, text=True, env=env)
        assert r.returncode == rc, r.stdout + r.stderr
        return json.loads(r.stdout), open(log).read().split()

    os.makedirs(os.path.dirname(keepalived_files({}, node_dir)[0]["path"]), exist_ok=True)
    push(keepalived_files({}, node_dir), True)  # first apply: no previous file to compare
    out, ops = push(keepalived_files({"vrrp": {"advertInt": 2}}, node_dir), True)
    assert out.get("held") == ["keepalived"] and ops[-1] == "hold" and "keepalived" not in out["reloaded"]
    out, ops = push(keepalived_files({"vrrp": {"advertInt": 3}}, node_dir), False)  # the MASTER does not serve
    assert "held" not in out and ops[-1] == "reload"
    out, ops = push(keepalived_files({"vrrp": {"advertInt": 3, "virtualRouterId": 52}}, node_dir), True)
    assert "held" not in out and ops[-1] == "reload"  # not a timing change: reloaded as usual

    # The hold fails half way (keepalived stopped, its safety timer not set): the previous files go back
    # and keepalived is started again on them (a reload of the stopped one would fail).
    env["HACLUSTER_APPLY_CMDS"] = json.dumps({"keepalived": {**cmds["keepalived"],
                                                             "hold": ["sh", "-c", f"echo hold >> {log}; exit 1"]}})
    out, ops = push(keepalived_files({"vrrp": {"advertInt": 1, "virtualRouterId": 52}}, node_dir), True, rc=2)
    assert ops[-2:] == ["hold", "unhold"] and "put back" in out["error"], (ops, out)
