"""From the raw results to the summaries, the targets' verdicts and the Markdown table (pure: no I/O)."""

from __future__ import annotations

from typing import Any

from verifier.drills import LOAD_KINDS

from .stats import TARGET_BY_KEY, TARGETS, Verdict, fmt, summary, verdict

KIND_TITLES = {"keepalived": "keepalived stopped (graceful)", "nginx": "nginx stopped",
               "nginx_kill": "nginx killed (kill -9), then started", "hard": "master paused (virsh suspend/resume)",
               "poweroff": "master powered off (virsh destroy/start)",
               "switchover": "planned switchover (priority + reload, restored)",
               "web_freeze": "web01 frozen 20 s (virsh suspend), then resumed",
               "web_poweroff": "web01 powered off 20 s (virsh destroy), then started",
               "lb_starve": "both balancers starved (vcpu_quota 10%) for 60 s",
               "vrrp_cut": "VRRP cut on the MASTER for 15 s, then healed",
               "host_lost": "the MASTER's hypervisor lost (lb01 + web01 frozen 10 s, killed, down 10 s, started)"}
# The same failures before the health agent (2026-12-01, reported in the issue on HA under load, 10 req/s).
BEFORE = {"web_freeze": "75 of 400 requests failed, p99 10 s", "web_poweroff": "238 of 400 requests failed",
          "lb_starve": "both balancers FAULT: no holder", "vrrp_cut": "no holder at the end, 7.7 s dark after the heal",
          "poweroff": "returning MASTER: 14.6 s dark (225 failed probes)",
          "nginx_kill": "2.10 s (reference), no holder at the end",
          "host_lost": "a powered-off master today: 2.9 s gap (reference), 0.4 s (fast)"}
LOAD_FIELDS = ("failed_requests", "requests", "max_latency_s", "p99_latency_s", "no_holder_s", "two_holders_s",
               "failed_probes_after_heal", "rejoined_after_s", "returned_after_s")
LOAD_TARGETS = {"web_freeze": ("web_freeze_failed", "web_freeze_latency"),
                "web_poweroff": ("web_poweroff_failed", "web_poweroff_latency"),
                "lb_starve": ("starve_no_holder", "starve_two_holders"), "vrrp_cut": ("cut_heal_failed",)}
LOAD_TARGET_FIELD = {"web_freeze_failed": "failed_requests", "web_freeze_latency": "max_latency_s",
                     "web_poweroff_failed": "failed_requests", "web_poweroff_latency": "max_latency_s",
                     "starve_no_holder": "no_holder_s", "starve_two_holders": "two_holders_s",
                     "cut_heal_failed": "failed_probes_after_heal"}
# The two-hosts profile's drills under load: (profile, kind) -> {target: the field it compares}.
HOST_TARGETS = {("two-hosts", "host_lost"): {"two_hosts_host_lost_gap": "no_holder_s",
                                             "two_hosts_host_lost_failed": "failed_requests"},
                ("two-hosts-fast", "host_lost"): {"two_hosts_fast_host_lost_gap": "no_holder_s",
                                                  "two_hosts_fast_host_lost_failed": "failed_requests"}}
LOAD_PROFILES = ("reference", "fast", "two-hosts", "two-hosts-fast")
LOAD_KIND_ORDER = LOAD_KINDS
PROFILE_TARGETS = {("fast", "hard"): "fast_hard", ("fast", "poweroff"): "fast_poweroff",
                   ("fast", "keepalived"): "fast_keepalived", ("reference", "nginx_kill"): "reference_nginx_kill",
                   ("fast", "nginx_kill"): "fast_nginx_kill", ("reference", "switchover"): "reference_switchover",
                   ("fast", "switchover"): "fast_switchover"}


# ---- summaries -------------------------------------------------------------------------------------
def deploy_summary(cycles: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("up_cold_s", "up_noop_s", "preview_s", "destroy_s")
    out = {k: summary(c.get(k) for c in cycles) for k in keys}
    out["vms_s"] = summary((c.get("phases") or {}).get("vms_s") for c in cycles)
    out["verify_s"] = summary((c.get("phases") or {}).get("verify_s") for c in cycles)
    out["configs_s"] = summary((c.get("phases") or {}).get("configs_s") for c in cycles)
    out["wait_s"] = summary((c.get("verification") or {}).get("wait_s") for c in cycles)
    out["drill_s"] = summary((c.get("verification") or {}).get("drill_s") for c in cycles if c.get("failover_drill"))
    for key in ("kernel_systemd_s", "ci_init_s", "ci_config_s", "ci_final_s", "ready_s"):
        out[f"guest_{key}"] = summary(x for c in cycles for x in [guest_median(c.get("guests"), key)])
    return out


def two_hosts_lines(dep: dict[str, Any], one_host: list[dict[str, Any]], skipped: str | None) -> list[str]:
    """The deploy rows across two hypervisors: every cycle, and cycles 2..N (verified without the drill)
    against the one-host cycles 2..N of the same run."""
    two = dep.get("two_hosts") or {}
    if not two and not skipped:
        return []
    head = "cold `pulumi up` across 2 hypervisors (dev2 config)"
    if not two:
        return [_row([head, "–", "", "", "0", f"skipped: {skipped}", ""])]
    plain = summary(c.get("up_cold_s") for c in two["cycles"] if not c.get("failover_drill"))
    one = summary(c.get("up_cold_s") for c in one_host if not c.get("failover_drill"))
    ratio = (f"{plain['median'] / one['median']:.2f}× the one-host median ({_s(one['median'])}, same run)"
             if plain.get("median") and one.get("median") else "no one-host cycles without the drill to compare")
    out = [_row([f"{head}, cycles without the drill", _s(plain.get("median")), _s(plain.get("min")),
                 _s(plain.get("max")), str(plain.get("n", 0)), f"stack {two['stack']} on {two['subnet']}: {ratio}", ""])]
    for c in two["cycles"]:
        what = "full verification incl. failover drill and host_lost" if c.get("failover_drill") else "verification without drill"
        ph, ver = c.get("phases") or {}, c.get("verification") or {}
        out.append(_row([f"↳ 2 hypervisors, cycle {c['cycle']}: cold up ({what})", _s(c.get("up_cold_s")), "", "", "1",
                         f"VMs defined+started at {_s(ph.get('vms_s'))}, nodes configured at {_s(ph.get('configs_s'))}; "
                         f"verifier {_s(ph.get('verify_s'))}: wait {_s(ver.get('wait_s'))}, checks {_s(ver.get('checks_s'))}"
                         + (f", drill {_s(ver.get('drill_s'))}" if ver.get("drill_s") is not None else "")
                         + f"; destroy {_s(c.get('destroy_s'))}", ""]))
    return out


def guest_median(guests: dict[str, dict[str, float]] | None, key: str) -> float | None:
    """The median over a stack's nodes of one boot phase (None when no node logged it)."""
    return summary((g or {}).get(key) for g in (guests or {}).values())["median"]


def guest_text(guests: dict[str, dict[str, float]] | None) -> str:
    if not guests or guest_median(guests, "ready_s") is None:
        return ""
    m = {k: guest_median(guests, k) for k in ("kernel_systemd_s", "ci_init_s", "ci_config_s", "ci_final_s", "ready_s")}
    return (f"; guests (median of {len(guests)}, uptime): kernel + systemd {_s(m['kernel_systemd_s'])}, cloud-init "
            f"local+network {_s(m['ci_init_s'])}, config modules {_s(m['ci_config_s'])}, final modules (runcmd) "
            f"{_s(m['ci_final_s'])}: ready at {_s(m['ready_s'])}")


def failover_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per drill kind: the break step's and the restore step's gap, failed probes, moved/served times."""
    out: dict[str, Any] = {}
    loads: dict[str, list[dict]] = {}
    for r in rounds:
        for step in r["steps"].values():
            if step["role"] == "load":
                loads.setdefault(step["kind"], []).append(step)
                continue
            k = out.setdefault(step["kind"], {"break": [], "restore": []})
            k[step["role"]].append(step)
    return {**{kind: {"load": {f: summary(s.get(f) for s in steps) for f in LOAD_FIELDS}} for kind, steps in loads.items()},
            **_pairs(out)}


def _pairs(out: dict[str, Any]) -> dict[str, Any]:
    return {kind: {role: {"gap_s": summary(s["gap_s"] for s in steps),
                          "failed_probes": summary(s["failed_probes"] for s in steps),
                          "moved_after_s": summary(s.get("moved_after_s") for s in steps),
                          "served_after_s": summary(s.get("served_after_s") for s in steps),
                          "unrecovered": sum(1 for s in steps if not s.get("recovered", True))}
                   for role, steps in roles.items()}
            for kind, roles in out.items()}


def overhead_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in ("vip", "direct"):
        out[path] = {m: summary(r[path].get(m) for r in rounds if r.get(path)) for m in ("rps", "p50_ms", "p99_ms")}
        for m in ("host_busy_cores", "vm_cpu_ms_per_request", "lb_cpu_ms_per_request", "web_cpu_ms_per_request"):
            out[path][m] = summary(((r.get(path) or {}).get("cpu") or {}).get(m) for r in rounds)
    vip, direct = out["vip"]["rps"]["median"], out["direct"]["rps"]["median"]
    out["ratio"] = round(vip / direct, 3) if vip and direct else None
    out["round_ratios"] = summary(r["vip"]["rps"] / r["direct"]["rps"] for r in rounds
                                  if (r.get("vip") or {}).get("rps") and (r.get("direct") or {}).get("rps"))
    return out


def evaluate(results: dict[str, Any]) -> list[Verdict]:
    """Every target's verdict from the summaries in `results` (missing figures: not measured)."""
    values: dict[str, float | None] = {}
    dep = (results.get("deploy") or {}).get("summary") or {}
    values["cold_up"] = (dep.get("up_cold_s") or {}).get("median")
    values["noop_up"] = (dep.get("up_noop_s") or {}).get("median")
    for (profile, kind), key in PROFILE_TARGETS.items():
        t = TARGET_BY_KEY[key]
        brk = (((results.get("failover") or {}).get(profile) or {}).get("summary") or {}).get(kind, {}).get("break")
        field = "failed_probes" if t.unit == "probes" else "gap_s"
        values[key] = (brk or {}).get(field, {}).get(t.stat) if brk else None
    for profile in ("reference", "fast"):
        fs = (((results.get("failover") or {}).get(profile) or {}).get("summary") or {})
        pw = (fs.get("poweroff") or {}).get("restore")
        values[f"{profile}_return"] = (pw or {}).get("failed_probes", {}).get("max") if pw else None
        for kind, keys in LOAD_TARGETS.items():
            load = (fs.get(kind) or {}).get("load") or {}
            for key in keys:
                t = TARGET_BY_KEY[f"{profile}_{key}"]
                values[t.key] = (load.get(LOAD_TARGET_FIELD[key]) or {}).get(t.stat)
    for (profile, kind), fields in HOST_TARGETS.items():
        load = (_summary(results, profile).get(kind) or {}).get("load") or {}
        for key, field in fields.items():
            values[key] = (load.get(field) or {}).get(TARGET_BY_KEY[key].stat)
    roll = (results.get("rolling") or {}).get("summary") or {}
    values["rolling_failed"], values["rolling_gap"], values["rolling_time"] = (
        roll.get("failed_max"), roll.get("longest_no_answer_max_s"), roll.get("roll_vs_target_max"))
    values["rps_ratio"] = ((results.get("overhead") or {}).get("summary") or {}).get("ratio")
    mems = [m.get("max_mib") for m in (results.get("memory") or {}).values() if m.get("max_mib") is not None]
    values["vm_memory"] = round(max(mems) / 1024, 3) if mems else None
    return [verdict(t, values.get(t.key)) for t in TARGETS]


def rolling_lines(roll: dict[str, Any], verdicts: dict[str, Verdict]) -> list[str]:
    """The rolling-change rows (bench/rolling.py): one per change, then the three targets."""
    if not roll.get("rows"):
        return []
    out = [f"### Rolling changes (stack {roll.get('stack')}, 10 requests/s through the VIP, 10 s patience each)", "",
           _row(["Change", "`pulumi up`", "requests", "failed", "longest without an answer", "max latency",
                 "nodes rolled (boot s)", "roll target"]),
           _row(["---", "---:", "---:", "---:", "---:", "---:", "---", "---:"])]
    for r in roll["rows"]:
        order = ", ".join(f"{n} ({_s(r['boots_s'].get(n))})" for n in r["order"]) or "none (in place)"
        out.append(_row([r["change"], _s(r["up_s"]), str(r["requests"]), str(r["failed"]), _s(r["longest_no_answer_s"]),
                         _s(r["max_latency_s"]), order, _s(r["target_s"]) if r["target_s"] else "–"]))
    out.append("")
    for key in ("rolling_failed", "rolling_gap", "rolling_time"):
        v = verdicts.get(key)
        if v:
            out.append(f"- {TARGET_BY_KEY[key].title}: {v.detail} {_mark(v)}")
    return [*out, ""]


def _summary(results: dict[str, Any], profile: str) -> dict[str, Any]:
    return (((results.get("failover") or {}).get(profile) or {}).get("summary")) or {}


def load_target_keys(profile: str, kind: str) -> list[str]:
    """The targets a drill under load of `profile` is held to."""
    if (profile, kind) in HOST_TARGETS:
        return list(HOST_TARGETS[profile, kind])
    return [f"{profile}_{key}" for key in LOAD_TARGETS.get(kind, ())] if profile in ("reference", "fast") else []


# ---- Markdown --------------------------------------------------------------------------------------
def _s(x: float | None, unit: str = "s") -> str:
    return fmt(x, unit)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _mark(v: Verdict | None) -> str:
    if v is None:
        return ""
    return "–" if v.met is None else ("**met**" if v.met else "**not met**")


def blame_lines(blame: dict[str, dict[str, list[str]]] | None, top: int = 4) -> list[str]:
    """The guests' own boot profile (cycle 1): the slowest systemd units and cloud-init steps per node."""
    if not blame:
        return []
    out = ["", "Boot profile of cycle 1, as each guest measured it (slowest first; `systemd-analyze blame`, "
           "`cloud-init analyze blame`):", ""]
    for node, b in sorted(blame.items()):
        if b.get("error"):
            out.append(f"- {node}: not readable ({b['error'][0]})")
            continue
        out.append(f"- {node}: systemd {'; '.join(b.get('systemd', [])[:top]) or '?'} | cloud-init "
                   f"{'; '.join(b.get('cloud_init', [])[:top]) or '?'}")
    return out


def render(results: dict[str, Any]) -> str:
    m = results.get("machine") or {}
    verdicts = {v.key: v for v in (Verdict(**d) for d in results.get("targets", []))} or {
        v.key: v for v in evaluate(results)}
    cfg = results.get("config") or {}
    lines = [f"## hacluster bench ({results.get('started_at', '?')})", ""]
    dt = m.get("domain_type")
    dt_text = {"qemu": "qemu (TCG, no hardware virtualization)", "kvm": "kvm"}.get(dt, str(dt))
    lines.append(f"Machine: {m.get('nproc')} CPUs ({m.get('cpu_model')}), {m.get('memory_gib')} GiB RAM, "
                 f"kernel {m.get('kernel')}, libvirt domain type {dt_text}; {m.get('qemu')}, {m.get('libvirt')}. "
                 f"Bench wall time {_minutes(results.get('wall_s'))}.")
    lines.append("")

    # deploy
    dep = results.get("deploy") or {}
    cycles = dep.get("cycles") or []
    ds = dep.get("summary") or {}
    lines += [f"### Deploy ({len(cycles)} cycles of cold up, no-change up, preview, destroy; "
              f"stack {dep.get('stack', '?')} on {dep.get('subnet', '?')})", ""]
    lines.append(_row(["Measure", "median", "min", "max", "n", "target", "verdict"]))
    lines.append(_row(["---", "---:", "---:", "---:", "---:", "---", "---"]))

    def dep_row(title: str, s: dict | None, target: str | None = None) -> None:
        s = s or {}
        v = verdicts.get(target) if target else None
        lines.append(_row([title, _s(s.get("median")), _s(s.get("min")), _s(s.get("max")), str(s.get("n", 0)),
                           v.detail if v else "", _mark(v)]))

    dep_row("cold `pulumi up` → verified cluster (all cycles)", ds.get("up_cold_s"), "cold_up")
    for c in cycles:
        what = "full verification incl. failover drill" if c.get("failover_drill") else "verification without drill"
        ph, ver = c.get("phases") or {}, c.get("verification") or {}
        lines.append(_row([f"↳ cycle {c['cycle']}: cold up ({what})", _s(c.get("up_cold_s")), "", "", "1",
                           f"VMs defined+started at {_s(ph.get('vms_s'))}, nodes booted + configured (SSH, "
                           f"cloud-init, day-2 push) at {_s(ph.get('configs_s'))}; verifier {_s(ph.get('verify_s'))}: "
                           f"wait {_s(ver.get('wait_s'))}, checks {_s(ver.get('checks_s'))}"
                           + (f", drill {_s(ver.get('drill_s'))}" if ver.get("drill_s") is not None else "")
                           + guest_text(c.get("guests")), ""]))
    lines += two_hosts_lines(dep, cycles, (results.get("skipped") or {}).get("two-hosts"))
    dep_row("no-change `pulumi up`", ds.get("up_noop_s"), "noop_up")
    dep_row("`pulumi preview` (no changes)", ds.get("preview_s"))
    dep_row("`pulumi destroy`", ds.get("destroy_s"))
    lines += blame_lines(next((c.get("blame") for c in cycles if c.get("blame")), None))
    changed = [c["cycle"] for c in cycles if c.get("noop_changes")]
    if changed:
        lines.append("")
        lines.append(f"Note: the no-change up changed resources in cycles {changed} "
                     f"({'; '.join(str(c['noop_changes']) for c in cycles if c.get('noop_changes'))}).")
    lines.append("")

    # failover
    fo = results.get("failover") or {}
    lines += [f"### Failover (client-visible gap: first failed probe → first HTTP 200, probes every "
              f"{cfg.get('probe_interval_s', 0.1):g} s from inside the lab; {cfg.get('repeat', '?')} repetitions each; "
              "the master is broken, then repaired and takes the VIP back)", "",
              "Times \"after the command was issued\" include SSH to the node, sudo and systemctl inside a TCG guest "
              "(1–3 s); the gaps are what clients saw.", ""]
    lines.append(_row(["Profile", "Failure", "gap median", "gap max", "failed probes median / max",
                       "new holder serves, after the command was issued (median)",
                       "repair: gap median / max (failed max)", "n", "target", "verdict"]))
    lines.append(_row(["---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---", "---"]))
    for profile in ("reference", "fast"):
        p = fo.get(profile) or {}
        for kind, roles in (p.get("summary") or {}).items():
            if "load" in roles:
                continue  # in the table of drills under load
            b, r = roles.get("break") or {}, roles.get("restore") or {}
            g, f = b.get("gap_s") or {}, b.get("failed_probes") or {}
            rg, rf = r.get("gap_s") or {}, r.get("failed_probes") or {}
            v = verdicts.get(PROFILE_TARGETS.get((profile, kind), ""))
            unrec = b.get("unrecovered", 0) + r.get("unrecovered", 0)
            lines.append(_row([profile, KIND_TITLES.get(kind, kind) + (f" ({unrec} unrecovered)" if unrec else ""),
                               _s(g.get("median")), _s(g.get("max")), f"{_n(f.get('median'))} / {_n(f.get('max'))}",
                               _s((b.get("served_after_s") or {}).get("median")),
                               f"{_s(rg.get('median'))} / {_s(rg.get('max'))} ({_n(rf.get('max'))})",
                               str(g.get("n", 0)), v.detail if v else "", _mark(v)]))
    lines.append("")

    # drills under load
    lines += ["### Drills under load (10 requests/s through the VIP, each allowed 10 s; the numbers before the "
              "health agent are from the issue, same machine kind)", ""]
    lines.append(_row(["Profile", "Failure", "failed requests median / max (of)", "max latency median / max",
                       "no holder / two holders (s, median)", "node back after repair (median)", "n", "before",
                       "target", "verdict"]))
    lines.append(_row(["---", "---", "---:", "---:", "---:", "---:", "---:", "---", "---", "---"]))
    for profile in LOAD_PROFILES:
        fs = (fo.get(profile) or {}).get("summary") or {}
        skipped = (results.get("skipped") or {}).get(profile)
        if skipped:
            lines.append(_row([profile, KIND_TITLES["host_lost"], f"skipped: {skipped}", "", "", "", "0",
                               BEFORE["host_lost"], "", ""]))
        for kind in LOAD_KIND_ORDER:
            ld = (fs.get(kind) or {}).get("load")
            if not ld:
                continue
            md = lambda f, ld=ld: (ld.get(f) or {}).get("median")  # noqa: E731
            mx = lambda f, ld=ld: (ld.get(f) or {}).get("max")  # noqa: E731
            vs = [verdicts.get(key) for key in load_target_keys(profile, kind)]
            failed = (f"{_n(md('failed_probes_after_heal'))} / {_n(mx('failed_probes_after_heal'))} probes after the heal"
                      if kind == "vrrp_cut" else f"{_n(md('failed_requests'))} / {_n(mx('failed_requests'))} "
                                                 f"(of {_n(md('requests'))})")
            lines.append(_row([profile, KIND_TITLES[kind], failed, f"{_s(md('max_latency_s'))} / {_s(mx('max_latency_s'))}",
                               f"{_s(md('no_holder_s'))} / {_s(md('two_holders_s'))}"
                               if kind in ("lb_starve", "host_lost") else "",
                               _s(md("rejoined_after_s")) if kind.startswith("web_") else
                               _s(md("returned_after_s")) if kind == "host_lost" else "",
                               str((ld.get("max_latency_s") or {}).get("n", 0)), BEFORE.get(kind, ""),
                               "; ".join(v.detail for v in vs if v), " ".join(_mark(v) for v in vs if v)]))
        for kind in ("nginx_kill", "poweroff"):
            if kind in fs:
                v = verdicts.get(f"{profile}_return") if kind == "poweroff" else verdicts.get(
                    PROFILE_TARGETS.get((profile, kind), ""))
                lines.append(_row([profile, KIND_TITLES[kind] + (" — the MASTER's return" if kind == "poweroff" else ""),
                                   "", "", "", "", "", BEFORE[kind], v.detail if v else "", _mark(v)]))
    lines.append("")

    lines += rolling_lines(results.get("rolling") or {}, verdicts)

    # overhead
    oh = (results.get("overhead") or {}).get("summary") or {}
    w = cfg.get("wrk") or {}
    lines += [f"### Balancer overhead (wrk -t{w.get('threads', 1)} -c{w.get('connections', 8)} -d{w.get('seconds', 10)}s "
              f"from inside the lab, {w.get('rounds', 3)} alternating rounds, medians)", ""]
    lines.append(_row(["Path", "requests/s", "p50 latency", "p99 latency", "host CPU busy",
                       "VM CPU per request (balancers + web nodes)", "rounds", "target", "verdict"]))
    lines.append(_row(["---", "---:", "---:", "---:", "---:", "---:", "---:", "---", "---"]))
    med = lambda s, k: (s.get(k) or {}).get("median")  # noqa: E731
    for path, title in (("vip", "through the VIP (balancer → web nodes)"), ("direct", "direct to web01")):
        s = oh.get(path) or {}
        busy = med(s, "host_busy_cores")
        cpu = med(s, "vm_cpu_ms_per_request")
        lines.append(_row([title, _n(med(s, "rps")), _ms(med(s, "p50_ms")), _ms(med(s, "p99_ms")),
                           "–" if busy is None else f"{busy:.2f} of {m.get('nproc', '?')} cores",
                           "–" if cpu is None else f"{cpu:.2f} ms ({_n(med(s, 'lb_cpu_ms_per_request'))} + "
                                                   f"{_n(med(s, 'web_cpu_ms_per_request'))})",
                           str((s.get("rps") or {}).get("n", 0)), "", ""]))
    v = verdicts.get("rps_ratio")
    rr = oh.get("round_ratios") or {}
    lines.append(_row(["ratio VIP / direct (requests/s)", _s(oh.get("ratio"), "x"),
                       f"per round {_s(rr.get('min'), 'x')}…{_s(rr.get('max'), 'x')}", "", "", "", "",
                       v.detail if v else "", _mark(v)]))
    lines.append("")

    # memory
    mem = results.get("memory") or {}
    lines += ["### Host memory (RSS of each VM's qemu process)", ""]
    lines.append(_row(["Stack", "per VM (MiB)", "max per VM", "total", "target", "verdict"]))
    lines.append(_row(["---", "---", "---:", "---:", "---", "---"]))
    for profile, mm in mem.items():
        per = ", ".join(f"{d.rsplit('-', 1)[-1]} {x:.0f}" if x is not None else f"{d} ?"
                        for d, x in sorted((mm.get("per_vm_mib") or {}).items()))
        mx = mm.get("max_mib")
        v = verdict(TARGET_BY_KEY["vm_memory"], None if mx is None else round(mx / 1024, 3))
        lines.append(_row([profile, per, _gib(mx), _gib(mm.get("total_mib")), v.detail, _mark(v)]))
    lines.append("")

    # targets
    lines += ["### Targets", ""]
    lines.append(_row(["Target", "compared", "verdict", "detail"]))
    lines.append(_row(["---", "---", "---", "---"]))
    for t in TARGETS:
        v = verdicts.get(t.key)
        if v:
            lines.append(_row([t.title, t.stat, _mark(v), v.detail]))
    met = sum(1 for v in verdicts.values() if v.met)
    lines.append("")
    lines.append(f"{met} of {len(verdicts)} targets met.")
    if results.get("timeline_png"):
        lines.append(f"Timeline of one drill round: {results['timeline_png']}.")
    for note in results.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def _n(x: float | None) -> str:
    return "–" if x is None else f"{x:g}"


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} ms"


def _gib(mib: float | None) -> str:
    return "–" if mib is None else f"{mib / 1024:.3f} GiB"


def _minutes(s: float | None) -> str:
    return "?" if s is None else f"{s / 60:.1f} min ({s:.0f} s)"
