"""The node's sudoers file (templates/sudoers.j2): it parses (`visudo -cf`), and the real sudo allows the
automation user exactly the command lines the verifier, day 2 and the bench send (taken from their own
code), the operators their documented set, and refuses the rest.

sudo is asked with `sudo -l -U USER -- COMMAND` (rc 0: allowed) in a private mount namespace (unshare -m)
where the rendered file is /etc/sudoers (after Debian's secure_path) and a passwd/group of the test holds
the two users: nothing of this machine's own sudo or users is touched.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import day2.__main__ as day2
from bench.lab import BLAME
from day2 import gate
from model import render
from model.settings import HostFacts, load
from tests.conftest import known_hosts
from verifier import actions
from verifier.actions import SshActions
from verifier.spec import from_dict

S = load({}, "dev", ".", host=HostFacts(False, False))
# The golden image's /etc/sudoers (read from .images/debian12/disk.qcow2), before its @includedir.
DEBIAN_DEFAULTS = ('Defaults env_reset\nDefaults mail_badpass\n'
                   'Defaults secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"\n'
                   'Defaults use_pty\nroot ALL=(ALL:ALL) ALL\n%sudo ALL=(ALL:ALL) ALL\n')
# Inside the mount namespace: bind the test's files over /etc's, then ask sudo about each (user, argv).
ASK = """
import json, subprocess, sys
d, cases = sys.argv[1], json.loads(sys.argv[2])
for name in ("passwd", "group", "sudoers"):
    subprocess.run(["mount", "--bind", f"{d}/{name}", f"/etc/{name}"], check=True)
print(json.dumps([subprocess.run(["sudo", "-l", "-U", user, "--", *argv], capture_output=True).returncode == 0
                  for user, argv in cases]))
"""

needs_sudo = pytest.mark.skipif(not (shutil.which("visudo") and shutil.which("sudo") and shutil.which("unshare")
                                     and os.geteuid() == 0), reason="needs root, sudo (visudo) and unshare")


def sudo_lines(shell: str) -> list[list[str]]:
    """The argv of every `sudo -n ...` in a remote shell line (the pipes, &&, || and redirections cut)."""
    lex = shlex.shlex(shell, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    tokens, out, cur = list(lex), [], None
    for i, tok in enumerate(tokens):
        if cur is not None and (tok in ("&&", "||", "|", ";", ">", "<", "&", "!", ">&") or
                                (tok.isdigit() and i + 1 < len(tokens) and tokens[i + 1].startswith(">"))):
            out.append(cur)
            cur = None
        elif tok == "sudo" and cur is None:
            cur = []
        elif cur is not None:
            cur.append(tok)
    if cur is not None:
        out.append(cur)
    assert all(c[:1] == ["-n"] for c in out), out
    return [c[1:] for c in out]


def sent_by_the_project() -> list[list[str]]:
    """Every sudo command line the verifier's ssh actions, day 2, its gates and the bench send to a node."""
    calls = []

    def fake_run(argv, timeout, stdin=None):
        calls.append(argv[-1])
        return subprocess.CompletedProcess(argv, 0, "", "")
    spec = from_dict({"vip": "192.168.81.100", "serverName": "www.example.local", "balancers": [
        {"name": "lb01", "ip": "192.168.81.210", "priority": 150, "state": "MASTER", "domain": "s-lb01"},
        {"name": "lb02", "ip": "192.168.81.220", "priority": 100, "state": "BACKUP", "domain": "s-lb02"}],
        "webNodes": [{"name": "web01", "ip": "192.168.81.230"}]})
    mp = pytest.MonkeyPatch()
    mp.setattr(actions, "_run", fake_run)
    try:
        ssh = SshActions(spec, "/tmp/key-mock", known_hosts({b.name: b.ip for b in spec.balancers}))
        lb = spec.master
        for service in actions.SERVICES:
            ssh.stop(lb, service)
            ssh.start(lb, service)
            ssh.kill(lb, service)
        ssh.vrrp_cut(lb, True)
        ssh.vrrp_cut(lb, False)
        ssh.health_state(lb)
        ssh.vrrp_log(lb, 1765000000.5)
        ssh.set_priority(lb, 99)
        ssh.set_priority(lb, 254)
    finally:
        mp.undo()
    code = "aW1wb3J0IHN5cw=="  # any base64: the day-2 scripts' shape
    calls += [f"sudo -n python3 -c \"import base64;exec(base64.b64decode('{code}'))\"",
              f"sudo -n python3 -c \"import base64;exec(base64.b64decode('{gate.NODE_GATE}'))\"",
              BLAME.format(n=8)]
    assert "import base64;exec(base64.b64decode" in Path(day2.__file__).read_text()  # the same shape as day 2's
    return [argv for c in calls for argv in sudo_lines(c)]


def ask(tmp_path: Path, text: str, cases: list[tuple[str, list[str]]]) -> list[bool]:
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nops:x:1000:1000::/home/ops:/bin/bash\n"
                                     "sysop:x:1001:1001::/home/sysop:/bin/bash\n")
    (tmp_path / "group").write_text("root:x:0:\nops:x:1000:\nsysop:x:1001:\n")
    sudoers = tmp_path / "sudoers"
    sudoers.write_text(DEBIAN_DEFAULTS + text)
    os.chmod(sudoers, 0o440)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", ASK, str(tmp_path),
                        json.dumps(cases)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@needs_sudo
def test_the_sudoers_file_parses_for_every_node(tmp_path):
    for node in S.nodes:
        f = tmp_path / f"{node.name}"
        f.write_text(render.sudoers(S, node))
        r = subprocess.run(["visudo", "-cf", str(f)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "broken"
    broken.write_text(render.sudoers(S, S.master).replace("NOPASSWD:", "NOPASSWD"))
    assert subprocess.run(["visudo", "-cf", str(broken)], capture_output=True).returncode != 0  # it does check


@needs_sudo
def test_sudo_allows_the_automation_user_what_the_project_sends_and_nothing_else(tmp_path):
    sent = sent_by_the_project()
    assert len(sent) >= 14 and ["nft", "-f", "-"] in sent
    refused = [["bash"], ["sh", "-c", "id"], ["systemctl", "stop", "ssh"], ["systemctl", "restart", "nginx"],
               ["python3", "-c", "import os; os.system('id')"], ["python3", "-c", "import base64;exec(1)"],
               ["python3", "/tmp/x.py"], ["nft", "flush", "ruleset"], ["cat", "/etc/shadow"],
               ["journalctl", "--vacuum-time=1s"], ["journalctl", "-q", "-u", "keepalived", "-o", "short-unix",
                                                     "--no-pager", "--since", "@1", "--vacuum-size=1"],
               ["sed", "-i", "-E", "s/^( *priority )[0-9]+/\\1150/e", "/etc/keepalived/keepalived.conf"],
               ["sed", "-i", "-E", "s/^( *priority )[0-9]+/\\1150/", "/etc/shadow"],
               ["grep", "-Eqx", " *priority 150", "/etc/shadow"], ["cloud-init", "clean"]]
    operator = [["systemctl", "status", "nginx"], ["journalctl", "-u", "keepalived", "-n", "50"],
                ["nft", "list", "ruleset"], ["systemctl", "restart", "keepalived"], ["cloud-init", "status", "--long"]]
    cases = ([("ops", a, True) for a in sent] + [("ops", a, False) for a in refused]
             + [("sysop", a, True) for a in operator]
             + [("sysop", a, False) for a in [["bash"], sent[-2], ["systemctl", "stop", "ssh"], ["nft", "-f", "-"]]])
    # sudo resolves the command on this machine: what is not installed here (cloud-init) cannot be asked
    cases = [c for c in cases if shutil.which(c[1][0], path="/usr/sbin:/usr/bin:/sbin:/bin")]
    assert len(cases) >= len(sent) + len(refused)
    want = [w for _, _, w in cases]
    cases = [(u, a) for u, a, _ in cases]
    got = ask(tmp_path, render.sudoers(S, S.master), cases)
    wrong = [f"{u}: {shlex.join(a)} ({'allowed' if g else 'refused'})"
             for (u, a), g, w in zip(cases, got, want, strict=True) if g != w]
    assert not wrong, "sudo decided otherwise for: " + "; ".join(wrong)
