"""verifier/load.py: the client load's summary, and what a rolling `pulumi up` printed (roll order, boots)."""

from verifier import load
from verifier.http import Probe

UP_LINES = [  # as `pulumi up` printed them in the lab (2026-12-07)
    " ++ command:local:Command web01-drain created replacement (7s) [diff: ~triggers]; day2: web01: drained on lb01, lb02",
    " ++ command:local:Command web01-config creating replacement (29s) [diff: ~triggers]; day2: web01: cloud-init done (29 s)",
    " ++ command:local:Command web02-drain created replacement (6s) [diff: ~triggers]; day2: web02: drained on lb01",
    " ++ command:local:Command web02-config creating replacement (31s) [diff: ~triggers]; day2: web02: cloud-init done (31 s)",
    " ++ command:local:Command lb02-drain created replacement (6s) [diff: ~triggers]; day2: lb02: keepalived stopped cleanly",
    " ++ command:local:Command lb02-drain creating replacement (2s) [diff: ~triggers]",
]


def test_roll_order_and_boots_are_read_from_the_up_output():
    assert load.rolled(UP_LINES) == ["web01", "web02", "lb02"]
    assert load.boots(UP_LINES) == {"web01": 29.0, "web02": 31.0}


def test_the_summary_counts_failures_and_the_longest_window_without_an_answer():
    probes = [Probe(t=0.0, ok=True, balancer="lb01", error=None, latency=0.1),
              Probe(t=1.0, ok=False, balancer=None, error="TimeoutError: timed out", latency=10.0),
              Probe(t=2.0, ok=True, balancer="lb02", error=None, latency=1.5)]
    s = load.summary(probes, started=0.0, ended=4.0)
    assert (s["requests"], s["failed"], s["errors"]) == (3, 1, ["TimeoutError: timed out"])
    assert s["longest_no_answer_s"] == 3.4  # from the first answer (0.1) to the second (3.5)
    assert s["max_latency_s"] == 10.0 and s["failures"][0]["after_s"] == 1.0
