"""The verifier's pure decisions: no I/O here, so unit tests can feed them made-up timelines."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# User-Agents the routing check sends (one per family the rules are usually written for).
USER_AGENTS: dict[str, str] = {
    "iphone": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "android": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/124.0.0.0 Mobile Safari/537.36",
    "chrome": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/124.0.0.0 Safari/537.36",
    "firefox": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "curl": "curl/7.88.1",
}
VERIFIER_UA = "hacluster-verifier/1"


# ---- probe timelines -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gap:
    gap_s: float  # longest client-visible outage: first failed probe of a run -> first 200 after it
    failed_probes: int
    recovered: bool  # False when the window ended in a run of failures


def longest_gap(probes: Iterable[tuple[float, bool]], start: float, end: float) -> Gap:
    """Probes are (launch time, got 200). Only those launched in [start, end] count. A run of failures
    that is still going at `end` counts up to `end` and makes the result unrecovered."""
    window = sorted((t, ok) for t, ok in probes if start <= t <= end)
    longest, failed, run_start = 0.0, 0, None
    for t, ok in window:
        if not ok:
            failed += 1
            if run_start is None:
                run_start = t
        elif run_start is not None:
            longest = max(longest, t - run_start)
            run_start = None
    if run_start is not None:
        longest = max(longest, end - run_start)
    return Gap(round(longest, 3), failed, run_start is None)


def first_after(probes: Iterable[tuple[float, bool, str | None]], since: float, balancer: str) -> float | None:
    """Launch time of the first probe launched at or after `since` that got 200 from `balancer`."""
    times = [t for t, ok, lb in probes if ok and t >= since and lb == balancer]
    return min(times) if times else None


# ---- VIP holders -----------------------------------------------------------------------------------
_INET = re.compile(r"\binet\s+([0-9.]+)/[0-9]+")


def has_address(ip_o_addr: str, address: str) -> bool:
    """Whether `ip -o addr show dev IF` output lists `address` (any prefix length)."""
    return address in _INET.findall(ip_o_addr)


def holders_of(sample: Mapping[str, bool | None]) -> list[str]:
    return sorted(name for name, holds in sample.items() if holds)


def holder_verdict(samples: Sequence[Mapping[str, bool | None]], expected: str | None) -> tuple[bool, bool, str, str | None]:
    """From holder samples taken over a settle window (each: balancer -> holds the VIP, None = unreadable):
    (single holder ok, expected holder ok, detail, the holder). Two holders in any sample is split brain."""
    if not samples:
        return False, False, "no holder sample taken", None
    for s in samples:
        both = holders_of(s)
        if len(both) > 1:
            who = " and ".join(both) if len(both) == 2 else ", ".join(both)
            return False, False, f"split brain: {who} {'both' if len(both) == 2 else 'all'} hold the VIP", None
    last = samples[-1]
    unreadable = sorted(n for n, v in last.items() if v is None)
    now = holders_of(last)
    if not now:
        why = f" (could not read {', '.join(unreadable)})" if unreadable else ""
        return False, False, f"no balancer holds the VIP{why}", None
    holder = now[0]
    changed = {h for s in samples for h in holders_of(s)}
    if len(changed) > 1:
        return False, False, f"the VIP moved while sampled ({' -> '.join(sorted(changed))}): flapping", holder
    detail = f"{holder} holds the VIP, steady over {len(samples)} samples"
    if unreadable:
        detail += f" (could not read {', '.join(unreadable)})"
    if expected is None:
        return True, True, detail, holder
    if holder != expected:
        return True, False, f"{holder} holds the VIP, expected the MASTER {expected} (highest priority, preempt on)", holder
    return True, True, detail, holder


# ---- routing and spread ----------------------------------------------------------------------------
def expected_pool(user_agent: str, rules: Sequence[tuple[str, str]], default_pool: str) -> str:
    """nginx's `map $http_user_agent` with `~*` entries: the first matching rule, case-insensitive."""
    for match, pool in rules:
        if re.search(match, user_agent, re.IGNORECASE):
            return pool
    return default_pool


def tolerance(share: float, n: int) -> float:
    """Allowed absolute deviation of a node's share of n requests: 3 sigma of a binomial, at least 0.2."""
    return max(0.2, 3 * math.sqrt(share * (1 - share) / max(n, 1)))


def distribution_verdict(counts: Mapping[str, int], weights: Mapping[str, int],
                         proportional: bool = True) -> tuple[bool, str]:
    """Every node of `weights` must be reached; with `proportional`, each share within tolerance of its
    weight's share. Counts for nodes outside `weights` (another pool) are a failure."""
    n = sum(counts.values())
    total_w = sum(weights.values())
    shown = ", ".join(f"{k}={counts.get(k, 0)}" for k in sorted(set(counts) | set(weights)))
    if n == 0:
        return False, "no request was answered by a web node"
    strays = sorted(k for k, c in counts.items() if c and k not in weights)
    if strays:
        return False, f"answered by {', '.join(strays)}, outside the expected nodes {', '.join(sorted(weights))} ({shown})"
    missing = sorted(k for k in weights if not counts.get(k))
    if missing:
        return False, f"{', '.join(missing)} never answered in {n} requests ({shown})"
    if proportional and total_w:
        for k, w in sorted(weights.items()):
            want, got = w / total_w, counts.get(k, 0) / n
            tol = tolerance(want, n)
            if abs(got - want) > tol:
                return False, (f"{k} got {got:.0%} of {n} requests, weight share {want:.0%} "
                               f"(tolerance ±{tol:.0%}) ({shown})")
    return True, f"{n} requests: {shown}"
