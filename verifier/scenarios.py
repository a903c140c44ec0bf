"""Drills under client load: what a web node failure, starved balancers, a VRRP cut and a lost hypervisor
cost the clients.

Each runs `spec.loadRate` GETs/s through the VIP (open loop: a request that hangs does not delay the
next; each may take `loadTimeout` s) while it breaks and repairs one thing, and reports failed requests,
the maximum latency and, where the VIP can move, the seconds with no holder and with two. Bounded:
every wait has a deadline, the load stops by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from . import arp
from .actions import ActionError
from .cancel import CANCEL, Cancelled
from .http import Probe, Prober
from .logic import holders_of
from .spec import Balancer, WebNode

BASELINE_S = 2.0
AFTER_S = 3.0
ARP_CONFIRM_S = 3.0
# A lost hypervisor's balancer does not answer ARP late, it does not answer at all: short windows, no
# confirmation, so a VIP gap of a few tenths of a second shows (a false "none" costs at most this much).
HOST_ARP_WINDOW = 0.3


@dataclass
class LoadStats:
    requests: int
    failed: int
    max_latency_s: float
    p99_latency_s: float
    errors: list[str]


def load_stats(probes: list[Probe], start: float, end: float) -> LoadStats:
    window = [p for p in probes if start <= p.t <= end]
    lat = sorted(p.latency for p in window if p.latency is not None)
    failed = [p for p in window if not p.ok]
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else 0.0
    return LoadStats(len(window), len(failed), round(lat[-1], 3) if lat else 0.0, round(p99, 3),
                     sorted({p.error or "?" for p in failed})[:3])


def holder_seconds(samples: list[tuple[float, list[str] | None]], end: float) -> tuple[float, float, int]:
    """From (time, holders or None when unreadable) samples: seconds with no holder, seconds with two
    or more, and how many samples were unreadable. Each sample holds until the next one."""
    none_s = two_s = 0.0
    unreadable = 0
    for (t, h), (t_next, _) in zip(samples, [*samples[1:], (end, None)], strict=True):
        if h is None:
            unreadable += 1
            continue
        if len(h) == 0:
            none_s += t_next - t
        elif len(h) > 1:
            two_s += t_next - t
    return round(none_s, 2), round(two_s, 2), unreadable


def holder_changes(samples: list[tuple[float, list[str] | None]], t0: float) -> list[list]:
    """The holder timeline from `samples`: [seconds after t0, holders (None: unreadable)] at each change."""
    out: list[list] = []
    for t, h in samples:
        if not out or out[-1][1] != h:
            out.append([round(t - t0, 2), h])
    return out


class LoadDrills:
    """Written once over `Actions`; `v` is the Verifier (spec, actions, checks, holder reads)."""

    def __init__(self, v):
        self.v, self.s, self.a = v, v.s, v.a

    def _prober(self, seconds: float) -> Prober:
        s = self.s
        return Prober(s.vip, s.server_name, 1.0 / s.load_rate, s.load_timeout,
                      max_seconds=seconds + s.load_timeout + 30, max_in_flight=int(s.load_rate * s.load_timeout) + 8)

    def _arp_sample(self, samples: list, window: float = 1.0, confirm: float = ARP_CONFIRM_S) -> bool:
        """Holders as ARP shows them (see verifier.arp); False when ARP cannot be used here."""
        names = {b.mac: b.name for b in self.s.balancers if b.mac}
        try:
            macs = arp.who_has(self.s.vip, window)
            if not macs and confirm:
                # A starved holder's kernel may answer ARP late (seen here: 0 failed requests, no VRRP
                # transition, one silent window): ask again, longer, before calling it "no holder".
                macs = arp.who_has(self.s.vip, confirm)
        except OSError:
            return False
        samples.append((time.monotonic(), sorted(names.get(m, m) for m in macs)))
        return True

    def _sample(self, samples: list, only=None) -> None:
        try:
            sample = self.v.holders(only)
        except ActionError:
            sample = {}
        readable = [v for v in sample.values() if v is not None]
        samples.append((time.monotonic(), holders_of(sample) if len(readable) == len(sample) and sample else None))

    def _hold(self, seconds: float, samples: list | None, until: Callable[[], bool] | None = None,
              arp_window: float | None = None, only: list | None = None) -> float | None:
        """Wait `seconds` (or until `until()`, bounded by `seconds`), sampling holders (by ARP windows of
        `arp_window` s where it can be used; else through the actions of `only`, default both); returns
        when `until` became true (None if it never did)."""
        t0 = time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            if samples is not None and not (arp_window and self._arp_sample(samples, arp_window, 0.0)):
                self._sample(samples, only)
            if until is not None and until():
                return time.monotonic() - t0
            time.sleep(max(0.0, min(self.a.poll_interval, end - time.monotonic())))
        return None

    def _hold_arp(self, seconds: float, samples: list, only: list | None = None, window: float = 1.0,
                  confirm: float = ARP_CONFIRM_S) -> None:
        """Sample the holders through ARP for `seconds` (a starved balancer answers ARP long before SSH);
        through the actions (of `only`: the ones that can answer) where ARP cannot be used."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not self._arp_sample(samples, window, confirm):
                self._hold(max(0.0, end - time.monotonic()), samples, only=only)
                return

    def _record(self, name: str, stats: LoadStats, **extra) -> dict:
        g = {"requests": stats.requests, "failed_requests": stats.failed, "max_latency_s": stats.max_latency_s,
             "p99_latency_s": stats.p99_latency_s, **extra}
        self.v.gaps[name] = g
        return g

    # ---- web nodes -------------------------------------------------------------------------------
    def web(self, kind: str) -> bool:
        s, a = self.s, self.a
        node = s.web_nodes[0]
        hold = s.web_freeze_seconds
        breaks, repairs, what = {
            "web_freeze": (a.web_pause, a.web_resume, f"{node.name} frozen {hold:g} s"),
            "web_poweroff": (a.web_power_off, a.web_power_on, f"{node.name} powered off {hold:g} s, then started"),
        }[kind]
        prober = self._prober(BASELINE_S + hold + s.rejoin_timeout + AFTER_S)
        broken = False
        rejoined = None
        with prober:
            time.sleep(BASELINE_S)
            t_break = time.monotonic()
            try:
                broken = True  # before the action: a cancel during it must still repair
                breaks(node)
                self._hold(hold, None)
                repairs(node)
                broken = False
                t_fix = time.monotonic()
                # Rejoined: a request launched after the repair was answered by the node again.
                rejoined = self._hold(s.rejoin_timeout, None, lambda: any(
                    p.ok and p.node == node.name and p.t >= t_fix for p in prober.snapshot()))
                time.sleep(AFTER_S)
            except ActionError as e:
                return self.v.check(f"drill_{kind}", False, f"{what}: the action failed: {e}")
            finally:
                if broken:
                    with CANCEL.shielded():
                        try:
                            repairs(node)
                            self.v.log(f"repaired {node.name} ({kind} cut short)")
                        except ActionError as e:
                            self.v.log(f"could not repair {node.name}: {e}")
        stats = load_stats(prober.snapshot(), t_break - 0.5, time.monotonic())
        self._record(kind, stats, rejoined_after_s=None if rejoined is None else round(rejoined, 2))
        ok = stats.failed <= 1 and rejoined is not None
        detail = (f"{what}, {s.load_rate:g} req/s through the VIP: {stats.failed} of {stats.requests} requests failed"
                  f"{' (' + '; '.join(stats.errors) + ')' if stats.errors else ''}, max latency {stats.max_latency_s:.2f} s, "
                  + (f"{node.name} served again {rejoined:.1f} s after the repair" if rejoined is not None
                     else f"{node.name} did not serve again within {s.rejoin_timeout:g} s"))
        return self.v.check(f"drill_{kind}", ok, detail)

    # ---- balancers -------------------------------------------------------------------------------
    def starve(self) -> bool:
        s, a = self.s, self.a
        lbs = list(s.balancers)
        samples: list = []
        prober = self._prober(BASELINE_S + s.starve_seconds + AFTER_S + 30)
        what = f"both balancers starved to {s.starve_quota / 1000:g}% of a CPU for {s.starve_seconds:g} s"
        with prober:
            time.sleep(BASELINE_S)
            t0, wall0 = time.monotonic(), time.time()
            try:
                try:
                    a.starve(lbs, s.starve_quota)
                    self._hold_arp(s.starve_seconds, samples)
                finally:  # also after a cancel or a starve that failed half-way
                    with CANCEL.shielded():
                        a.starve(lbs, None)
                self._hold_arp(AFTER_S, samples)
            except ActionError as e:
                return self.v.check("drill_lb_starve", False, f"{what}: the action failed: {e}")
        end = time.monotonic()
        stats = load_stats(prober.snapshot(), t0, end)
        none_s, two_s, unreadable = holder_seconds(samples, end)
        self._record("lb_starve", stats, no_holder_s=none_s, two_holders_s=two_s, holder_samples=len(samples),
                     unreadable_samples=unreadable, holder_changes=holder_changes(samples, t0),
                     **({} if none_s == 0 and two_s == 0 else {"evidence": self._evidence(lbs, wall0)}))
        ok = none_s == 0 and two_s == 0 and len(samples) > unreadable
        return self.v.check("drill_lb_starve", ok, (
            f"{what}: {none_s:g} s with no holder, {two_s:g} s with two ({len(samples) - unreadable} of "
            f"{len(samples)} holder samples, by ARP); {stats.failed} of {stats.requests} requests failed, "
            f"max latency {stats.max_latency_s:.2f} s (a starved balancer is slow, not absent)"))

    def _evidence(self, lbs: list, since: float) -> dict:
        """What each balancer saw since `since` (epoch): its health agent's events, keepalived's log."""
        out = {}
        for lb in lbs:
            state = self.a.health_state(lb) or {}
            out[lb.name] = {"agent": [e for e in state.get("events", []) if e.get("t", 0) >= since - 5],
                            "keepalived": self.a.vrrp_log(lb, since - 5)}
        return out

    def vrrp_cut(self) -> bool:
        """VRRP dropped on the MASTER (both then claim the VIP: expected while cut), healed: the MASTER
        alone holds it again, at the cost of at most one failed probe."""
        s, a, v = self.s, self.a, self.v
        master = s.master
        samples: list = []
        prober = Prober(s.vip, s.server_name, s.probe_interval, s.probe_timeout,
                        max_seconds=BASELINE_S + s.cut_seconds + s.step_timeout + 30)
        what = f"VRRP cut on {master.name} for {s.cut_seconds:g} s, then healed"
        cut = False
        with prober:
            time.sleep(BASELINE_S)
            try:
                cut = True  # before the action: a cancel during it must still heal
                a.vrrp_cut(master, True)
                self._hold(s.cut_seconds, samples)
                t_heal = time.monotonic()
                a.vrrp_cut(master, False)
                cut = False
                settled = self._hold(s.step_timeout, samples, lambda: bool(samples) and samples[-1][1] == [master.name])
                time.sleep(AFTER_S)
                self._sample(samples)
            except ActionError as e:
                return v.check("drill_vrrp_cut", False, f"{what}: the action failed: {e}")
            finally:
                if cut:
                    with CANCEL.shielded():
                        try:
                            a.vrrp_cut(master, False)
                            v.log(f"healed the VRRP cut on {master.name} (drill cut short)")
                        except ActionError as e:
                            v.log(f"could not heal the VRRP cut on {master.name}: {e}")
        end = time.monotonic()
        probes = prober.snapshot()
        heal = [p for p in probes if p.t >= t_heal]
        failed = sum(1 for p in heal if not p.ok)
        during = [p for p in probes if p.t < t_heal]
        final = samples[-1][1] if samples else None
        self._record("vrrp_cut", load_stats(probes, t_heal, end), failed_probes_after_heal=failed,
                     failed_probes_during_cut=sum(1 for p in during if not p.ok),
                     settled_after_heal_s=None if settled is None else round(settled, 2))
        ok = settled is not None and final == [master.name] and failed <= 1
        return v.check("drill_vrrp_cut", ok, (
            f"{what}: {failed} failed probes after the heal, "
            + (f"{master.name} alone holds the VIP {settled:.1f} s after it" if ok else
               f"holders at the end: {' and '.join(final) if final else ('unreadable' if final is None else 'none')}")))

    # ---- a whole hypervisor ------------------------------------------------------------------------
    def host_lost(self) -> bool:
        """The MASTER's hypervisor (with a web node) frozen, killed, down a while, back: the cluster keeps
        serving on the other host; afterwards one holder, and every node of that host serves again."""
        s, a, v = self.s, self.a, self.v
        host = s.master.host
        lost = s.on_host(host)
        domains = [n.domain for n in lost]
        others = [b for b in s.balancers if b not in lost]  # where ARP cannot be used: who can be asked
        samples: list = []
        prober = self._prober(BASELINE_S + s.host_freeze_seconds + s.host_down_seconds + s.rejoin_timeout + AFTER_S + 120)
        what = (f"hypervisor {host} lost ({', '.join(n.name for n in lost)}): frozen {s.host_freeze_seconds:g} s, "
                f"killed, down {s.host_down_seconds:g} s, then started")
        frozen = killed = False
        back = None
        with prober:
            time.sleep(BASELINE_S)
            t0 = time.monotonic()
            try:
                frozen = True  # before each action: a cancel during it must still repair
                a.host_freeze(host)
                self._hold_arp(s.host_freeze_seconds, samples, others, HOST_ARP_WINDOW, 0.0)
                try:
                    a.host_kill(host)
                except Cancelled:
                    killed = True  # maybe half done: the finally thaws and starts the domains
                    raise
                killed = True
                self._hold_arp(s.host_down_seconds, samples, others, HOST_ARP_WINDOW, 0.0)
                frozen = killed = False  # a failed return is the check's failure (and restore's), not retried
                try:
                    a.host_return(host, domains)
                except Cancelled:
                    killed = True  # interrupted, not failed: the finally starts the domains
                    raise
                t_back = time.monotonic()
                back = self._hold(s.rejoin_timeout, samples, lambda: self._host_back(lost, samples, prober, t_back),
                                  arp_window=HOST_ARP_WINDOW)
                self._hold_arp(AFTER_S, samples, window=HOST_ARP_WINDOW, confirm=0.0)
            except ActionError as e:
                return v.check("drill_host_lost", False, f"{what}: the action failed: {e}")
            finally:
                self._repair_host(host, domains, frozen, killed)
        end = time.monotonic()
        stats = load_stats(prober.snapshot(), t0, end)
        none_s, two_s, unreadable = holder_seconds(samples, end)
        self._record("host_lost", stats, no_holder_s=none_s, two_holders_s=two_s, holder_samples=len(samples),
                     unreadable_samples=unreadable,
                     holder_changes=holder_changes(samples, t0), returned_after_s=None if back is None else round(back, 2),
                     host=host, nodes_lost=[n.name for n in lost])
        final = samples[-1][1] if samples else None
        where = " and ".join(final) if final else ("unreadable" if final is None else "none")
        if back is None:
            recovery = f"not recovered within {s.rejoin_timeout:g} s of the return (holders at the end: {where})"
        elif not self._one_holder(final):
            recovery = f"recovered {back:.1f} s after the return, but the VIP is on {where} at the end"
        else:
            webs, lbs = ([n.name for n in lost if isinstance(n, k)] for k in (WebNode, Balancer))
            recovery = (f"recovered {back:.1f} s after the return: {where} alone holds the VIP, "
                        f"{', '.join(webs)} serve{'s' if len(webs) == 1 else ''} again"
                        + (f", {', '.join(lbs)} answer{'s' if len(lbs) == 1 else ''} again" if lbs else ""))
        ok = stats.failed <= 1 and back is not None and self._one_holder(final)
        return v.check("drill_host_lost", ok, (
            f"{what}, {s.load_rate:g} req/s through the VIP: {stats.failed} of {stats.requests} requests failed"
            f"{' (' + '; '.join(stats.errors) + ')' if stats.errors else ''}, max latency {stats.max_latency_s:.2f} s, "
            f"{none_s:g} s with no holder (the VIP gap), {two_s:g} s with two; {recovery}"))

    def _one_holder(self, holders: list[str] | None) -> bool:
        """Exactly one holder: the MASTER when preempt is on, any one otherwise."""
        return holders is not None and (holders == [self.s.master.name] if self.s.preempt else len(holders) == 1)

    def _host_back(self, lost: list, samples: list, prober: Prober, since: float) -> bool:
        """One holder now, every web node of the lost host served a request launched after `since`, and its
        balancers answer the actions again."""
        if not samples or not self._one_holder(samples[-1][1]):
            return False
        probes = prober.snapshot()
        webs = [n.name for n in lost if isinstance(n, WebNode)]
        if not all(any(p.ok and p.node == w and p.t >= since for p in probes) for w in webs):
            return False
        return all(self.a.ready(b) is None for b in lost if isinstance(b, Balancer))

    def _repair_host(self, host: str, domains: list[str], frozen: bool, killed: bool) -> None:
        """Whatever an interrupted host_lost left: a frozen host thawed, a killed one's domains started."""
        with CANCEL.shielded():
            try:
                if killed:
                    self.a.host_return(host, domains)
                elif frozen:
                    self.a.host_thaw(host)
            except ActionError as e:
                self.v.log(f"could not bring hypervisor {host} back: {e}")
