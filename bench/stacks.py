"""Bench stacks through the Automation API (as tests/e2e does): timed up / preview / destroy, and a
cleanup that destroys and removes the stack whatever happened, then checks libvirt holds nothing of it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

from .lab import URI, libvirt_objects, progress

DOMAIN_TYPE = "libvirt:index/domain:Domain"
COMMAND_TYPE = "command:local:Command"


def phases(events: list[tuple[float, str, str, str]]) -> dict[str, float]:
    """From (seconds since the operation started, 'pre'|'out', resource type, urn) engine events:
    vms_s: when the last VM was created; configs_s: when the last node's config command (day 2, which
    waits for the VM's SSH, i.e. boot and cloud-init) was done; verify_s: how long the verifier ran."""
    out: dict[str, float] = {}
    vm_done = [t for t, kind, typ, _ in events if kind == "out" and typ == DOMAIN_TYPE]
    if vm_done:
        out["vms_s"] = round(max(vm_done), 1)
    cfg_done = [t for t, kind, typ, urn in events if kind == "out" and typ == COMMAND_TYPE and urn.endswith("-config")]
    if cfg_done:
        out["configs_s"] = round(max(cfg_done), 1)
    verify = [urn for t, kind, typ, urn in events if typ == COMMAND_TYPE and urn.endswith("-verify")]
    pre = {urn: t for t, kind, typ, urn in events if kind == "pre" and urn in verify}
    done = {urn: t for t, kind, typ, urn in events if kind == "out" and urn in verify}
    runs = [done[u] - pre[u] for u in pre if u in done]
    if runs:
        out["verify_s"] = round(max(runs), 1)
        out["verify_started_s"] = round(min(pre[u] for u in pre if u in done), 1)
    return out


class BenchStack:
    """One stack in the project directory (its Pulumi.<name>.yaml written here, removed by cleanup), on the
    libvirtd of each of `uris` (its hypervisors)."""

    def __init__(self, root: Path, name: str, log_file: Path, uris: tuple[str, ...] = (URI,)):
        self.root, self.name, self.log_file, self.uris = root, name, log_file, uris
        self.stack: auto.Stack | None = None
        self.config_file = root / f"Pulumi.{name}.yaml"

    def _log(self) -> Callable[[str], None]:
        fh = self.log_file.open("a")

        def write(line: str) -> None:
            fh.write(line if line.endswith("\n") else line + "\n")
            fh.flush()
        return write

    def configure(self, config: dict[str, Any]) -> None:
        """Write the stack's config (keeping the secrets salt `pulumi stack init` put there); create it once."""
        doc: dict[str, Any] = {"config": config}
        if self.config_file.exists():
            salt = (yaml.safe_load(self.config_file.read_text()) or {}).get("encryptionsalt")
            if salt:
                doc["encryptionsalt"] = salt
        self.config_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        if self.stack is None:
            self.stack = auto.create_stack(self.name, work_dir=str(self.root))

    def _timed(self, what: str, fn: Callable[..., Any], lines: list[str] | None = None
               ) -> tuple[float, Any, dict[str, float]]:
        events: list[tuple[float, str, str, str]] = []
        t0 = time.monotonic()

        def on_event(e: auto.EngineEvent) -> None:
            for kind, ev in (("pre", e.resource_pre_event), ("out", e.res_outputs_event)):
                if ev is not None and ev.metadata is not None:
                    events.append((time.monotonic() - t0, kind, ev.metadata.type, ev.metadata.urn))

        log = self._log()
        log(f"==== {what} {self.name} ({time.strftime('%H:%M:%S')})")
        progress(f"{what} {self.name} ...")
        keep = log if lines is None else (lambda ln: (log(ln), lines.append(ln)))
        result = fn(on_output=keep, on_event=on_event, color="never")
        seconds = round(time.monotonic() - t0, 2)
        progress(f"{what} {self.name}: {seconds:.1f} s")
        return seconds, result, phases(events)

    def up(self, lines: list[str] | None = None) -> tuple[float, auto.UpResult, dict[str, float]]:
        """Timed `pulumi up`; its output lines appended to `lines` too, when given."""
        assert self.stack is not None
        return self._timed("up", self.stack.up, lines)

    def preview(self) -> float:
        assert self.stack is not None
        return self._timed("preview", self.stack.preview)[0]

    def destroy(self) -> float:
        assert self.stack is not None
        return self._timed("destroy", self.stack.destroy)[0]

    def cleanup(self) -> list[str]:
        """Destroy (again: idempotent), remove the stack and its config file; what libvirt still holds."""
        problems: list[str] = []
        if self.stack is not None:
            try:
                self.stack.destroy(on_output=self._log(), color="never")
            except auto.CommandError as e:
                problems.append(f"destroy {self.name}: {str(e).strip().splitlines()[-1:]}")
            try:
                self.stack.workspace.remove_stack(self.name)
            except auto.CommandError as e:
                problems.append(f"remove stack {self.name}: {str(e).strip().splitlines()[-1:]}")
            self.stack = None
        self.config_file.unlink(missing_ok=True)
        left = libvirt_objects(self.name, self.uris)
        if left:
            problems.append(f"libvirt still holds {', '.join(left)}")
        return problems
