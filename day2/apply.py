"""Runs ON A NODE (as root, python3 only, no project imports): stage, validate, swap, reload.

Input (stdin, JSON): {"files": [{"path", "content", "mode"}], "node": "lb01"}.
Each changed file is written next to its target as `<path>.hacluster-new`; the node's own tools check
the staged set (`nginx -t`, `keepalived -t`, `nft -c`); only when every check passes are the files
renamed into place (atomic per file) and the services reloaded (not restarted). On any failure the
staged files are removed and the running config is untouched. Output (stdout, JSON):
{"node", "changed": [...], "reloaded": [...]} or exit 2 with {"error": ...}.
"""

import json
import os
import subprocess
import sys

SUFFIX = ".hacluster-new"
# What validates and reloads each kind of file. Overridable for tests through HACLUSTER_APPLY_CMDS.
COMMANDS = {
    # systemd units and drop-ins first: the restarts below must see them.
    "units": {"match": ("hacluster-health.service", "10-hacluster.conf"), "check": ["true"],
              "reload": ["systemctl", "daemon-reload"]},
    "agent": {"match": ("health.json", "health.py"),
              "check": ["python3", "-c", "import ast, json, sys; p = sys.argv[1]; t = open(p).read(); "
                        "json.loads(t) if p.split('.hacluster-new')[0].endswith('.json') else ast.parse(t)",
                        "{staged}"],
              # enabled too: a node deployed before the agent existed gets it for its next boots as well
              "reload": ["sh", "-c", "systemctl --no-reload enable hacluster-health && systemctl restart hacluster-health"]},
    "nginx": {"match": "nginx.conf", "check": ["nginx", "-t", "-q", "-c", "{staged}"],
              "reload": ["systemctl", "reload", "nginx"]},
    "keepalived": {"match": "keepalived.conf", "check": ["keepalived", "-t", "-f", "{staged}"],
                   "reload": ["systemctl", "reload", "keepalived"]},
    "nftables": {"match": "nftables.conf", "check": ["nft", "-c", "-f", "{staged}"],
                 "reload": ["nft", "-f", "{path}"]},
}


def kind_of(path, commands=COMMANDS):
    name = os.path.basename(path)
    return next((k for k, c in commands.items() if name.startswith(c["match"] if isinstance(c["match"], str)
                                                                  else tuple(c["match"]))), None)


def run(argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return r.returncode, (r.stdout + r.stderr).strip()


def check_ok(kind, rc, out):
    # keepalived 2.2.7 SIGTERMs itself at the end of -t when scripts are configured: judge by output.
    if kind == "keepalived":
        return rc in (0, -15, 143) and not out
    return rc == 0


def main():
    payload = json.load(sys.stdin)
    commands = {**COMMANDS, **json.loads(os.environ.get("HACLUSTER_APPLY_CMDS", "{}"))}
    staged = []
    try:
        for f in payload["files"]:
            try:
                with open(f["path"]) as fh:
                    if fh.read() == f["content"]:
                        continue
            except FileNotFoundError:
                pass
            tmp = f["path"] + SUFFIX
            os.makedirs(os.path.dirname(f["path"]), exist_ok=True)
            with open(tmp, "w") as fh:
                fh.write(f["content"])
            os.chmod(tmp, int(f["mode"], 8))
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
        print(json.dumps({"node": payload.get("node"), "error": str(e)}))
        return 2
    for path in staged:
        os.replace(path + SUFFIX, path)
    reloaded = []
    kinds = {kind_of(p, commands) for p in staged}
    for kind in [k for k in commands if k in kinds]:  # in COMMANDS order: units before the restarts
        argv = [a.format(path=next(p for p in staged if kind_of(p, commands) == kind)) for a in commands[kind]["reload"]]
        rc, out = run(argv)
        if rc != 0:
            print(json.dumps({"node": payload.get("node"), "error": f"{' '.join(argv)}: rc {rc}: {out[-400:]}"}))
            return 2
        reloaded.append(kind)
    print(json.dumps({"node": payload.get("node"), "changed": staged, "reloaded": reloaded}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
