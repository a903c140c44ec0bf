"""The timeline of one drill round as a PNG: which balancer and which web node answered each probe, the
failed probes, and marks where each failure was caused and each repair started (matplotlib, Agg).
One panel per failure kind, each from just before the failure until the cluster was back home."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display needed
import matplotlib.pyplot as plt

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:olive"]
LABELS = {"keepalived": "keepalived stopped", "nginx": "nginx stopped", "nginx_kill": "nginx killed (kill -9)",
          "hard": "master paused (virsh suspend)", "poweroff": "master powered off (virsh destroy)",
          "switchover": "planned switchover (priority lowered + reload)"}
REPAIRS = {"keepalived": "keepalived started", "nginx": "nginx started", "nginx_kill": "nginx started",
           "hard": "resumed", "poweroff": "virsh start", "switchover": "priority restored"}
BEFORE_S, AFTER_S = 1.5, 0.5


def panels(timeline: dict[str, Any]) -> list[dict[str, Any]]:
    """Per drill kind (in order): the break and repair marks and the x range of its panel (pure, for tests)."""
    out: dict[str, dict[str, Any]] = {}
    for m in timeline["marks"]:
        p = out.setdefault(m["kind"], {"kind": m["kind"]})
        p[m["role"]] = m
    result = []
    for p in out.values():
        if "break" not in p:
            continue
        end = p["restore"]["end"] if "restore" in p else p["break"]["end"]
        p["x0"], p["x1"] = p["break"]["t"] - BEFORE_S, end + AFTER_S
        result.append(p)
    return result


def rows(probes: list[list[Any]], balancers: list[str], nodes: list[str]) -> dict[str, list[tuple[float, int, str]]]:
    """(t, y, who) per series: y 0 = failed, then the web nodes, then the balancers (pure, for tests)."""
    out: dict[str, list[tuple[float, int, str]]] = {"failed": [], "balancer": [], "node": []}
    ys_node = {n: 1 + i for i, n in enumerate(nodes)}
    ys_lb = {b: 1 + len(nodes) + i for i, b in enumerate(balancers)}
    for t, ok, lb, node, _err in probes:
        if not ok:
            out["failed"].append((t, 0, "failed"))
            continue
        if lb in ys_lb:
            out["balancer"].append((t, ys_lb[lb], lb))
        if node in ys_node:
            out["node"].append((t, ys_node[node], node))
    return out


def timeline_png(path: Path, timeline: dict[str, Any], balancers: list[str], nodes: list[str], title: str) -> Path:
    series = rows(timeline["probes"], balancers, nodes)
    ps = panels(timeline)
    colors = {name: COLORS[i % len(COLORS)] for i, name in enumerate([*nodes, *balancers])}
    ticks = ["failed"] + [f"web {n}" for n in nodes] + [f"balancer {b}" for b in balancers]
    fig, axes = plt.subplots(len(ps), 1, figsize=(13, 1.15 + 1.9 * len(ps)), dpi=100, squeeze=False)
    for ax, p in zip(axes[:, 0], ps, strict=True):
        t0 = p["break"]["t"]
        inside = lambda pts, p=p, t0=t0: [(t - t0, y, c) for t, y, c in pts if p["x0"] <= t <= p["x1"]]  # noqa: E731
        for key in ("node", "balancer"):
            pts = inside(series[key])
            for who in sorted({c for _, _, c in pts}):
                mine = [(t, y) for t, y, c in pts if c == who]
                ax.scatter([t for t, _ in mine], [y for _, y in mine], s=30, marker="|", color=colors[who], linewidths=1)
        bad = inside(series["failed"])
        ax.scatter([t for t, _, _ in bad], [0] * len(bad), s=18, marker="x", color="red", linewidths=1)
        ax.axvline(0, color="red", linestyle="--", linewidth=1.2)
        b = p["break"]
        ax.text(0, len(ticks) - 0.45, f" {LABELS.get(p['kind'], p['kind'])}: gap {b['gap_s']:.2f} s, "
                f"{b['failed_probes']} failed", color="red", fontsize=8, va="bottom")
        if "restore" in p:
            r = p["restore"]
            ax.axvline(r["t"] - t0, color="green", linestyle=":", linewidth=1.4)
            right = (r["t"] - p["x0"]) > 0.6 * (p["x1"] - p["x0"])  # keep the label inside the panel
            ax.text(r["t"] - t0, -0.95, f" {REPAIRS.get(p['kind'], 'repair')}: gap {r['gap_s']:.2f} s, "
                    f"{r['failed_probes']} failed ", color="green", fontsize=8, va="bottom",
                    ha="right" if right else "left")
        ax.set_yticks(range(len(ticks)), ticks, fontsize=8)
        ax.set_ylim(-1.1, len(ticks) + 0.1)
        ax.set_xlim(p["x0"] - t0, p["x1"] - t0)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the failure was caused (one probe every 0.1 s from inside the lab; "
                           "red x: no HTTP 200)", fontsize=9)
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
