"""Shared state in PostgreSQL (issue 14): the Pulumi CLI built here (`make toolchain`) with
PULUMI_BACKEND_URL=postgres://... against Debian's PostgreSQL 15, which the test starts through
scripts/pg.sh on 127.0.0.1 (a data dir and a port of its own) and stops after. No VMs: a small Python
program (one local command, one secret output) in two working dirs, as two team members' checkouts.

The tests run in order, on one stack: up, a second checkout, a concurrent up, the rows, destroy.
"""

import base64
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: scripts/pg.sh runs PostgreSQL as user postgres in a data dir it creates")

SECRET = f"S3cret-{uuid.uuid4().hex[:12]}"
GREETING = "hello-from-pg-state"
PROJECT = "hacluster-pgstate"
STACK = f"pg-{uuid.uuid4().hex[:6]}"
LOCKED = "the stack is currently locked by 1 lock(s)"

PROGRAM = f'''
import time
from pathlib import Path

import pulumi
from pulumi_command import local

hello = local.Command("hello", create="echo {GREETING}")
for _ in range(1200):  # the test holds this update open (and the stack's lock with it) while ./hold exists
    if not Path("hold").exists():
        break
    time.sleep(0.1)
pulumi.export("greeting", hello.stdout)
pulumi.export("token", pulumi.Config().require_secret("token"))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg():
    """A PostgreSQL of the test's own (scripts/pg.sh): yields the backend URL; stopped and removed after."""
    env = {**os.environ, "HACLUSTER_PG_DIR": str(ROOT / f".pg/e2e-{uuid.uuid4().hex[:6]}"),
           "HACLUSTER_PG_PORT": str(free_port())}
    pg_sh = ["bash", str(ROOT / "scripts/pg.sh")]
    subprocess.run([*pg_sh, "start"], env=env, check=True, capture_output=True, text=True, timeout=120)
    try:
        yield subprocess.run([*pg_sh, "url"], env=env, check=True, capture_output=True, text=True).stdout.strip()
    finally:
        subprocess.run([*pg_sh, "stop"], env=env, check=True, capture_output=True, timeout=60)
        shutil.rmtree(env["HACLUSTER_PG_DIR"])


@pytest.fixture(scope="module")
def team(pg, tmp_path_factory):
    """Two checkouts (a, b) of one project, the stack made in `a` with a secret config value; `b` is a copy
    of `a` afterwards, as a clone of a repository holding Pulumi.<stack>.yaml. Yields (pulumi, env, a, b)."""
    if not (ROOT / ".tools/bin/pulumi").exists():
        pytest.fail("needs the toolchain: run `make toolchain`")
    tmp = tmp_path_factory.mktemp("pgstate")
    env = {**os.environ, "PATH": f"{ROOT / '.tools/bin'}:{ROOT / 'venv/bin'}:{os.environ['PATH']}",
           "PULUMI_HOME": str(tmp / "home"), "PULUMI_BACKEND_URL": pg, "PULUMI_CONFIG_PASSPHRASE": "e2e-pg",
           "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true"}

    def pulumi(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["nice", "-n", "19", "pulumi", *args, "--non-interactive"], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 or not check, f"pulumi {' '.join(args)}: {r.stdout}{r.stderr}"
        return r

    a, b = tmp / "a", tmp / "b"
    a.mkdir()
    (a / "Pulumi.yaml").write_text(f"name: {PROJECT}\nruntime:\n  name: python\n  options:\n"
                                   f"    toolchain: pip\n    virtualenv: {ROOT / 'venv'}\n")
    (a / "__main__.py").write_text(PROGRAM)
    pulumi(a, "stack", "init", STACK)
    pulumi(a, "config", "set", "--secret", "token", SECRET, "--stack", STACK)
    shutil.copytree(a, b)
    try:
        yield pulumi, env, a, b
    finally:  # whatever a failed test left behind
        if STACK in pulumi(a, "stack", "ls", check=False).stdout:
            pulumi(a, "destroy", "--yes", "--skip-preview", "--stack", STACK, check=False)
            pulumi(a, "stack", "rm", "--yes", "--force", "--remove-backups", STACK, check=False)


def psql(url: str, sql: str) -> str:
    return subprocess.run(["psql", url, "-X", "-At", "-c", sql], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def rows(url: str) -> dict[str, str]:
    """Every row of the backend's table: key -> the stored object, decoded (the backend keeps it base64)."""
    out = {}
    for line in psql(url, "SELECT key, data->>'data' FROM pulumi_state").splitlines():
        key, _, data = line.partition("|")
        out[key] = base64.b64decode(data).decode()
    return out


def test_up_stores_the_stack_in_postgres(team, pg):
    pulumi, _, a, _ = team
    out = pulumi(a, "up", "--yes", "--skip-preview", "--stack", STACK).stdout
    assert GREETING in out and SECRET not in out
    assert any(k.endswith(f"/stacks/{PROJECT}/{STACK}.json") for k in rows(pg)), rows(pg).keys()


def test_a_second_checkout_sees_the_stack_and_its_outputs(team):
    pulumi, _, _, b = team
    assert STACK in pulumi(b, "stack", "ls").stdout
    assert f'"greeting": "{GREETING}"' in pulumi(b, "stack", "output", "--json", "--stack", STACK).stdout
    assert pulumi(b, "stack", "output", "token", "--show-secrets", "--stack", STACK).stdout.strip() == SECRET
    out = pulumi(b, "up", "--yes", "--stack", STACK).stdout
    assert "2 unchanged" in out, out


def test_a_concurrent_up_is_refused_by_the_lock(team, pg):
    pulumi, env, a, b = team
    (a / "hold").touch()
    first = subprocess.Popen(["nice", "-n", "19", "pulumi", "up", "--yes", "--skip-preview", "--stack", STACK,
                              "--non-interactive"], cwd=a, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any("/.pulumi/locks/" in k for k in rows(pg)):
            assert first.poll() is None and time.monotonic() < deadline, "the first up never took the lock"
            time.sleep(0.2)
        second = pulumi(b, "up", "--yes", "--skip-preview", "--stack", STACK, check=False)
        out = second.stdout + second.stderr
        assert second.returncode != 0 and LOCKED in out, out
        assert "created by" in out and "Traceback" not in out
        password = pg.split(":")[2].split("@")[0]
        assert password not in out, "the lock message shows the database password"
    finally:
        (a / "hold").unlink()
        out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    assert not any("/.pulumi/locks/" in k for k in rows(pg)), "the first up left its lock"


def test_no_secret_in_clear_text_in_any_row(pg):
    dump = subprocess.run(["pg_dump", "--data-only", pg], check=True, capture_output=True, text=True).stdout
    stored = rows(pg)
    assert SECRET not in dump
    assert all(SECRET not in text for text in stored.values())
    assert any(GREETING in text for text in stored.values()), "decoding the rows failed: no plain output found"
    state = next(t for k, t in stored.items() if k.endswith(f"/stacks/{PROJECT}/{STACK}.json"))
    assert '"ciphertext"' in state and '"type":"passphrase"' in state.replace(" ", "")


def test_destroy_and_stack_rm_leave_no_stack_rows(team, pg):
    pulumi, _, a, b = team
    pulumi(b, "destroy", "--yes", "--skip-preview", "--stack", STACK)
    pulumi(a, "stack", "rm", "--yes", "--remove-backups", STACK)  # (without it the backups stay)
    left = [k for k in rows(pg) if f"/{PROJECT}/" in k or STACK in k]
    assert left == [], left
    assert STACK not in pulumi(b, "stack", "ls").stdout
