"""scripts/recover.py, which the Makefile runs before pulumi up/preview/destroy: a killed run's stale lock is
cleared (only its own file), any other lock is named and kept; pending operations are reported, and
cleared through `pulumi stack export` + `import` when asked. Lock files are fakes in the CLI's format
(pkg/backend/diy/lock.go); the pulumi and psql runs are mocks (MockPulumi, mock_psql); one test uses the
real CLI of the toolchain when it is built (a scratch file backend, nothing else)."""

import base64
import importlib.util
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("hacluster_recover", ROOT / "scripts" / "recover.py")
recover = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = recover  # dataclasses look their module up
spec.loader.exec_module(recover)

HOST = "deployhost"
NOW = "2026-12-07T08:00:00.123456789Z"


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def write_lock(state: Path, pid: int, host: str = HOST, stack: str = "dev", name: str = "a1", legacy=False,
               timestamp: str = NOW) -> Path:
    d = state / ".pulumi" / "locks" / (stack if legacy else f"organization/hacluster/{stack}")
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"{name}.json"
    f.write_text(json.dumps({"pid": pid, "username": "ops", "hostname": host, "timestamp": timestamp}))
    return f


def started_long_ago(pid: int) -> float | None:
    """process_started for a mock process table: the test's own pid runs since 2020, others are gone."""
    return 1577836800.0 if pid == os.getpid() else None


def run(state: Path, clear=False, runner=None, started=started_long_ago, host=HOST, stack="dev") -> int:
    return recover.recover(stack, f"file://{state}", ROOT, clear, host=host, run=runner or MockPulumi(),
                           started=started)


def lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# ---- locks -------------------------------------------------------------------------------------------
def test_a_dead_pids_lock_on_this_host_is_cleared_in_one_line(tmp_path, capsys):
    lock = write_lock(tmp_path, 424242)
    assert run(tmp_path) == 0
    assert not lock.exists()
    out = lines(capsys)
    assert len(out) == 1 and out[0].startswith("recover: cleared the stale lock of stack dev held by ops@deployhost "
                                               "(pid 424242") and "no longer runs on this host" in out[0]


def test_a_live_pids_lock_is_kept_and_named(tmp_path, capsys):
    lock = write_lock(tmp_path, os.getpid())
    assert run(tmp_path) == 1
    assert lock.exists()
    out = lines(capsys)
    assert len(out) == 1 and f"kill {os.getpid()}" in out[0] and "still runs on this host" in out[0]


def test_a_reused_pid_makes_the_lock_stale(tmp_path, capsys):
    lock = write_lock(tmp_path, os.getpid(), timestamp="2019-01-01T00:00:00Z")  # taken before our pid started
    assert run(tmp_path) == 0
    assert not lock.exists() and "is now another process" in lines(capsys)[0]


def test_another_hosts_lock_is_never_cleared(tmp_path, capsys):
    lock = write_lock(tmp_path, 424242, host="otherhost")
    assert run(tmp_path) == 1
    assert lock.exists()
    assert lines(capsys) == ["recover: stack dev is locked by ops@otherhost (pid 424242, since " + NOW + ") on another "
                             "host: not cleared from here; once that run has ended, run `pulumi cancel --stack dev`"]


def test_only_the_stale_one_of_two_locks_goes(tmp_path, capsys):
    stale, live = write_lock(tmp_path, 424242, name="a1"), write_lock(tmp_path, os.getpid(), name="b2")
    assert run(tmp_path) == 1
    assert not stale.exists() and live.exists()
    assert len(lines(capsys)) == 2


def test_legacy_layout_and_other_stacks(tmp_path, capsys):
    legacy = write_lock(tmp_path, 424242, legacy=True)
    other = write_lock(tmp_path, 424242, stack="prod")
    assert run(tmp_path) == 0
    assert not legacy.exists() and other.exists(), "only the stack asked about"


def test_a_broken_lock_file_is_one_line(tmp_path, capsys):
    lock = write_lock(tmp_path, 1)
    lock.write_text("{not json")
    with pytest.raises(recover.Failed, match="is not a Pulumi lock file"):
        run(tmp_path)
    assert lock.exists()


def test_process_started_reads_proc():
    assert recover.process_started(dead_pid()) is None
    me = recover.process_started(os.getpid())
    assert me is not None and me <= __import__("time").time() + 1


def test_main_says_one_line_and_exits_1_on_a_bad_stack_name(monkeypatch, capsys):
    monkeypatch.setenv("PULUMI_BACKEND_URL", "file:///nonexistent")
    assert recover.main(["--stack", "dev;rm"]) == 1
    assert lines(capsys) == ["recover: stack name 'dev;rm': letters, digits, '_', '.', '-' only"]


# ---- PostgreSQL: read only ---------------------------------------------------------------------------
def test_a_postgres_lock_is_named_never_cleared_and_the_password_stays_out_of_argv(monkeypatch, capsys):
    calls = []

    def mock_psql(argv, env=None, **_kw):
        calls.append((argv, env))
        lock = json.dumps({"pid": 7, "username": "ops", "hostname": "teamhost", "timestamp": NOW})
        row = ".pulumi/locks/organization/hacluster/dev/x.json\t" + base64.b64encode(lock.encode()).decode()
        return subprocess.CompletedProcess(argv, 0, row + "\n", "")

    monkeypatch.setattr(recover.subprocess, "run", mock_psql)
    rc = recover.recover("dev", "postgres://hacluster:s3cret-pw@127.0.0.1:55432/pulumi?sslmode=disable", ROOT, True,
                         host=HOST)
    assert rc == 1
    argv, env = calls[0]
    assert "s3cret-pw" not in " ".join(argv) and env["PGPASSWORD"] == "s3cret-pw" and env["PGPORT"] == "55432"
    assert "FROM pulumi_state" in argv[-1] and "/dev/" in argv[-1]
    out = lines(capsys)
    assert out == ["recover: stack dev is locked by ops@teamhost (pid 7, since " + NOW + ") on another host "
                   "(PostgreSQL backend: never cleared from here); once that run has ended, run `pulumi cancel --stack dev`"]


def test_a_postgres_table_name_must_be_an_identifier():
    with pytest.raises(recover.Failed, match="not a plain SQL identifier"):
        recover.pg_env("postgres://u@h/db?table=x;drop")


# ---- pending operations ----------------------------------------------------------------------------
class MockPulumi:
    """Records pulumi runs; `stack export` writes a deployment to --file, `stack import` reads it."""

    def __init__(self, fail: str | None = None):
        self.calls, self.fail, self.files = [], fail, []

    def __call__(self, argv):
        self.calls.append(argv[:2])
        path = Path(argv[argv.index("--file") + 1])
        if argv[:2] == ["stack", "export"]:
            self.files.append(path)
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            path.write_text('{"version": 3, "deployment": {}}')
        elif argv[:2] == ["stack", "import"]:
            assert path.read_text().startswith('{"version": 3')
        rc = 1 if self.fail == argv[1] else 0
        return subprocess.CompletedProcess(argv, rc, "", "error: mock import refused\n" if rc else "")


def write_checkpoint(state: Path, ops: list) -> None:
    d = state / ".pulumi" / "stacks" / "hacluster"
    d.mkdir(parents=True, exist_ok=True)
    (d / "dev.json").write_text(json.dumps({"version": 3, "checkpoint": {"stack": "dev", "latest": {
        "resources": [], "pending_operations": ops}}}))


PENDING = [{"resource": {"urn": "urn:pulumi:dev::hacluster::libvirt:index/domain:Domain::lb01"}, "type": "creating"}]


def test_pending_operations_are_reported_without_clear(tmp_path, capsys):
    write_checkpoint(tmp_path, PENDING)
    mock = MockPulumi()
    assert run(tmp_path, clear=False, runner=mock) == 0
    assert not mock.calls
    out = lines(capsys)
    assert len(out) == 1 and "has 1 pending operation" in out[0] and out[0].endswith("`make up` clears them")


def test_pending_operations_are_cleared_by_export_and_import(tmp_path, capsys):
    write_checkpoint(tmp_path, PENDING)
    mock = MockPulumi()
    assert run(tmp_path, clear=True, runner=mock) == 0
    assert mock.calls == [["stack", "export"], ["stack", "import"]]
    assert not mock.files[0].parent.exists(), "the exported deployment must not stay behind"
    out = lines(capsys)
    assert out == ["recover: cleared 1 pending operation of stack dev left by an interrupted `pulumi up`: "
                   "urn:pulumi:dev::hacluster::libvirt:index/domain:Domain::lb01 (creating); the next `pulumi up` "
                   "makes or adopts those objects"]


def test_a_failed_import_is_one_line_with_the_commands(tmp_path):
    write_checkpoint(tmp_path, PENDING)
    with pytest.raises(recover.Failed, match="mock import refused; run `pulumi stack export"):
        run(tmp_path, clear=True, runner=MockPulumi(fail="import"))


def test_nothing_pending_nothing_run(tmp_path, capsys):
    write_checkpoint(tmp_path, [])
    mock = MockPulumi()
    assert run(tmp_path, clear=True, runner=mock) == 0 and not mock.calls and not capsys.readouterr().err


def test_a_live_lock_leaves_pending_operations_alone(tmp_path):
    write_checkpoint(tmp_path, PENDING)
    write_lock(tmp_path, os.getpid())
    mock = MockPulumi()
    assert run(tmp_path, clear=True, runner=mock) == 1 and not mock.calls


# ---- the real CLI ------------------------------------------------------------------------------------
def _pulumi() -> str | None:
    for p in (os.environ.get("HACLUSTER_PULUMI"), str(ROOT / ".tools" / "bin" / "pulumi"), shutil.which("pulumi")):
        if p and os.access(p, os.X_OK):
            return p
    return None


@pytest.mark.skipif(_pulumi() is None, reason="the pulumi CLI is not built (make toolchain; or HACLUSTER_PULUMI=path)")
def test_the_real_cli_is_unlocked_and_loses_its_pending_create(tmp_path, monkeypatch, capsys):
    """A scratch file backend: a killed run's lock makes the CLI refuse; after recover it works again. A pending
    create written into the checkpoint is gone after recover --clear-pending."""
    pulumi = _pulumi()
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: hacluster\nruntime: python\n")
    state = tmp_path / "state"
    state.mkdir()
    env = {"PULUMI_HOME": str(tmp_path / "home"), "PULUMI_BACKEND_URL": f"file://{state}",
           "PULUMI_CONFIG_PASSPHRASE": "mock-passphrase", "PULUMI_SKIP_UPDATE_CHECK": "true",
           "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    def cli(*argv):
        return subprocess.run([pulumi, *argv], cwd=project, capture_output=True, text=True, timeout=120)

    assert cli("stack", "init", "dev").returncode == 0
    assert cli("stack", "export", "--stack", "dev", "--file", str(tmp_path / "x.json")).returncode == 0
    write_lock(state, dead_pid(), host=socket.gethostname())  # what a kill -9 of `pulumi up` leaves
    r = cli("stack", "import", "--stack", "dev", "--file", str(tmp_path / "x.json"))
    assert r.returncode != 0 and "the stack is currently locked" in r.stderr

    def real(argv):
        return subprocess.run([pulumi, *argv], cwd=project, capture_output=True, text=True, timeout=120)

    cp = state / ".pulumi" / "stacks" / "hacluster" / "dev.json"
    d = json.loads(cp.read_text())
    d["checkpoint"].setdefault("latest", {})["pending_operations"] = [
        {"resource": {"urn": "urn:pulumi:dev::hacluster::libvirt:index/domain:Domain::lb01", "custom": True,
                      "type": "libvirt:index/domain:Domain"}, "type": "creating"}]
    cp.write_text(json.dumps(d))
    assert recover.recover("dev", f"file://{state}", ROOT, True, run=real) == 0
    out = lines(capsys)
    assert len(out) == 2 and "cleared the stale lock" in out[0] and "cleared 1 pending operation" in out[1]
    assert not json.loads(cp.read_text())["checkpoint"]["latest"].get("pending_operations")
    assert cli("stack", "import", "--stack", "dev", "--file", str(tmp_path / "x.json")).returncode == 0
