"""Runs ON A NODE (as root, python3 only, no project imports): stage, validate, swap, reload, check; undo.

Input (stdin, JSON): {"files": [{"path", "content", "mode", "owner"?}], "node": "lb01"}.
Each changed file is staged next to its target as `<path>.hacluster-new` (created 0600, written, synced,
then given its mode and owner); the node's own tools check the staged set (`nginx -t`, `keepalived -t`,
`nft -c`); only when every check passes are the files renamed into place and the services reloaded (not
restarted), each then checked healthy (nginx answers /healthz, keepalived and the agent run). If a reload
or a health check fails, the previous files are put back and reloaded: the node keeps its running config.

A stamp (`/var/lib/hacluster/applied.json`: each file's sha256 as last applied and reloaded) makes it
transactional across runs too: a file that already has the rendered content but was never confirmed
applied (a reload that failed, a cancelled run) is reloaded again. Output (stdout, JSON):
{"node", "changed": [...], "pending": [...], "reloaded": [...]} or exit 2 with {"error": ...}.
"""

import hashlib
import json
import os
import pwd
import re
import subprocess
import sys
import time

SUFFIX = ".hacluster-new"
STAMP = os.environ.get("HACLUSTER_APPLY_STAMP", "/var/lib/hacluster/applied.json")
HEALTH_TRIES = 20  # x 0.5 s: a reloaded nginx answers within seconds even on a loaded guest
NGINX_OK = ["python3", "-c", "import socket,sys\ns=socket.create_connection(('127.0.0.1',80),3)\n"
            "s.sendall(b'GET /healthz HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n')\n"
            "sys.exit(0 if s.recv(12)[9:10]==b'2' else 1)"]
# A VRRP timing change (advert_int; VRRPv2 drops adverts whose interval differs from its own) on the BACKUP,
# while the MASTER serves: keepalived is stopped instead of reloaded, so it cannot turn MASTER on the
# MASTER's old-interval adverts meanwhile. The MASTER's day 2 (next) starts it again once it has the new
# timing too (day2/gate.py); a timer starts it after HOLD_S whatever happens.
HOLD_UNIT = "hacluster-vrrp-hold"
HOLD_S = 90
HOLD = ["sh", "-c", f"systemctl stop {HOLD_UNIT}.timer 2>/dev/null; systemctl stop keepalived && "
        f"systemd-run --quiet --unit={HOLD_UNIT} --on-active={HOLD_S} /bin/systemctl start keepalived"]
# A rollback after a hold starts keepalived again on the previous files (a reload of a stopped one fails).
UNHOLD = ["sh", "-c", f"systemctl stop {HOLD_UNIT}.timer 2>/dev/null; systemctl start keepalived"]
TIMING = re.compile(r"^\s*(advert_int|version)\s+\S+", re.M)


# What validates, reloads and proves healthy each kind of file. Overridable for tests (HACLUSTER_APPLY_CMDS).
COMMANDS = {
    # systemd units and drop-ins first: the restarts below must see them.
    "units": {"match": ("hacluster-health.service", "hacluster-firewall.service", "10-hacluster.conf",
                        "20-hacluster-firewall.conf"), "check": ["true"],
              "reload": ["systemctl", "daemon-reload"], "healthy": ["true"]},
    "agent": {"match": ("health.json", "health.py"),
              "check": ["python3", "-c", "import ast, json, sys; p = sys.argv[1]; t = open(p).read(); "
                        "json.loads(t) if p.split('.hacluster-new')[0].endswith('.json') else ast.parse(t)",
                        "{staged}"],
              # enabled too: a node deployed before the agent existed gets it for its next boots as well
              "reload": ["sh", "-c", "systemctl --no-reload enable hacluster-health && systemctl restart hacluster-health"],
              "healthy": ["systemctl", "is-active", "--quiet", "hacluster-health"]},
    "nginx": {"match": "nginx.conf", "check": ["nginx", "-t", "-q", "-c", "{staged}"],
              "reload": ["systemctl", "reload", "nginx"], "healthy": NGINX_OK},
    "keepalived": {"match": "keepalived.conf", "check": ["keepalived", "-t", "-f", "{staged}"],
                   "reload": ["systemctl", "reload", "keepalived"], "hold": HOLD, "unhold": UNHOLD,
                   "healthy": ["systemctl", "is-active", "--quiet", "keepalived"]},
    "nftables": {"match": "nftables.conf", "check": ["nft", "-c", "-f", "{staged}"],
                 "reload": ["nft", "-f", "{path}"], "healthy": ["nft", "list", "table", "inet", "hacluster"]},
    # A sudoers file sudo cannot parse disables sudo for everyone: checked before it replaces the old one
    # (sudo skips the staged name: it holds a '.').
    "sudoers": {"match": "90-hacluster", "check": ["visudo", "-cqf", "{staged}"], "reload": ["true"],
                "healthy": ["true"]},
}


def timing(text):
    return sorted(m.group(0).strip() for m in TIMING.finditer(text or ""))


def kind_of(path, commands=COMMANDS):
    name = os.path.basename(path)
    return next((k for k, c in commands.items() if name.startswith(c["match"] if isinstance(c["match"], str)
                                                                  else tuple(c["match"]))), None)


def run(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]}: timed out after 60 s"
    return r.returncode, (r.stdout + r.stderr).strip()


def check_ok(kind, rc, out):
    # keepalived 2.2.7 SIGTERMs itself at the end of -t when scripts are configured: judge by output.
    if kind == "keepalived":
        return rc in (0, -15, 143) and not out
    return rc == 0


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def write_atomic(path, content, mode=0o644, owner="root"):
    """`path` gets `content`: staged 0600, synced, then its mode and owner, renamed over it."""
    tmp = path + SUFFIX
    stage(tmp, content, mode, owner)
    os.replace(tmp, path)
    sync_dir(path)


def stage(tmp, content, mode, owner):
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
        if owner != "root":
            pw = pwd.getpwnam(owner)
            os.fchown(fh.fileno(), pw.pw_uid, pw.pw_gid)
        os.fchmod(fh.fileno(), mode)


def sync_dir(path):
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_stamp():
    try:
        with open(STAMP) as fh:
            stamp = json.load(fh)
        return stamp if isinstance(stamp, dict) else {}
    except (OSError, ValueError):
        return None


def healthy(argv):
    for _ in range(HEALTH_TRIES):
        rc, out = run(argv)
        if rc == 0:
            return True, ""
        time.sleep(0.5)
    return False, out


def reload_all(kinds, paths, commands):
    """Reload each kind in COMMANDS order and check it healthy; the first failure as a message, or None."""
    for kind in [k for k in commands if k in kinds]:
        argv = [a.format(path=paths[kind]) for a in commands[kind]["reload"]]
        rc, out = run(argv)
        if rc != 0:
            return kind, f"{' '.join(argv)}: rc {rc}: {out[-400:]}"
        ok, out = healthy(commands[kind].get("healthy", ["true"]))
        if not ok:
            return kind, f"{kind} is not healthy after its reload ({' '.join(commands[kind]['healthy'][:3])}): {out[-300:]}"
    return None


def main():
    payload = json.load(sys.stdin)
    node, files = payload.get("node"), payload["files"]
    commands = {**COMMANDS, **json.loads(os.environ.get("HACLUSTER_APPLY_CMDS", "{}"))}
    stamp = load_stamp()
    first = stamp is None  # first boot: cloud-init wrote the files and systemd started the services on them
    stamp = stamp or {}
    current = {f["path"]: read(f["path"]) for f in files}
    changed = [f for f in files if current[f["path"]] != f["content"]]
    pending = [f["path"] for f in files if not first and current[f["path"]] == f["content"]
               and kind_of(f["path"], commands) and stamp.get(f["path"]) != sha(f["content"])]
    staged = []
    try:
        for f in changed:
            stage(f["path"] + SUFFIX, f["content"], int(f["mode"], 8), f.get("owner", "root"))
            staged.append(f["path"])
        for path in staged:
            kind = kind_of(path, commands)
            if kind is None:
                continue
            argv = [a.format(staged=path + SUFFIX, path=path) for a in commands[kind]["check"]]
            rc, out = run(argv)
            if not check_ok(kind, rc, out):
                raise RuntimeError(f"{' '.join(argv[:2])} refused the new {os.path.basename(path)} "
                                   f"(rc {rc}): {out[-400:]}; the running config is unchanged")
    except Exception as e:  # every failure is reported the same way
        for path in staged:
            if os.path.exists(path + SUFFIX):
                os.remove(path + SUFFIX)
        print(json.dumps({"node": node, "error": str(e)}))
        return 2
    for path in staged:
        os.replace(path + SUFFIX, path)
        sync_dir(path)
    paths = {}
    for path in [*staged, *pending]:
        paths.setdefault(kind_of(path, commands), path)
    kinds = set(paths) - {None}
    held = [f["path"] for f in changed if payload.get("holdVrrpTiming") and kind_of(f["path"], commands) == "keepalived"
            and timing(current[f["path"]]) != timing(f["content"])]
    first_commands = {**commands, "keepalived": {**commands["keepalived"], "reload": commands["keepalived"]["hold"],
                                                 "healthy": ["true"]}} if held else commands
    failed = reload_all(kinds, paths, first_commands)
    if failed:
        for f in changed:  # put the previous files back, and reload them
            old = current[f["path"]]
            if old is None:
                os.remove(f["path"])
            else:
                write_atomic(f["path"], old, int(f["mode"], 8), f.get("owner", "root"))
        back = {**commands, "keepalived": {**commands["keepalived"], "reload": commands["keepalived"]["unhold"]}} \
            if held else commands
        again = reload_all(kinds, paths, back)
        print(json.dumps({"node": node, "error": f"{failed[1]}; the previous config was put back and "
                          + ("reloaded" if again is None else f"its reload failed too ({again[1]})")}))
        return 2
    write_atomic(STAMP, json.dumps({f["path"]: sha(f["content"]) for f in files}, sort_keys=True), 0o600)
    print(json.dumps({"node": node, "changed": staged, "pending": pending,
                      "reloaded": [k for k in commands if k in kinds and not (held and k == "keepalived")],
                      **({"held": ["keepalived"]} if held else {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
