"""The checks and the failover drill, written once over `Actions` (SSH for VMs, namespaces for tests)."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from . import firewall
from .actions import ActionError, Actions
from .cancel import CANCEL
from .http import Probe, Prober, Reply, get
from .logic import (
    USER_AGENTS,
    VERIFIER_UA,
    distribution_verdict,
    expected_pool,
    first_after,
    has_address,
    holder_verdict,
    holders_of,
    longest_gap,
)
from .progress import Follower
from .scenarios import LoadDrills
from .spec import DRILL_KINDS, LOAD_KINDS, Balancer, Spec

SETTLE_AFTER_STEP = 1.0  # keep probing this long after a step succeeded, to catch a late flap
STABLE_S = 3.0  # the end check: one holder that stays put this long
STICKY_REQUESTS = 8
UA_REQUESTS = 4
WORKER_JOIN_S = 5.0  # on a cancel: for the drill step's action thread (its ssh/virsh got the signal too)
CANCEL_RESERVE_S = 3.0  # of the cancel budget, kept for closing and the report


def progress(msg: str) -> None:
    print(f"verifier: {msg}", file=sys.stderr, flush=True)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Window:
    start: float
    end: float
    moved_after_s: float | None  # until the holder poll saw the VIP on the target
    served_after_s: float | None = None  # until the first probe launched after the action got 200 from the target


def _maintenance_priority(s: Spec) -> int:
    """The priority a balancer is lowered to for a planned switchover: just below the other one's."""
    return max(1, s.backup.priority - 1)


@dataclass(frozen=True)
class Kind:
    """One way to break the VIP holder, and how to repair it (each written once over `Actions`)."""

    break_step: str
    restore_step: str
    what: str  # "{lb}": the balancer, "{prio}": the maintenance priority
    breaks: Callable[[Verifier, Balancer], None]
    repairs: Callable[[Verifier, Balancer], None]
    holder_unreadable: bool = False  # while broken, the holder cannot be asked (frozen, powered off)
    needs_preempt: bool = False
    must_move: bool = True  # False: the VIP may stay (a crash the node repairs itself) as long as it serves
    low: Callable[[Spec], int] = _maintenance_priority


KINDS: dict[str, Kind] = {
    "keepalived": Kind("keepalived_stop", "keepalived_start", "keepalived stopped on {lb}",
                       lambda v, lb: v.a.stop(lb, "keepalived"), lambda v, lb: v.a.start(lb, "keepalived")),
    "nginx": Kind("nginx_stop", "nginx_start", "nginx stopped on {lb}",
                  lambda v, lb: v.a.stop(lb, "nginx"), lambda v, lb: v.a.start(lb, "nginx")),
    # systemd restarts a crashed nginx on the VMs (Restart=on-failure): the VIP may not even move.
    "nginx_kill": Kind("nginx_kill", "nginx_restart", "nginx killed (SIGKILL) on {lb}",
                       lambda v, lb: v.a.kill(lb, "nginx"), lambda v, lb: v.a.start(lb, "nginx"), must_move=False),
    "hard": Kind("hard_pause", "hard_resume", "{lb} paused",
                 lambda v, lb: v.a.pause(lb), lambda v, lb: v.a.resume(lb), holder_unreadable=True),
    "poweroff": Kind("poweroff", "poweron", "{lb} powered off",
                     lambda v, lb: v.a.power_off(lb), lambda v, lb: v.a.power_on(lb), holder_unreadable=True),
    "switchover": Kind("switchover", "switchback", "{lb} lowered to priority {prio} for maintenance",
                       lambda v, lb: v.a.set_priority(lb, _maintenance_priority(v.s)),
                       lambda v, lb: v.a.set_priority(lb, lb.priority), needs_preempt=True),
}
assert set(KINDS) == set(DRILL_KINDS)


def _on(v: Verifier, name: str, lb_action: Callable, web_action: Callable | None = None) -> None:
    node = v.node(name)
    (lb_action if isinstance(node, Balancer) or web_action is None else web_action)(node)


# What an interrupted drill (its process SIGKILLed, the deploy host lost) can leave behind, found by
# Actions.domain_residue / node_residue at the start of a run: kind -> (what undoing it did, undo).
RESIDUE: dict[str, tuple[str, Callable[[Verifier, str], None]]] = {
    "host_frozen": ("its qemu processes continued (SIGCONT)", lambda v, host: v.a.host_thaw(host)),
    "paused": ("resumed", lambda v, n: _on(v, n, v.a.resume, v.a.web_resume)),
    "frozen": ("unfrozen", lambda v, n: v.a.web_resume(v.node(n))),
    "shut_off": ("started", lambda v, n: _on(v, n, v.a.power_on, v.a.web_power_on)),
    "starved": ("CPU quota removed", lambda v, n: v.a.starve([v.node(n)], None)),
    "vrrp_cut": ("VRRP cut removed", lambda v, n: v.a.vrrp_cut(v.node(n), False)),
    "priority": ("deployed priority restored", lambda v, n: v.a.set_priority(v.node(n), v.node(n).priority)),
}
# The LoadDrills method of each drill under load but the web ones (LoadDrills.web(kind)).
LOAD_RUNS = {"lb_starve": "starve", "vrrp_cut": "vrrp_cut", "host_lost": "host_lost"}
assert {*LOAD_RUNS, "web_freeze", "web_poweroff"} == set(LOAD_KINDS)


class Verifier:
    def __init__(self, spec: Spec, actions: Actions, log: Callable[[str], None] = progress):
        self.s, self.a, self.log = spec, actions, log
        self.checks: list[Check] = []
        self.windows: dict[str, Window] = {}
        self.gaps: dict[str, dict] = {}
        self.holder: str | None = None
        self.distribution: dict[str, int] = {}
        self.durations: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="holders")
        self._prober: Prober | None = None
        self._worker: threading.Thread | None = None  # the drill step's action, while it runs
        self.timeline: list[Probe] = []  # the last drill's probes
        self.holder_timeline: list[dict] = []  # the end check's holder changes

    # ---- bookkeeping -----------------------------------------------------------------------------
    def check(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(name, passed, detail))
        self.log(f"{'ok    ' if passed else 'FAILED'} {name}: {detail}")
        return passed

    def report(self) -> dict:
        return {"passed": bool(self.checks) and all(c.passed for c in self.checks),
                "checks": [asdict(c) for c in self.checks], "gaps": self.gaps, "holder": self.holder,
                "distribution": self.distribution, "durations": self.durations,
                "holderTimeline": self.holder_timeline,
                "stack": self.s.stack, "vip": self.s.vip, "actions": self.s.actions}

    def node(self, name: str):
        """The balancer or web node called `name`."""
        return next(n for n in (*self.s.balancers, *self.s.web_nodes) if n.name == name)

    def _get(self, **kw) -> Reply:
        return get(self.s.vip, server_name=self.s.server_name, timeout=max(2.0, self.s.probe_timeout), **kw)

    # ---- holders ---------------------------------------------------------------------------------
    def _holds(self, lb: Balancer) -> bool | None:
        try:
            return has_address(self.a.addresses(lb), self.s.vip)
        except ActionError:
            return None

    def holders(self, only: list[Balancer] | None = None) -> dict[str, bool | None]:
        lbs = only or list(self.s.balancers)
        return dict(zip([b.name for b in lbs], self._pool.map(self._holds, lbs), strict=True))

    # ---- the run ---------------------------------------------------------------------------------
    def run(self) -> dict:
        s = self.s
        t0 = time.monotonic()
        try:
            self.clear_residue()
            vip_ok, lbs_ok = self.wait_ready()
            t1 = time.monotonic()
            self.durations["wait_s"] = round(t1 - t0, 2)
            holder_ok = self.check_holder()
            if vip_ok:
                self.check_traffic()
                if s.netns and s.firewall.enabled:  # lab stacks: the probes start inside the lab namespace
                    self.check_firewall()
            t2 = time.monotonic()
            self.durations["checks_s"] = round(t2 - t1, 2)
            if self.s.drill:
                if vip_ok and holder_ok and lbs_ok:
                    self.drill()
                else:
                    self.check("failover_drill", False, "not run: the cluster was not healthy before it (see above)")
                self.durations["drill_s"] = round(time.monotonic() - t2, 2)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self.durations["total_s"] = round(time.monotonic() - t0, 2)
        return self.report()

    def clear_residue(self) -> None:
        """Undo what an interrupted drill left behind (RESIDUE), one line each, before anything is checked:
        machines first (a paused balancer answers nothing else), then what is on the balancers. Nothing
        found: no check, no line. A look that fails is said and skipped (wait_ready reports the node)."""
        found, undone, failed = 0, [], []
        for look in (self.a.domain_residue, self.a.node_residue):
            try:
                items = look()
            except (ActionError, OSError) as e:
                self.log(f"could not look for what an interrupted drill left behind: {e}")
                continue
            for name, kind, seen in items:
                found += 1
                what, undo = RESIDUE[kind]
                try:
                    with CANCEL.shielded():
                        undo(self, name)
                except (ActionError, OSError) as e:
                    failed.append(f"{name}: {seen}: {e}")
                    continue
                undone.append(f"{name}: {seen}")
                self.log(f"left by an interrupted drill: {name}: {seen}; {what}")
        if found:
            self.check("drill_residue", not failed,
                       f"undid what an interrupted drill left: {'; '.join(undone)}" if not failed else
                       f"could not undo what an interrupted drill left: {'; '.join(failed)} (undo it by hand: "
                       "virsh resume/start, `nft delete table inet hacluster_drill_cut`, the deployed priority)")

    def wait_ready(self) -> tuple[bool, bool]:
        """Wait for an HTTP 200 through the VIP and for each balancer's actions, for as long as the
        wait makes progress (one more of them answers, or what the VIP answers changes): the spec
        timeout is the longest stretch without progress (verifier/progress.py), not a fixed deadline."""
        s = self.s
        start = time.monotonic()
        vip: Reply | None = None
        vip_at = 0.0
        lbs: dict[str, str | None] = {b.name: "not tried" for b in s.balancers}
        follower = Follower(node="verifier", stall=s.timeout, note_every=15, done="ready")
        self.log(f"waiting for http://{s.vip}/ and the balancers ({s.actions} actions; gives up after "
                 f"{s.timeout:g} s without progress)")
        while True:
            if vip is None or not vip.ok:
                vip = self._get(path="/")
                vip_at = time.monotonic() - start
            for b in s.balancers:
                if lbs[b.name] is not None:
                    lbs[b.name] = self.a.ready(b)
            waiting = (["VIP"] if not vip.ok else []) + [n for n, why in lbs.items() if why]
            # Coarse states only (which ones answer, the VIP's status code): error texts that merely
            # vary would look like progress.
            state = "ready" if not waiting else f"waiting for {', '.join(waiting)} (VIP: {vip.status or 'no answer'})"
            verdict = follower.observe(time.monotonic(), state)
            if verdict.status == "done":
                break
            if verdict.line:
                self.log(verdict.line.removeprefix("verifier: "))
            if verdict.status == "stuck":
                break
            time.sleep(2.0)
        waited = f"after {time.monotonic() - start:.0f} s ({s.timeout:g} s without progress)"
        vip_ok = self.check("vip_http", vip.ok,
                            f"http://{s.vip}/ answered 200 after {vip_at:.1f} s" if vip.ok else
                            f"no HTTP 200 from http://{s.vip}/ {waited} "
                            f"(last: {vip.error or f'HTTP {vip.status}'})")
        lbs_ok = True
        for b in s.balancers:
            lbs_ok &= self.check(f"access_{b.name}", lbs[b.name] is None,
                                 f"{s.actions} actions reach {b.name} ({b.ip})" if lbs[b.name] is None else
                                 f"cannot reach {b.name} {waited}: {lbs[b.name]}")
        return vip_ok, lbs_ok

    def check_holder(self) -> bool:
        """Exactly one balancer holds the VIP, steadily over the settle window; the MASTER if preempt is on.
        A pair that is still converging gets `converge` seconds: a preempting MASTER and the BACKUP it
        replaces both hold the VIP for up to an advert interval (longer on a loaded host), and right after
        a reboot the BACKUP may hold it until the MASTER is up. Two holders (split brain), a moving VIP
        or the wrong holder that last longer than that fail the check."""
        s = self.s
        interval = max(self.a.poll_interval, 0.5)
        t0 = time.monotonic()
        first_bad = None
        while True:
            # The deadline counts from where a window starts: a window slowed by a node that is still
            # booting (ssh timeouts) must not use up the whole converge time by itself.
            started = time.monotonic() - t0
            samples = []
            for _ in range(max(1, int(s.settle / interval) + 1)):
                t = time.monotonic()
                sample = self.holders()
                samples.append(sample)
                if len(holders_of(sample)) > 1:
                    break  # two holders: this window cannot pass
                time.sleep(max(0.0, interval - (time.monotonic() - t)))
            single, expected, detail, holder = holder_verdict(samples, s.master.name if s.preempt else None)
            waited = time.monotonic() - t0
            if (single and expected) or started >= s.converge:
                break
            first_bad = first_bad or detail
            time.sleep(interval)
        if first_bad and single and expected:
            detail += f" (settled after {waited:.1f} s; at first: {first_bad})"
        elif first_bad:
            detail += f" (for {waited:.1f} s)"
        self.holder = holder
        self.check("single_holder", single, detail)
        if single:
            self.check("expected_master", expected, detail if s.preempt else f"{detail} (nopreempt: any holder will do)")
        return single and expected

    # ---- traffic through the VIP ---------------------------------------------------------------
    def _cookie(self, value: str) -> str | None:
        p = self.s.persistence
        return f"{p.split(':', 1)[1]}={value}" if p.startswith("cookie:") else None

    def check_traffic(self) -> None:
        s = self.s
        pool = expected_pool(VERIFIER_UA, s.rules, s.default_pool)
        weights = {n: w for n, w in s.weights().items() if n in s.pools[pool]}
        replies = [self._get(cookie=self._cookie(f"hv-{i}")) for i in range(s.requests)]
        answered = [r for r in replies if r.ok and r.node]
        self.distribution = dict(sorted(Counter(r.node for r in answered).items()))
        failed = [r for r in replies if not r.ok]
        if failed:
            first = failed[0]
            self.check("distribution", False, f"{len(failed)} of {len(replies)} requests through the VIP failed "
                                              f"(first: {first.error or f'HTTP {first.status}'})")
        elif s.persistence == "ip_hash":
            self.check("distribution", len(self.distribution) == 1,
                       f"ip_hash pins this client to one node: {self.distribution} "
                       "(a spread needs many clients; not demanded)")
        else:
            ok, detail = distribution_verdict(self.distribution, weights, proportional=s.persistence == "none")
            if s.persistence != "none":
                detail += f" ({len(replies)} distinct {s.persistence} values; proportions not demanded)"
            self.check("distribution", ok, f"pool {pool}: {detail}")
        self.check_headers(answered)
        if s.rules:
            self.check_routing()
        if s.persistence != "none":
            self.check_persistence()

    def check_headers(self, replies: list[Reply]) -> None:
        s = self.s
        problems = []
        for r in replies:
            b = r.body or {}
            xff = [x.strip() for x in str(b.get("x_forwarded_for", "")).split(",") if x.strip()]
            if b.get("host") != s.server_name:
                problems.append(f"Host arrived as {b.get('host')!r}, sent {s.server_name!r}")
            if b.get("x_real_ip") != r.client_ip:
                problems.append(f"X-Real-IP arrived as {b.get('x_real_ip')!r}, client is {r.client_ip}")
            if r.client_ip not in xff:
                problems.append(f"X-Forwarded-For {b.get('x_forwarded_for')!r} lacks the client {r.client_ip}")
        if not replies:
            self.check("proxy_headers", False, "no /whoami answer to inspect")
        elif problems:
            self.check("proxy_headers", False, f"{problems[0]} ({len(problems)} problems in {len(replies)} answers)")
        else:
            self.check("proxy_headers", True, f"Host, X-Real-IP ({replies[0].client_ip}) and X-Forwarded-For "
                                              f"arrive at the web nodes ({len(replies)} answers)")

    def check_routing(self) -> None:
        s = self.s
        seen, wrong = [], []
        for family, ua in USER_AGENTS.items():
            pool = expected_pool(ua, s.rules, s.default_pool)
            nodes = []
            for i in range(UA_REQUESTS):
                r = self._get(user_agent=ua, cookie=self._cookie(f"ua-{family}-{i}"))
                nodes.append(r.node if r.ok else f"error({r.error or r.status})")
            bad = [n for n in nodes if n not in s.pools[pool]]
            seen.append(f"{family}->{pool}:{'/'.join(sorted(set(nodes)))}")
            if bad:
                wrong.append(f"{family} UA expected pool {pool} ({', '.join(s.pools[pool])}) "
                             f"but got {', '.join(sorted(set(bad)))}")
        self.check("ua_routing", not wrong, "; ".join(wrong) if wrong else " ".join(seen))

    def check_persistence(self) -> None:
        cookie = self._cookie("hv-sticky")
        nodes = [self._get(cookie=cookie).node for _ in range(STICKY_REQUESTS)]
        ok = len(set(nodes)) == 1 and nodes[0] is not None
        self.check("persistence", ok, f"{self.s.persistence}: {STICKY_REQUESTS} requests of one client went to "
                                      f"{', '.join(sorted({str(n) for n in nodes}))}")

    def check_firewall(self) -> None:
        """The ports the nodes' firewall must close are closed (verifier/firewall.py)."""
        try:
            passed, detail = firewall.check(self.s)
        except (firewall.ProbeError, OSError, ValueError) as e:
            passed, detail = False, f"cannot probe from the lab namespace: {e}"
        self.check("firewall_closed", passed, detail)

    # ---- the failover drill --------------------------------------------------------------------
    def drill(self, kinds: list[str] | None = None) -> None:
        """Break and repair the VIP holder, pair by pair (`kinds`, default the spec's drill kinds: keepalived,
        nginx if health-checked, pause if asked), while a background prober measures what clients see. With
        preempt on, the holder is the MASTER and gets the VIP back after each repair; with nopreempt the VIP
        stays where it failed over to. The probes stay in `self.timeline`."""
        s = self.s
        kinds = list(kinds if kinds is not None else s.drill_kinds)
        load_kinds = [k for k in kinds if k in LOAD_KINDS]
        kinds = [k for k in kinds if k not in LOAD_KINDS]
        if kinds:
            self._vip_drill(kinds)
        loads = LoadDrills(self)
        try:
            for kind in load_kinds:
                ok = loads.web(kind) if kind.startswith("web_") else getattr(loads, LOAD_RUNS[kind])()
                if not ok:
                    for rest in load_kinds[load_kinds.index(kind) + 1:]:
                        self.check(f"drill_{rest}", False, "not run: an earlier drill step failed")
                    break
        finally:  # also on a cancel: each load drill repaired its break, this waits for one holder again
            if load_kinds:
                self.restore([], s.master if s.preempt else None)

    def _vip_drill(self, kinds: list[str]) -> None:
        s = self.s
        outstanding: list[tuple[str, Balancer]] = []  # what is broken right now, to restore in finally

        def breaker(kind: str, lb: Balancer) -> Callable[[], None]:
            def act() -> None:
                outstanding.append((kind, lb))
                KINDS[kind].breaks(self, lb)
            return act

        def repairer(kind: str, lb: Balancer) -> Callable[[], None]:
            def act() -> None:
                KINDS[kind].repairs(self, lb)
                outstanding.remove((kind, lb))
            return act

        by_name = {b.name: b for b in s.balancers}
        began = time.monotonic()
        self.log(f"failover drill: {', '.join(kinds)}; probing http://{s.vip}/ every {s.probe_interval:g} s")
        prober = self._prober = Prober(s.vip, s.server_name, s.probe_interval, s.probe_timeout,
                                       max_seconds=len(kinds) * 4 * s.step_timeout + 60)
        with prober:
            time.sleep(0.5)  # a baseline of good probes before the first step
            try:
                for i, kind in enumerate(kinds):
                    k = KINDS[kind]
                    cur = by_name.get(self.holder or "", s.master)
                    other = next(b for b in s.balancers if b is not cur)
                    # Who holds the VIP after the repair. A frozen holder resumes believing it is MASTER, so
                    # the higher priority wins whatever nopreempt says.
                    home = s.master if s.preempt or kind == "hard" else other
                    if k.needs_preempt and not s.preempt:
                        broke = fixed = self.check(f"drill_{k.break_step}", False,
                                                   f"{kind} needs preempt: with nopreempt a lower priority does not move the VIP")
                    else:
                        broke = self.step(k.break_step, breaker(kind, cur), other if k.must_move else None,
                                          k.what.format(lb=cur.name, prio=k.low(s)),
                                          only=[other] if k.holder_unreadable else None)
                        fixed = self.step(k.restore_step, repairer(kind, cur), home, f"{cur.name} back")
                    if fixed:
                        self.holder = home.name
                    if not (broke and fixed):
                        for rest in kinds[i + 1:]:
                            self.check(f"drill_{KINDS[rest].break_step}", False, "not run: an earlier drill step failed")
                        break
            finally:
                self.restore(outstanding, s.master if s.preempt else None)
        self.timeline = prober.snapshot()
        for name, w in self.windows.items():
            if w.start < began:
                continue  # an earlier drill's step (the bench drills the same verifier round after round)
            gap = longest_gap([(p.t, p.ok) for p in self.timeline], w.start, w.end)
            self.gaps[name] = {"gap_s": gap.gap_s, "failed_probes": gap.failed_probes, "moved_after_s": w.moved_after_s,
                               "served_after_s": w.served_after_s, "recovered": gap.recovered}
        self.log("gaps: " + ", ".join(f"{k} {v['gap_s']:.2f} s/{v['failed_probes']} failed/moved "
                                      f"{v['moved_after_s'] if v['moved_after_s'] is not None else '-'}"
                                      for k, v in self.gaps.items()))

    def step(self, name: str, action: Callable[[], None], target: Balancer | None, what: str,
             only: list[Balancer] | None = None) -> bool:
        """Do `action`, then wait (bounded) until `target` alone holds the VIP (`only`: the balancers that can
        be read; target None: any one balancer) and the VIP serves through it. The probe window for the gap
        runs until it is settled."""
        s = self.s
        if target is None:
            return self._step_any(name, action, what)
        t0 = time.monotonic()
        deadline = t0 + s.step_timeout
        errors: list[BaseException] = []

        def act() -> None:
            try:
                action()
            except (ActionError, OSError) as e:
                errors.append(e)

        # The action runs beside the holder poll: a stop that waits for the daemon to exit (or an ssh
        # round trip) must not delay seeing the VIP move.
        worker = self._worker = threading.Thread(target=act, name=f"drill-{name}", daemon=True)
        worker.start()
        moved_at, sample = None, {}
        for _ in range(int(s.step_timeout / self.a.poll_interval) + 2):
            sample = self.holders(only)
            if holders_of(sample) == [target.name]:
                moved_at = time.monotonic()
                break
            if errors or time.monotonic() >= deadline:
                break
            time.sleep(self.a.poll_interval)
        worker.join(max(0.0, deadline - time.monotonic()) + 60)
        if errors or worker.is_alive():
            self.windows[name] = Window(t0, time.monotonic(), None)
            why = errors[0] if errors else "it did not finish"
            return self.check(f"drill_{name}", False, f"{what}: the action failed: {why}")
        if moved_at is None:
            self.windows[name] = Window(t0, time.monotonic(), None)
            now = holders_of(sample)
            where = " and ".join(now) if now else "no balancer"
            if now and target.name not in now and len(now) == 1:
                msg = f"the VIP stayed on {where} after {s.step_timeout:g} s ({what}); expected it on {target.name}"
            else:
                msg = f"the VIP is on {where} {s.step_timeout:g} s after '{what}'; expected it on {target.name} only"
            return self.check(f"drill_{name}", False, msg)
        served = None
        while time.monotonic() < moved_at + s.step_timeout:
            served = first_after(self._probes(), t0, target.name)
            if served is not None:
                break
            time.sleep(0.1)
        time.sleep(SETTLE_AFTER_STEP)
        end = time.monotonic()
        after = holders_of(self.holders(only))
        self.windows[name] = Window(t0, end, round(moved_at - t0, 3), None if served is None else round(served - t0, 3))
        if served is None:
            return self.check(f"drill_{name}", False, f"{target.name} holds the VIP ({what}) but no request through "
                                                      f"it got HTTP 200 within {s.step_timeout:g} s")
        if after != [target.name]:
            return self.check(f"drill_{name}", False, f"the VIP did not stay on {target.name} ({what}): now on "
                                                      f"{' and '.join(after) or 'no balancer'}")
        return self.check(f"drill_{name}", True, f"{what}: VIP on {target.name} after {moved_at - t0:.2f} s, "
                                                 f"served by it {served - t0:.2f} s after the action")

    def _step_any(self, name: str, action: Callable[[], None], what: str) -> bool:
        """A step after which any one balancer may hold the VIP: wait (bounded) for a probe launched after
        the action to be served again, with exactly one holder."""
        s = self.s
        t0 = time.monotonic()
        try:
            action()
        except (ActionError, OSError) as e:
            self.windows[name] = Window(t0, time.monotonic(), None)
            return self.check(f"drill_{name}", False, f"{what}: the action failed: {e}")
        deadline = t0 + s.step_timeout
        serving = False
        while time.monotonic() < deadline:
            later = [p for p in self._probes() if p[0] >= t0 + 1.0]  # launched after the crash had its effect
            if later and later[-1][1] and len(holders_of(self.holders())) == 1:
                serving = True
                break
            time.sleep(self.a.poll_interval)
        window = [p for p in self._probes() if p[0] >= t0]
        last_failed = max((p[0] for p in window if not p[1]), default=t0)
        served = next((p for p in window if p[1] and p[0] >= last_failed), None) if serving else None
        time.sleep(SETTLE_AFTER_STEP)
        now = holders_of(self.holders())
        # A crash the node repairs itself can make the VIP move and come back while we look: wait (bounded)
        # for one holder again rather than judging a sample taken mid-move.
        while served is not None and len(now) != 1 and time.monotonic() < deadline:
            time.sleep(self.a.poll_interval)
            now = holders_of(self.holders())
        end = time.monotonic()
        self.windows[name] = Window(t0, end, None, None if served is None else round(served[0] - t0, 3))
        if served is None or len(now) != 1:
            where = " and ".join(now) or "no balancer"
            return self.check(f"drill_{name}", False, f"{what}: the VIP is on {where} {end - t0:.0f} s later"
                                                      + ("" if served else " and no request through it got HTTP 200"))
        self.holder = now[0]
        return self.check(f"drill_{name}", True, f"{what}: the VIP served again {served[0] - t0:.2f} s after it "
                                                 f"(first through {served[2]}); {now[0]} alone holds it now")

    def _probes(self) -> list[tuple[float, bool, str | None]]:
        p = self._prober
        return [(x.t, x.ok, x.balancer) for x in p.snapshot()] if p else []

    def restore(self, outstanding: list[tuple[str, Balancer]], home: Balancer | None) -> None:
        """Leave the cluster as found: start/resume whatever the drill left broken, then wait (bounded)
        for `home` (None: any one balancer) alone to hold the VIP. A signal does not cut it short; once
        cancelled (verifier/cancel.py) the wait ends CANCEL_RESERVE_S before the cancel budget does."""
        with CANCEL.shielded():
            self._restore(outstanding, home)

    def _restore(self, outstanding: list[tuple[str, Balancer]], home: Balancer | None) -> None:
        w = self._worker
        if CANCEL.cancelled and w is not None and w.is_alive():
            w.join(min(WORKER_JOIN_S, CANCEL.remaining()))  # its break or repair may still be landing
        problems = []
        for kind, lb in reversed(list(outstanding)):
            try:
                KINDS[kind].repairs(self, lb)
                outstanding.remove((kind, lb))
                self.log(f"restored {kind} on {lb.name}")
            except (ActionError, OSError) as e:
                problems.append(f"could not restore {kind} on {lb.name}: {e}")

        def settled(now: list[str]) -> bool:
            return now == [home.name] if home else len(now) == 1

        # Bounded grace: wait for one holder that stays put STABLE_S; keep every change of holders.
        start = time.monotonic()
        deadline = start + 2 * self.s.step_timeout
        timeline: list[tuple[float, list[str]]] = []
        now: list[str] = []
        need = max(2, math.ceil(STABLE_S / self.a.poll_interval))  # samples in a row, one poll apart
        stable = 0
        for _ in range(int(2 * self.s.step_timeout / self.a.poll_interval) + need + 2):
            t = time.monotonic()
            now = holders_of(self.holders())
            if not timeline or timeline[-1][1] != now:
                timeline.append((t - start, now))
            stable = stable + 1 if settled(now) else 0
            if stable >= need or t >= deadline or CANCEL.remaining() <= CANCEL_RESERVE_S:
                break
            time.sleep(self.a.poll_interval)
        self.holder_timeline = [{"t": round(t, 2), "holders": h} for t, h in timeline]
        flaps = "; holders over time: " + ", ".join(
            f"{t:.1f} s {'+'.join(h) or 'none'}" for t, h in timeline) if len(timeline) > 1 else ""
        if stable < need and CANCEL.cancelled:
            want = home.name if home else "exactly one balancer"
            problems.append(f"cancelled before one holder was steady: the VIP is on {' and '.join(now) or 'no balancer'}"
                            f", expected {want}{flaps}")
        elif stable < need:
            want = home.name if home else "exactly one balancer"
            problems.append(f"no stable holder within {2 * self.s.step_timeout:g} s: the VIP is on "
                            f"{' and '.join(now) or 'no balancer'}, expected {want}{flaps}")
        self.holder = now[0] if len(now) == 1 else self.holder
        self.check("cluster_restored", not problems,
                   "; ".join(problems) if problems else
                   f"every daemon the drill stopped runs again; {now[0]} holds the VIP, steady {STABLE_S:g} s{flaps}")
