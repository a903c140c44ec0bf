"""The drill's newer ways to break the VIP holder, with netns actions: nginx crashing (SIGKILL) and the
planned switchover (priority lowered in keepalived.conf + reload, then restored). Power loss needs a
machine (ssh actions only): the spec refuses it with netns actions (tests/unit/test_drill_kinds.py).
Timings are printed, never asserted."""

from model.settings import load
from tests.integration.harness import ROOT
from tests.integration.test_failover import failed, show_gaps


def test_nginx_kill_and_planned_switchover(lab_factory):
    lab = lab_factory(load({}, "it", ROOT))
    conf = lab.hosts["lb01"].prefix / "keepalived.conf"
    before = conf.read_text()
    rc, report, _ = lab.verify(lab.spec(drillKinds=["nginx_kill", "switchover"]))
    show_gaps("nginx kill, switchover", report)
    assert report["passed"] and rc == 0, failed(report)
    assert {"nginx_kill", "nginx_restart", "switchover", "switchback"} <= set(report["gaps"])
    assert conf.read_text() == before, "the switchback must restore keepalived.conf as deployed"
    assert lab.holders() == ["lb01"]

