"""Waits that follow a booting node's progress instead of a fixed deadline.

A wait goes on while the node makes progress: its boot stage changes (kernel, systemd, each
cloud-init stage, read from the serial console and, once SSH answers, from
/run/cloud-init/status.json) or its serial console grows. It gives up when nothing moved for
`stall` seconds (or, as a last resort, after `limit` seconds in all), with ONE line naming the
node, the stage it is stuck in, the last console lines and what to do.

Everything here but `read_console` is pure (time and observations come in as arguments), so the
decisions are unit-tested without VMs (tests/unit/test_progress.py).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

BOOT_BANNER = "Linux version "  # the kernel's first console line: where the latest boot starts
CONSOLE_TAIL_BYTES = 64 * 1024

# cloud-init 22.4's names: status.json says "modules-config", the console says 'modules:config'.
STAGES = {"init-local": "init-local", "init": "init", "init-network": "init",
          "modules-init": "init", "modules-config": "modules:config", "modules-final": "modules:final",
          "modules:config": "modules:config", "modules:final": "modules:final"}
ORDER = ["init-local", "init", "modules-config", "modules-final"]

DONE = "cloud-init done"
_RUNNING = re.compile(r"Cloud-init v\. \S+ running '([^']+)'")
_FINISHED = re.compile(r"Cloud-init v\. \S+ finished at")
# The golden image's hacluster-ready.service: the node's services run (every boot; cloud-init only runs
# on the first one there).
_READY = re.compile(r"hacluster-ready: \S+ up")
_SYSTEMD = re.compile(r"Welcome to |systemd\[1\]|\[  OK  \]|\[\s*\S*\s*\] (Started|Starting|Reached) ")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0b-\x1f\x7f]")


def clean_line(line: str, width: int = 120) -> str:
    """A console line without escape sequences and control characters, at most `width` long."""
    line = _ANSI.sub("", line).strip()
    return line if len(line) <= width else line[: width - 3] + "..."


def since_boot(text: str) -> str:
    """The part of a console log that belongs to the latest boot (libvirt appends across boots)."""
    i = text.rfind(BOOT_BANNER)
    if i < 0:
        return text
    return text[text.rfind("\n", 0, i) + 1:]


def console_stage(text: str) -> str | None:
    """The boot phase the console shows last: 'kernel', 'systemd', 'cloud-init <stage>',
    'cloud-init done', or None when the latest boot printed nothing yet."""
    text = since_boot(text)
    if not text.strip():
        return None
    stage = "kernel"
    for line in text.splitlines():
        if m := _RUNNING.search(line):
            stage = f"cloud-init {STAGES.get(m.group(1), m.group(1))}"
        elif _FINISHED.search(line) or _READY.search(line):
            stage = DONE
        elif stage == "kernel" and _SYSTEMD.search(line):
            stage = "systemd"
    return stage


def status_stage(status_json: str | None, result_json: str | None) -> tuple[str, list[str]]:
    """The cloud-init stage from /run/cloud-init/status.json and result.json (either may be missing
    or empty): ('cloud-init modules:final', []), ('cloud-init done', [errors...]), ...

    result.json appears when the last stage (modules:final, with runcmd) has finished."""
    if result_json and result_json.strip():
        try:
            errors = json.loads(result_json).get("v1", {}).get("errors") or []
        except (ValueError, AttributeError):
            errors = []
        return DONE, [str(e) for e in errors]
    try:
        v1 = json.loads(status_json or "").get("v1", {})
    except (ValueError, AttributeError):
        return "cloud-init not started", []
    stage = v1.get("stage")
    if stage:
        return f"cloud-init {STAGES.get(stage, stage)}", []
    finished = [s for s in ORDER if isinstance(v1.get(s), dict) and v1[s].get("finished")]
    if finished:
        return f"cloud-init between stages (after {STAGES[finished[-1]]})", []
    return "cloud-init not started", []


# Boot stages in the order a boot goes through them (what a wait may report, best knowledge first).
CONSOLE_DONE = "cloud-init done (ssh not answering yet)"
RANKS = ["booting", "kernel", "systemd", "cloud-init not started", "cloud-init init-local", "cloud-init init",
         "cloud-init modules:config", "cloud-init modules:final", CONSOLE_DONE, DONE]
_BETWEEN = re.compile(r"cloud-init between stages \(after (.+)\)")


def rank(stage: str | None) -> float:
    """Position of a stage in RANKS (between-stages ranks half a step after the stage it follows)."""
    if not stage:
        return -1
    if m := _BETWEEN.fullmatch(stage):
        return rank(f"cloud-init {m.group(1)}") + 0.5
    return RANKS.index(stage) if stage in RANKS else 0


def best_stage(*seen: str | None) -> str:
    """The furthest of the stages seen (console, SSH, the previous best). Only SSH (status.json and
    result.json read over it) can say DONE: the console's "finished" line alone is CONSOLE_DONE,
    since the wait's next step needs SSH anyway. Ties go to the earlier argument."""
    cands = [CONSOLE_DONE if i == 0 and s == DONE else s for i, s in enumerate(seen) if s]
    return max(cands, key=rank) if cands else "booting"


def tail_lines(text: str, n: int = 3) -> list[str]:
    """The last `n` non-empty console lines of the latest boot, cleaned."""
    lines = [clean_line(x) for x in since_boot(text).splitlines()]
    return [x for x in lines if x][-n:]


def read_console(path: str | None) -> tuple[int | None, str]:
    """(size in bytes, the last CONSOLE_TAIL_BYTES as text) of a console log; (None, '') when there is
    none to read (no path, not readable: e.g. the hypervisor is another machine)."""
    if not path:
        return None, ""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - CONSOLE_TAIL_BYTES))
            return size, f.read().decode("utf-8", "replace")
    except OSError:
        return None, ""


@dataclass
class Verdict:
    status: str  # "wait", "done" or "stuck"
    line: str | None = None  # what to print now (progress note, or the one failure line)


@dataclass
class Follower:
    """Decides, observation by observation, whether a node's wait goes on.

    `observe(t, stage, console_size)` takes the time (seconds, any monotonic origin), the stage seen
    now (any string; `done` ends the wait) and the console size in bytes (None: no console to read).
    Progress is a changed stage or a grown console. A note is printed at each stage change and every
    `note_every` seconds; `stuck` comes when nothing moved for `stall` seconds, or `limit` seconds
    passed in all (None: no overall limit)."""

    node: str
    stall: float
    limit: float | None = None
    note_every: float = 30.0
    done: str = DONE
    hint: str = ""  # appended to the failure line: what to do
    t0: float | None = None
    last_progress: float = 0.0
    last_note: float = 0.0
    stage: str | None = None
    console_size: int | None = None
    history: list[tuple[float, str]] = field(default_factory=list)  # (elapsed, stage) per change

    def elapsed(self, t: float) -> float:
        return 0.0 if self.t0 is None else t - self.t0

    def observe(self, t: float, stage: str, console_size: int | None = None, tail: list[str] | None = None) -> Verdict:
        first = self.t0 is None
        if first:
            self.t0 = self.last_progress = self.last_note = t
        changed = first or stage != self.stage
        grew = (console_size is not None and self.console_size is not None and console_size > self.console_size)
        if console_size is not None and (self.console_size is None or console_size > self.console_size):
            self.console_size = console_size
        if changed or grew:
            self.last_progress = t
        elapsed = self.elapsed(t)
        if changed:
            self.stage = stage
            self.history.append((round(elapsed, 1), stage))
        if stage == self.done:
            return Verdict("done", f"{self.node}: {stage} ({elapsed:.0f} s)")
        quiet = t - self.last_progress
        if quiet >= self.stall or (self.limit is not None and elapsed >= self.limit):
            return Verdict("stuck", self.stuck_line(t, tail or []))
        if changed:
            self.last_note = t
            return Verdict("wait", f"{self.node}: {stage} ({elapsed:.0f} s)")
        if t - self.last_note >= self.note_every:
            self.last_note = t
            extra = f", {quiet:.0f} s without progress" if quiet >= self.note_every else ""
            return Verdict("wait", f"{self.node}: {stage} ({elapsed:.0f} s{extra})")
        return Verdict("wait")

    def stuck_line(self, t: float, tail: list[str]) -> str:
        elapsed = self.elapsed(t)
        quiet = t - self.last_progress
        why = (f"no progress for {quiet:.0f} s" if quiet >= self.stall else f"still not done after {elapsed:.0f} s")
        console = "; last console lines: " + " | ".join(tail) if tail else "; no console output to show"
        hint = f"; {self.hint}" if self.hint else ""
        return f"{self.node}: stuck in {self.stage} ({why}, {elapsed:.0f} s since the wait began){console}{hint}"
