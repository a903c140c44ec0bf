"""Progress-following waits (verifier/progress.py) and the day-2 wait and error paths built on them."""

from __future__ import annotations

import json
import subprocess

import pytest

import day2.__main__ as day2
from tests.conftest import known_hosts, ssh_key
from verifier import progress
from verifier.progress import DONE, Follower

KH = known_hosts({"lb02": "192.168.120.220", "web01": "192.168.120.230"})

CONSOLE_OLD_BOOT = """[    0.000000] Linux version 6.1.0-28-cloud-amd64 (old boot)
[   60.1] cloud-init[500]: Cloud-init v. 22.4 finished at Mon, 01 Jan 2026. Datasource DataSourceNoCloud.
"""
CONSOLE = """\x1b[0m[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)
[    2.100000] virtio_blk virtio1: [vda] 8388608 512-byte logical blocks
Welcome to \x1b[1mDebian GNU/Linux 12 (bookworm)\x1b[0m!
[\x1b[0;32m  OK  \x1b[0m] Started systemd-journald.service - Journal Service.
[   67.0] cloud-init[230]: Cloud-init v. 22.4 running 'init-local' at Mon, 01 Jan 2026 00:01:07 +0000.
[  185.0] cloud-init[300]: Cloud-init v. 22.4 running 'init' at Mon, 01 Jan 2026 00:03:05 +0000.
[  280.0] cloud-init[400]: Cloud-init v. 22.4 running 'modules:config' at Mon, 01 Jan 2026 00:04:40 +0000.
"""


# ---- reading stages ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "stage"), [
    ("", None),
    ("[    0.000000] Linux version 6.1.0\n[ 1.0] pci 0000:00:01.0\n", "kernel"),
    ("[    0.000000] Linux version 6.1.0\nWelcome to Debian GNU/Linux 12 (bookworm)!\n", "systemd"),
    (CONSOLE, "cloud-init modules:config"),
    (CONSOLE + "[ 333] cloud-init[500]: Cloud-init v. 22.4 running 'modules:final' at x.\n", "cloud-init modules:final"),
    (CONSOLE + "[ 432] cloud-init[500]: Cloud-init v. 22.4 finished at x. Up 432.1 seconds\n", DONE),
    # libvirt appends the console log across boots: only the latest boot counts
    (CONSOLE_OLD_BOOT + "[    0.000000] Linux version 6.1.0 (new boot)\n", "kernel"),
    (CONSOLE_OLD_BOOT, DONE),
    # a restart of the golden image: cloud-init is off after the first boot, hacluster-ready says it is up
    ("[    0.000000] Linux version 6.1.0\nWelcome to Debian GNU/Linux 12 (bookworm)!\nhacluster-ready: web01 up\n", DONE),
])
def test_console_stage(text, stage):
    assert progress.console_stage(text) == stage


def test_status_stage_from_status_and_result_json():
    running = json.dumps({"v1": {"stage": "modules-config", "init": {"finished": 12.0, "errors": []}}})
    assert progress.status_stage(running, "") == ("cloud-init modules:config", [])
    between = json.dumps({"v1": {"stage": None, "init-local": {"finished": 5.0}, "init": {"finished": 9.0},
                                 "modules-config": {"finished": None}}})
    assert progress.status_stage(between, None) == ("cloud-init between stages (after init)", [])
    assert progress.status_stage("", "") == ("cloud-init not started", [])
    assert progress.status_stage("{not json", "") == ("cloud-init not started", [])
    done = json.dumps({"v1": {"datasource": "DataSourceNoCloud", "errors": []}})
    assert progress.status_stage(running, done) == (DONE, [])
    failed = json.dumps({"v1": {"errors": ["('scripts-user', RuntimeError('runparts: 1 failed'))"]}})
    assert progress.status_stage(running, failed) == (DONE, ["('scripts-user', RuntimeError('runparts: 1 failed'))"])


def test_best_stage_keeps_the_furthest_and_only_ssh_says_done():
    assert progress.best_stage(None, None, None) == "booting"
    assert progress.best_stage("systemd", None, "kernel") == "systemd"
    # the console is ahead of SSH (sshd is not up yet): keep the console's stage
    assert progress.best_stage("cloud-init init", "cloud-init not started", None) == "cloud-init init"
    # never go back (a console read that failed, an SSH answer that lags)
    assert progress.best_stage(None, None, "cloud-init modules:final") == "cloud-init modules:final"
    assert progress.best_stage("cloud-init init", "cloud-init between stages (after init)",
                               None) == "cloud-init between stages (after init)"
    assert progress.best_stage(DONE, None, None) == progress.CONSOLE_DONE
    assert progress.best_stage(DONE, DONE, None) == DONE


def test_tail_lines_are_clean_and_of_the_latest_boot():
    tail = progress.tail_lines(CONSOLE_OLD_BOOT + CONSOLE, 2)
    assert tail == ["[  185.0] cloud-init[300]: Cloud-init v. 22.4 running 'init' at Mon, 01 Jan 2026 00:03:05 +0000.",
                    "[  280.0] cloud-init[400]: Cloud-init v. 22.4 running 'modules:config' at Mon, 01 Jan 2026 "
                    "00:04:40 +0000."]
    assert progress.clean_line("\x1b[0;32m  OK  \x1b[0m] x\r") == "OK  ] x"
    assert len(progress.clean_line("x" * 500)) == 120


def test_read_console(tmp_path):
    assert progress.read_console(None) == (None, "")
    assert progress.read_console(str(tmp_path / "missing.log")) == (None, "")
    log = tmp_path / "c.log"
    log.write_bytes(b"a" * (progress.CONSOLE_TAIL_BYTES + 10) + b"\xff end\n")
    size, text = progress.read_console(str(log))
    assert size == progress.CONSOLE_TAIL_BYTES + 16
    assert text.endswith("\ufffd end\n") and len(text) == progress.CONSOLE_TAIL_BYTES


# ---- the decision ------------------------------------------------------------------------------------
def run(follower: Follower, observations):
    """Feed (t, stage, console size) observations; the verdicts, up to and including the first final one."""
    out = []
    for t, stage, size in observations:
        v = follower.observe(t, stage, size, ["last line"])
        out.append((t, v.status, v.line))
        if v.status != "wait":
            break
    return out


def test_a_slow_boot_that_keeps_moving_is_never_given_up():
    f = Follower("lb02", stall=100)
    # 650 s in all, but no stretch of 100 s without a stage change or console growth
    obs = [(0, "booting", None), (40, "kernel", 100), (90, "kernel", 900), (150, "systemd", 2000),
           (240, "cloud-init init-local", 2100), (330, "cloud-init init-local", 2500),
           (420, "cloud-init init", 2500), (500, "cloud-init modules:config", 2600),
           (590, "cloud-init modules:final", 2600), (650, DONE, 2700)]
    verdicts = run(f, obs)
    assert verdicts[-1] == (650, "done", "lb02: cloud-init done (650 s)")
    assert [v[1] for v in verdicts[:-1]] == ["wait"] * 9
    assert f.history[-1] == (650, DONE)


def test_progress_notes_name_the_node_the_stage_and_the_time():
    f = Follower("lb02", stall=300, note_every=30)
    verdicts = run(f, [(1000, "booting", 0), (1010, "booting", 0), (1212, "cloud-init modules:config", 10),
                       (1220, "cloud-init modules:config", 20), (1250, "cloud-init modules:config", 20),
                       (1300, "cloud-init modules:config", 20)])
    assert [line for _, _, line in verdicts] == [
        "lb02: booting (0 s)", None, "lb02: cloud-init modules:config (212 s)", None,
        "lb02: cloud-init modules:config (250 s, 30 s without progress)",
        "lb02: cloud-init modules:config (300 s, 80 s without progress)"]


def test_console_growth_alone_counts_as_progress():
    f = Follower("web01", stall=60)
    obs = [(t, "cloud-init modules:final", 1000 + t) for t in range(0, 600, 10)]
    assert all(status == "wait" for _, status, _ in run(f, obs))


def test_no_progress_for_the_stall_window_gives_up_with_one_line():
    f = Follower("lb02", stall=120, hint="what to do: read /var/log/libvirt/qemu/dev-lb02-serial0.log")
    obs = [(0, "booting", 0), (30, "systemd", 500), (60, "cloud-init modules:final", 800)]
    obs += [(60 + t, "cloud-init modules:final", 800) for t in range(10, 200, 10)]
    verdicts = run(f, obs)
    t, status, line = verdicts[-1]
    assert (t, status) == (180, "stuck")
    assert line == ("lb02: stuck in cloud-init modules:final (no progress for 120 s, 180 s since the wait began); "
                    "last console lines: last line; what to do: read /var/log/libvirt/qemu/dev-lb02-serial0.log")
    assert "\n" not in line


def test_a_console_that_shrinks_or_vanishes_is_not_progress():
    f = Follower("web02", stall=50)
    verdicts = run(f, [(0, "kernel", 5000), (20, "kernel", 10), (40, "kernel", None), (51, "kernel", 5000)])
    assert verdicts[-1][:2] == (51, "stuck")


def test_the_overall_limit_ends_even_a_boot_that_keeps_printing():
    f = Follower("web01", stall=100, limit=300)
    verdicts = run(f, [(t, "systemd", t * 10) for t in range(0, 400, 20)])
    assert verdicts[-1][:2] == (300, "stuck")
    assert "still not done after 300 s" in verdicts[-1][2]


def test_stuck_without_a_console():
    f = Follower("web01", stall=10)
    assert f.observe(0, "booting").status == "wait"
    v = f.observe(10, "booting")
    assert v.status == "stuck" and v.line.endswith("no console output to show")


# ---- day 2: the wait and the error paths -------------------------------------------------------------
class Clock:
    def __init__(self):
        self.t = 0.0

    def monotonic(self):
        return self.t

    def sleep(self, s):
        self.t += s


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(day2.time, "monotonic", c.monotonic)
    monkeypatch.setattr(day2.time, "sleep", c.sleep)
    return c


def test_day2_wait_follows_the_stages_and_prints_them(monkeypatch, clock, capsys):
    stages = iter([None, None, "cloud-init init", "cloud-init modules:config", "cloud-init modules:final", DONE])
    monkeypatch.setattr(day2, "probe", lambda node, ssh, known: next(stages))
    assert day2.wait_booted({"node": "lb02", "timeout": 60, "console": None}, ["ssh"], KH) is None
    err = capsys.readouterr().err.splitlines()
    assert err == ["day2: lb02: booting (0 s)", "day2: lb02: cloud-init init (8 s)",
                   "day2: lb02: cloud-init modules:config (12 s)", "day2: lb02: cloud-init modules:final (16 s)",
                   "day2: lb02: cloud-init done (20 s)"]


def test_day2_wait_gives_up_on_a_stuck_boot_with_one_line(monkeypatch, clock, tmp_path):
    console = tmp_path / "serial0.log"
    console.write_text("[    0.000000] Linux version 6.1.0\nWelcome to Debian!\n"
                       "[  280.0] cloud-init[400]: Cloud-init v. 22.4 running 'modules:final' at x.\n")
    monkeypatch.setattr(day2, "probe", lambda node, ssh, known: None)  # ssh never answers
    line = day2.wait_booted({"node": "lb02", "timeout": 30, "console": str(console)}, ["ssh"], KH)
    assert line.startswith("lb02: stuck in cloud-init modules:final (no progress for 30 s")  # polled every 1 s
    assert "last console lines: [    0.000000] Linux version 6.1.0 | Welcome to Debian! | [  280.0] cloud-init" in line
    assert f"read {console}" in line and "hacluster:verify.timeout" in line
    assert "\n" not in line


def test_day2_probe_treats_a_hung_ssh_as_no_answer(monkeypatch):
    def hang(*a, **kw):
        raise subprocess.TimeoutExpired(a[0], kw.get("timeout"))
    monkeypatch.setattr(day2.subprocess, "run", hang)
    assert day2.probe("lb02", ["ssh"], KH) is None


def test_day2_never_shows_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("HACLUSTER_DAY2_SPEC", json.dumps({"node": "web01", "ip": "192.168.81.230", "sshUser": "ops"}))
    monkeypatch.delenv("HACLUSTER_SSH_KEY", raising=False)
    monkeypatch.delenv("HACLUSTER_HOST_KEYS", raising=False)
    assert day2.guarded() == 2
    err = capsys.readouterr().err
    assert err == ("day2: web01: env HACLUSTER_HOST_KEYS has no host key for web01: refusing to connect to it "
                   "unpinned\n")
    monkeypatch.setenv("HACLUSTER_HOST_KEYS", json.dumps({"web01": ssh_key()}))
    assert day2.guarded() == 2
    err = capsys.readouterr().err
    assert err == "day2: web01: internal error: KeyError: 'HACLUSTER_SSH_KEY'\n"
    monkeypatch.setenv("HACLUSTER_DAY2_SPEC", json.dumps({"node": "web01"}))
    assert day2.guarded() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid day-2 spec" in err and "sshUser" in err, err


def test_verifier_cli_never_shows_a_traceback(monkeypatch, capsys):
    from verifier import cli

    def boom(self):
        raise RuntimeError("unexpected")
    monkeypatch.setattr(cli.Verifier, "run", boom)
    monkeypatch.setattr(cli, "SshActions", lambda spec, key, known: type("A", (), {"close": lambda self: None})())
    from components.cluster import verifier_spec
    from model.settings import HostFacts, load

    spec = {**verifier_spec(load({}, "dev", ".", host=HostFacts(False, False))), "netns": None}
    monkeypatch.setenv("HACLUSTER_VERIFY_SPEC", json.dumps(spec))
    monkeypatch.setenv("HACLUSTER_SSH_KEY", "k")
    monkeypatch.setenv("HACLUSTER_HOST_KEYS", json.dumps({"lb01": ssh_key(fill=1), "lb02": ssh_key(fill=2)}))
    assert cli.main([]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["checks"][0]["detail"] == "the verifier failed: RuntimeError: unexpected"
    assert "Traceback" not in err and err.strip() == "FAILED internal: the verifier failed: RuntimeError: unexpected"


def test_the_program_leaves_quietly_when_the_engine_interrupts_it(monkeypatch):
    import signal

    from components import quiet

    exits = []
    monkeypatch.setattr(quiet.os, "_exit", exits.append)
    before = signal.getsignal(signal.SIGINT)
    try:
        quiet.install()
        assert signal.getsignal(signal.SIGINT) is quiet.leave_quietly
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    finally:
        signal.signal(signal.SIGINT, before)
    assert exits == [quiet.ALREADY_REPORTED] == [32]


def test_day2_interrupted_is_one_line(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt
    monkeypatch.setattr(day2, "main", interrupted)
    monkeypatch.setenv("HACLUSTER_DAY2_SPEC", json.dumps({"node": "lb01"}))
    assert day2.guarded() == 130
    assert capsys.readouterr().err == "day2: lb01: interrupted (the deployment was cancelled or ended early)\n"


def test_day2_asks_over_ssh_rarely_while_the_console_shows_an_early_stage(monkeypatch, clock, tmp_path):
    console = tmp_path / "serial0.log"
    console.write_text("[    0.000000] Linux version 6.1.0\nWelcome to Debian!\n")
    probes = []

    def probe(node, ssh, known):
        probes.append(clock.t)
        if clock.t >= 60:
            console.write_text(console.read_text() + "Cloud-init v. 22.4 running 'modules:final' at x.\n")
        return DONE if clock.t >= 72 else None
    monkeypatch.setattr(day2, "probe", probe)
    assert day2.wait_booted({"node": "web01", "timeout": 300, "console": str(console)}, ["ssh"], KH) is None
    # every 30 s from the start while the console shows systemd; every 4 s from modules:final on
    assert probes == [30, 60, 64, 68, 72]


def test_should_probe():
    assert day2.should_probe(False, "kernel", 10, 6) and not day2.should_probe(False, "kernel", 10, 7)  # every 4 s
    assert day2.should_probe(False, "kernel", 10, None)  # no console: the first look at once
    assert not day2.should_probe(True, "kernel", 10, None, 0)  # booting: its SSH would only time out
    assert day2.should_probe(True, "kernel", 30, None, 0)
    assert day2.should_probe(True, progress.CONSOLE_DONE, 1, None, 0)  # booted long ago: at once
    assert not day2.should_probe(True, "cloud-init init", 20, 0)
    assert day2.should_probe(True, "cloud-init init", 30, 0)
    assert day2.should_probe(True, "cloud-init modules:final", 24, 20)
    assert not day2.should_probe(True, progress.CONSOLE_DONE, 21, 20)


def test_day2_apply_retries_a_node_slow_to_take_logins(monkeypatch, clock, capsys):
    answers = iter([subprocess.CompletedProcess([], 255, "", "Connection timed out during banner exchange\n"),
                    subprocess.CompletedProcess([], 0, '{"node": "lb02", "changed": [], "reloaded": []}\n', "")])
    monkeypatch.setattr(day2.subprocess, "run", lambda *a, **kw: next(answers))
    r = day2.apply({"node": "lb02", "ip": "192.168.120.220", "timeout": 60}, ["ssh"], "[]", KH)
    assert r.returncode == 0
    assert capsys.readouterr().err == ("day2: lb02: ssh did not get through (Connection timed out during banner "
                                       "exchange); retrying\n")


def test_day2_apply_gives_up_after_the_stall_window(monkeypatch, clock, capsys):
    monkeypatch.setattr(day2.subprocess, "run",
                        lambda *a, **kw: subprocess.CompletedProcess([], 255, "", "Connection refused\n"))
    assert day2.apply({"node": "lb02", "ip": "192.168.120.220", "timeout": 20}, ["ssh"], "[]", KH) is None
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("day2: lb02: ssh 192.168.120.220 kept failing for 20 s (Connection refused)")


def test_day2_ssh_waits_longer_for_the_banner():
    argv = day2.day2_ssh("ops", "192.168.120.220", "/k", "/kh")
    assert "ConnectTimeout=30" in argv and not any(a == "ConnectTimeout=5" for a in argv)


def test_day2_probe_sees_a_restarted_node_up_by_its_ready_marker(monkeypatch):
    """cloud-init does not run on a golden-image node's later boots: no status.json, but the ready marker."""
    out = "\n@@result@@\n\n@@ready@@\nready\n"
    monkeypatch.setattr(day2.subprocess, "run", lambda *a, **kw: subprocess.CompletedProcess(a[0], 0, out, ""))
    assert day2.probe("web01", ["ssh"], KH) == DONE
    out = "\n@@result@@\n\n@@ready@@\n\n"
    assert day2.probe("web01", ["ssh"], KH) == "cloud-init not started"
