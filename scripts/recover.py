"""Before `pulumi up/preview/destroy` (the Makefile runs it): recover a stack from a `pulumi up` that was
killed (kill -9, a lost terminal), so the rerun does not fail.

    python scripts/recover.py --stack dev [--clear-pending]

1. Its lock. A killed `pulumi up` leaves its lock, and every later run fails with "the stack is
   currently locked". The file backend (PULUMI_BACKEND_URL file://DIR) keeps one JSON file per lock,
   DIR/.pulumi/locks/organization/<project>/<stack>/<id>.json = {pid, username, hostname, timestamp}
   (pkg/backend/diy/lock.go of the CLI we build, v3.274.1). A lock made on this host whose process no
   longer runs (or whose PID now belongs to a process started after the lock was taken) is stale: said in
   one line and its file removed (only that file: `pulumi cancel` would remove every lock of the stack,
   a live one too). A lock of a live process, of another host, or on any other backend (PostgreSQL:
   read with psql, the connection in PG* variables, never in argv) is never cleared: one line names its
   holder and what to run, exit 1.
2. Pending operations. A killed `pulumi up` leaves the operations it was waiting for in the state; pending
   creates stay there until cleared (`pulumi up` only warns, and creates those objects again). This CLI's
   `pulumi stack import` drops every pending operation (cmd/pulumi/stack/io.go: "removing pending
   operation ... from snapshot"), so with --clear-pending (make up, make destroy) on the file backend the
   stack is exported to a private file and imported back unchanged; each one cleared is named. The
   objects they had made are adopted by the next `pulumi up`: the libvirt plugin takes over a same-named
   object that carries this stack's marker (toolchain/provider-libvirt adopt.go). `pulumi refresh
   --clear-pending-creates` would do as well, but reads every resource first (libvirt must be up).
   Without --clear-pending (make preview) they are only reported.

Exit 0: nothing in the way (any stale lock and pending operation cleared); 1: a lock that is not ours
to clear, or a recovery step that failed (one line each, what to do in it).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
PULUMI_TIMEOUT_S = 120.0
PSQL_TIMEOUT_S = 20.0
MAX_LOCKS = 100


def say(msg: str) -> None:
    print(f"recover: {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    """One line for the user: what, where, what to do."""


# ---- locks -----------------------------------------------------------------------------------------
@dataclass
class Lock:
    path: str  # the lock's file (or key, on a non-file backend)
    pid: int
    username: str
    hostname: str
    timestamp: str

    @property
    def holder(self) -> str:
        return f"{self.username}@{self.hostname} (pid {self.pid}, since {self.timestamp})"


def parse_lock(path: str, text: str) -> Lock:
    try:
        d = json.loads(text)
        return Lock(path, int(d["pid"]), str(d.get("username", "?")), str(d["hostname"]), str(d.get("timestamp", "?")))
    except (ValueError, KeyError, TypeError) as e:
        raise Failed(f"lock {path} is not a Pulumi lock file ({type(e).__name__}: {e}); look at it, and remove it "
                     "by hand if no `pulumi` runs on this stack") from None


def project_name(root: Path) -> str:
    m = re.search(r"^name:\s*(\S+)\s*$", (root / "Pulumi.yaml").read_text(), re.MULTILINE)
    if not m:
        raise Failed(f"{root / 'Pulumi.yaml'} has no `name:`")
    return m.group(1).strip("'\"")


def file_locks(state: Path, project: str, stack: str) -> list[Lock]:
    """The stack's lock files: project-scoped layout (meta.yaml version 1) and the legacy one."""
    dirs = [state / ".pulumi" / "locks" / "organization" / project / stack, state / ".pulumi" / "locks" / stack]
    locks = []
    for d in dirs:
        if d.is_dir():
            for f in sorted(d.glob("*.json"))[:MAX_LOCKS]:
                locks.append(parse_lock(str(f), f.read_text()))
    return locks


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def process_started(pid: int, proc: Path = Path("/proc")) -> float | None:
    """When process `pid` started (epoch seconds), None when it does not run."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def lock_time(lock: Lock) -> float | None:
    try:
        return datetime.fromisoformat(lock.timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def stale_why(lock: Lock, host: str, started=process_started) -> str | None:
    """Why `lock` is stale (its process is gone), or None when it may still be held."""
    if lock.hostname != host:
        return None
    began = started(lock.pid)
    if began is None:
        return f"pid {lock.pid} no longer runs on this host"
    taken = lock_time(lock)
    if taken is not None and began > taken + 2:  # 2 s: clock tick rounding
        return f"pid {lock.pid} is now another process (started after the lock was taken)"
    return None


def clear_stale_locks(locks: list[Lock], stack: str, host: str, started=process_started) -> list[str]:
    """Remove the stale ones (one line each); the lines saying why each other one stays."""
    blocked = []
    for lock in locks:
        why = stale_why(lock, host, started)
        if why:
            Path(lock.path).unlink(missing_ok=True)
            say(f"cleared the stale lock of stack {stack} held by {lock.holder}: {why} (a killed `pulumi`); "
                f"removed {lock.path}")
        elif lock.hostname == host:
            blocked.append(f"stack {stack} is locked by {lock.holder}, a `pulumi` that still runs on this host: wait "
                           f"for it to end, or stop it (kill {lock.pid}); lock file {lock.path}")
        else:
            blocked.append(f"stack {stack} is locked by {lock.holder} on another host: not cleared from here; once "
                           f"that run has ended, run `pulumi cancel --stack {stack}`")
    return blocked


# ---- PostgreSQL backend: read only -----------------------------------------------------------------
def pg_env(url: str) -> tuple[dict[str, str], str]:
    """libpq variables for `url` (the password in PGPASSWORD, never in argv) and the state table."""
    u = urlparse(url)
    q = parse_qs(u.query)
    env = {"PGHOST": u.hostname or "127.0.0.1", "PGPORT": str(u.port or 5432),
           "PGDATABASE": unquote(u.path.lstrip("/")) or "postgres", "PGCONNECT_TIMEOUT": "10"}
    if u.username:
        env["PGUSER"] = unquote(u.username)
    if u.password:
        env["PGPASSWORD"] = unquote(u.password)
    if q.get("sslmode"):
        env["PGSSLMODE"] = q["sslmode"][0]
    table = q.get("table", ["pulumi_state"])[0]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", table):
        raise Failed(f"backend table name {table!r} is not a plain SQL identifier")
    return env, table


def pg_locks(url: str, stack: str) -> list[Lock]:
    env, table = pg_env(url)
    # Each row's data is {"data": base64 of the file} (pkg/backend/diy/postgres/bucket.go).
    sql = f"SELECT key, data->>'data' FROM {table} WHERE key LIKE '%/locks/%/{stack}/%.json' LIMIT {MAX_LOCKS}"
    try:
        r = subprocess.run(["psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=PSQL_TIMEOUT_S,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Failed(f"could not read the stack's locks from the PostgreSQL backend ({e}); if pulumi says the stack is "
                     f"locked, check that no `pulumi` runs on it, then run `pulumi cancel --stack {stack}`") from None
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["?"])[-1]
        raise Failed(f"could not read the stack's locks from the PostgreSQL backend: {why}; if pulumi says the stack is "
                     f"locked, check that no `pulumi` runs on it, then run `pulumi cancel --stack {stack}`")
    out = []
    for line in r.stdout.splitlines():
        key, _, data = line.partition("\t")
        if key:
            try:
                text = base64.b64decode(data, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                text = data  # not base64: parse_lock says what it is
            out.append(parse_lock(key, text))
    return out


# ---- pending operations (file backend) -------------------------------------------------------------
def checkpoint(state: Path, project: str, stack: str) -> dict | None:
    base = state / ".pulumi" / "stacks" / project
    for path, opener in ((base / f"{stack}.json", open), (base / f"{stack}.json.gz", gzip.open)):
        if path.exists():
            with opener(path, "rt") as f:
                return json.load(f)
    return None


def pending_operations(cp: dict | None) -> list[tuple[str, str]]:
    """(urn, what it was doing) of each pending operation in a checkpoint file's JSON."""
    latest = ((cp or {}).get("checkpoint") or {}).get("latest") or {}
    return [(str((op.get("resource") or {}).get("urn", "?")), str(op.get("type", "?")))
            for op in latest.get("pending_operations") or []]


def run_pulumi(argv: list[str], pulumi: str = "pulumi") -> subprocess.CompletedProcess:
    try:
        return subprocess.run([pulumi, *argv], capture_output=True, text=True, timeout=PULUMI_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Failed(f"`pulumi {' '.join(argv[:2])}` could not run: {e}") from None


def clear_pending(stack: str, ops: list[tuple[str, str]], run=run_pulumi) -> None:
    """`pulumi stack export` into a private file, `pulumi stack import` of it unchanged (which drops every
    pending operation); the file goes away at once."""
    d = tempfile.mkdtemp(prefix="hacluster-recover-")  # 0700: the deployment (secrets only as ciphertext)
    try:
        path = os.path.join(d, "deployment.json")
        r = run(["stack", "export", "--stack", stack, "--file", path])
        if r.returncode == 0:
            r = run(["stack", "import", "--stack", stack, "--file", path])
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        raise Failed(f"clearing the pending operations of stack {stack} failed: {why}; run `pulumi stack export "
                     f"--stack {stack} --file F && pulumi stack import --stack {stack} --file F` by hand")
    say(f"cleared {len(ops)} pending operation{'s' if len(ops) != 1 else ''} of stack {stack} left by an interrupted "
        f"`pulumi up`: " + ", ".join(f"{urn} ({what})" for urn, what in ops)
        + "; the next `pulumi up` makes or adopts those objects")


# ---- main --------------------------------------------------------------------------------------------
def recover(stack: str, backend: str, root: Path, clear: bool, host: str | None = None, run=run_pulumi,
            started=process_started) -> int:
    if not STACK_NAME.match(stack):
        raise Failed(f"stack name {stack!r}: letters, digits, '_', '.', '-' only")
    host = host or socket.gethostname()
    if backend.startswith("postgres://") or backend.startswith("postgresql://"):
        locks = pg_locks(backend, stack)
        for lock in locks:
            where = "this host" if lock.hostname == host else "another host"
            say(f"stack {stack} is locked by {lock.holder} on {where} (PostgreSQL backend: never cleared from here); "
                f"once that run has ended, run `pulumi cancel --stack {stack}`")
        return 1 if locks else 0
    if not backend.startswith("file://"):
        return 0  # another backend: its own locking, nothing to read here
    u = urlparse(backend)
    state = Path.home() / unquote(u.path).lstrip("/") if u.netloc == "~" else Path(unquote(u.path))  # file://~/x
    project = project_name(root)
    blocked = clear_stale_locks(file_locks(state, project, stack), stack, host, started)
    for line in blocked:
        say(line)
    if blocked:
        return 1
    ops = pending_operations(checkpoint(state, project, stack))
    if ops and clear:
        clear_pending(stack, ops, run)
    elif ops:
        say(f"stack {stack} has {len(ops)} pending operation{'s' if len(ops) != 1 else ''} from an interrupted "
            f"`pulumi up` ({', '.join(f'{u} ({w})' for u, w in ops)}); `make up` clears them")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/recover.py", description=__doc__.splitlines()[0])
    ap.add_argument("--stack", required=True)
    ap.add_argument("--clear-pending", action="store_true", help="clear pending operations (file backend)")
    args = ap.parse_args(argv)
    backend = os.environ.get("PULUMI_BACKEND_URL", "")
    try:
        return recover(args.stack, backend, Path(__file__).resolve().parent.parent, args.clear_pending)
    except (Failed, OSError, ValueError) as e:
        say(str(e) if isinstance(e, Failed) else f"could not check stack {args.stack} for a killed run's lock or "
            f"pending operations ({type(e).__name__}: {e})")
        return 1


if __name__ == "__main__":
    sys.exit(main())
