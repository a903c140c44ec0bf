"""A rolling change hands the VIP over with a request in flight on the holder (day2/gate.py's balancer
drain: a clean keepalived stop), real keepalived in the lab's namespaces. Without the lo copy of the VIP
the old holder can no longer send from the VIP and the client waits out its patience; with it
(day2/node_gate.py keep_vip, what stop-keepalived does on a holder) the answer arrives, the new holder
serves the next requests, and the old one answers no ARP for the VIP. The old holder keeps serving
what it accepted after the MASTER takes the VIP back too (the peer's copy at a MASTER's return)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from model.settings import load
from tests.integration.harness import ROOT, wait_for
from verifier import netns

PORT = 8081
SLOW_S = 6.0  # the handover (and a MASTER's preempt) happens well within it
PATIENCE_S = 12.0

SERVER = textwrap.dedent(f"""
    import socket, sys, threading, time
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", {PORT})); s.listen(16); s.settimeout(1)
    def answer(c):
        c.recv(1024); time.sleep({SLOW_S}); c.sendall(sys.argv[1].encode()); c.close()
    end = time.monotonic() + 120  # bounded: the test kills it sooner
    while time.monotonic() < end:
        try:
            threading.Thread(target=answer, args=(s.accept()[0],), daemon=True).start()
        except TimeoutError:
            pass
""")
CLIENT = textwrap.dedent(f"""
    import socket, sys
    try:
        c = socket.create_connection((sys.argv[1], {PORT}), timeout={PATIENCE_S}); c.sendall(b"GET")
        print(c.recv(64).decode() or "closed")
    except OSError as e:
        print(type(e).__name__)
""")


def run_in(lab, host: str, argv: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(netns.guarded(lab.hosts[host].ns, argv), cwd=ROOT, env=netns.guard_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def request_across(lab, handover) -> str:
    """One request to VIP:PORT that the holder answers SLOW_S later; `handover()` runs 1 s into it. What the
    client got: the answering host's name, or the error."""
    client = run_in(lab, "client", [sys.executable, "-c", CLIENT, lab.settings.vip])
    try:
        time.sleep(1.0)
        handover()
        out, _ = client.communicate(timeout=PATIENCE_S + 10)
    finally:
        client.kill()
    return out.strip().splitlines()[-1] if out.strip() else ""


def keep_vip(lab, host: str) -> None:
    argv = [sys.executable, "-c", "import sys; sys.path.insert(0, 'day2'); import node_gate; "
            "sys.exit(0 if node_gate.keep_vip(sys.argv[1]) else 1)", lab.settings.vip]
    assert run_in(lab, host, argv).wait(timeout=30) == 0


def arp_answers(lab) -> set[str]:
    argv = [sys.executable, "-c", "import sys; from verifier.arp import who_has; "
            "print(' '.join(sorted(who_has(sys.argv[1], 1.0))))", lab.settings.vip]
    p = run_in(lab, "client", argv)
    out, _ = p.communicate(timeout=30)
    return set(out.split())


def mac(lab, host: str) -> str:
    r = subprocess.run(["ip", "-n", lab.hosts[host].ns, "-o", "link", "show", "eth0"], capture_output=True,
                       text=True, timeout=10, check=True)
    return r.stdout.split("link/ether")[1].split()[0]


def test_a_request_in_flight_on_the_holder_survives_a_handover_with_the_lo_copy_only(lab_factory):
    lab = lab_factory(load({}, "it", ROOT))
    master, backup = lab.settings.master.name, next(b.name for b in lab.settings.balancers if b is not lab.settings.master)
    servers = [run_in(lab, h, [sys.executable, "-c", SERVER, h]) for h in (master, backup)]
    for h in (master, backup):  # the balancers' firewall lets HTTP in on port 80 only
        subprocess.run(netns.guarded(lab.hosts[h].ns, ["nft", "insert", "rule", "inet", "hacluster", "input",
                                                       "tcp", "dport", str(PORT), "accept"]),
                       env=netns.guard_env(), check=True, timeout=30, capture_output=True)
    try:
        assert lab.holders() == [master]

        def stop_master():
            lab.stop(master, "keepalived")  # SIGTERM: the clean stop, its priority-0 advert
            assert wait_for(lambda: lab.holders() == [backup], 15), lab.holders()

        lost = request_across(lab, stop_master)
        assert lost == "TimeoutError", f"without the lo copy the answer should never arrive, got {lost!r}"
        lab.start(master, "keepalived")
        assert wait_for(lambda: lab.holders() == [master], 30), lab.holders()

        kept = request_across(lab, lambda: (keep_vip(lab, master), stop_master()))
        assert kept == master, f"the old holder's answer, over the VIP it kept on lo: got {kept!r}"
        assert arp_answers(lab) == {mac(lab, backup)}, "only the holder answers ARP for the VIP"
        assert request_across(lab, lambda: None) == backup

        # the MASTER's return: the peer (holding it now) keeps it on lo, the preempt takes it off its interface
        keep_vip(lab, backup)
        back = request_across(lab, lambda: (lab.start(master, "keepalived"),
                                            wait_for(lambda: lab.holders() == [master], 30)))
        assert lab.holders() == [master], lab.holders()
        assert back == backup, f"the peer's answer, after the MASTER took the VIP back: got {back!r}"
        assert arp_answers(lab) == {mac(lab, master)}
    finally:
        for s in servers:
            s.kill()
            s.wait(timeout=10)
