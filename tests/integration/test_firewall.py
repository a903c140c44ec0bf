"""The verifier's firewall_closed check against the nodes' real nftables rules (model.render.firewall_conf,
loaded in their namespaces by the harness): it passes on the rules as rendered, and a rule that lets the
client through to a web node's port 80 (and 22) makes it fail, naming the port, the node and the source."""

import subprocess
import sys
import time

from model.settings import load
from tests.integration.harness import ROOT, sh
from verifier import netns

# Something listening on port 22 (the namespaces run no sshd): only the firewall can keep it closed.
LISTEN = ("import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('0.0.0.0', 22))\ns.listen(64)\ntime.sleep(600)\n")
ALL = "lb01, lb02, web01, web02"


def firewall_check(report: dict) -> dict:
    return next(c for c in report["checks"] if c["name"] == "firewall_closed")


def test_firewall_closed_passes_on_the_rendered_rules_and_fails_on_an_open_port(lab_factory):
    lab = lab_factory(load({}, "it", ROOT))
    web = lab.hosts["web01"]
    listener = subprocess.Popen(netns.guarded(web.ns, [sys.executable, "-c", LISTEN]), env=netns.guard_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while ":22 " not in sh("ip", "netns", "exec", web.ns, "ss", "-Hltn").stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ":22 " in sh("ip", "netns", "exec", web.ns, "ss", "-Hltn").stdout, "the port-22 listener did not start"
        spec = lab.spec(drill=False, settle=1)
        rc, report, _ = lab.verify(spec)
        c = firewall_check(report)
        assert report["passed"] and rc == 0, report["checks"]
        assert c["detail"] == (f"ssh (22) from 192.168.81.254 (outside firewall.sshFrom) refused/dropped on {ALL}; "
                               "http (80) from 192.168.81.1 (not a balancer) refused/dropped on web01, web02"), c

        # web01 lets the client's addresses in on 22 and 80, ahead of its own rules
        rule = ["nft", "insert", "rule", "inet", "hacluster", "input", "ip", "saddr", "{ 192.168.81.1, 192.168.81.254 }",
                "tcp", "dport", "{ 22, 80 }", "accept"]
        r = subprocess.run(netns.guarded(web.ns, rule), env=netns.guard_env(), capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        rc, report, stderr = lab.verify(spec)
        c = firewall_check(report)
        assert rc == 1 and not c["passed"], c
        assert "ssh (22) from 192.168.81.254 (outside firewall.sshFrom) accepted by web01" in c["detail"], c
        assert "http (80) from 192.168.81.1 (not a balancer) accepted by web01" in c["detail"], c
        assert "FAILED firewall_closed:" in stderr
        # the probe's extra address lived in the client namespace for the probes only
        assert "192.168.81.254" not in sh("ip", "-n", lab.client.ns, "-o", "addr").stdout
    finally:
        listener.terminate()
        listener.wait(timeout=10)
