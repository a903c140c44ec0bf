"""Clean cancel for the deploy-side programs (the verifier, day 2): a cancelled `pulumi up` must not leave a
drill half done (a VRRP cut, a paused VM, a lowered priority) nor the stack's SSH key in /tmp.

The command plugin stops a cancelled command by SIGTERM to its process group and SIGKILL after its kill
grace (toolchain/provider-command/run.go `killGrace`, 30 s). On SIGTERM, SIGINT or SIGHUP the first time,
`Canceller` raises `Cancelled` in the main thread, so every `finally` runs: the drill's restore, the key
directory's removal. Code that restores runs `shielded()`: a signal that arrives meanwhile does not cut it
short; the cancel takes effect when the shielded block ends. From the first signal on, everything has
BUDGET_S seconds (`bound()` caps each subprocess's time-out to what is left); later signals only say how
long is left. BUDGET_S is below the plugin's grace, with room for one SSH connect timeout (15 s) to spare.

Key files live in a private directory (`private_key`): mode 0700, named after the process, removed in a
finally (and so on a signal). One left behind by a process that was SIGKILLed is removed by the next run
(`sweep_stale`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

BUDGET_S = 20.0  # restore time after the first signal; < killGrace (30 s) of toolchain/provider-command/run.go
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
MIN_STEP_S = 1.0  # the shortest time-out bound() hands out: a repair gets at least one try


class Cancelled(BaseException):
    """The run was cancelled by a signal (a BaseException: `except Exception` handlers let it pass)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"cancelled by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Canceller:
    def __init__(self, log: Callable[[str], None] = _stderr, budget: float = BUDGET_S,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.budget, self.clock = log, budget, clock
        self.reset()

    def reset(self) -> None:
        self.signum: int | None = None
        self.deadline: float | None = None
        self._shield = 0

    @contextlib.contextmanager
    def installed(self, log: Callable[[str], None] | None = None) -> Iterator[Canceller]:
        """Handle SIGTERM, SIGINT and SIGHUP inside the block (main thread only), from a fresh state; the
        previous handlers are back afterwards."""
        self.reset()
        if log is not None:
            self.log = log
        previous = {s: signal.signal(s, self.handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    @property
    def cancelled(self) -> bool:
        return self.signum is not None

    def handle(self, signum: int, _frame=None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            self.log(f"{name} again: still restoring, {self.remaining():.0f} s left")
            return
        self.signum, self.deadline = signum, self.clock() + self.budget
        self.log(f"{name}: cancelling; restoring what was changed (at most {self.budget:g} s), then exiting")
        if self._shield == 0:
            raise Cancelled(signum)

    def remaining(self) -> float:
        """Seconds left of the budget (infinite before any signal)."""
        return float("inf") if self.deadline is None else max(0.0, self.deadline - self.clock())

    def bound(self, timeout: float) -> float:
        """`timeout` capped to what is left of the budget once cancelled (at least MIN_STEP_S)."""
        return timeout if self.deadline is None else max(MIN_STEP_S, min(timeout, self.remaining()))

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """A block that a signal does not interrupt (a restore); a cancel that came meanwhile is raised
        at its end, unless an exception is already on its way out."""
        self._shield += 1
        ok = False
        try:
            yield
            ok = True
        finally:
            self._shield -= 1
        if ok and self._shield == 0 and self.signum is not None:
            raise Cancelled(self.signum)


CANCEL = Canceller()


# ---- key files -------------------------------------------------------------------------------------
KEY_DIR = re.compile(r"^(hacluster-(?:day2|verify))-(\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(prefix: str, tmp: str | None = None, log: Callable[[str], None] = _stderr) -> list[str]:
    """Remove key directories `<prefix>-<pid>-*` of ours whose process is gone (it was SIGKILLed)."""
    root = Path(tmp or tempfile.gettempdir())
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for d in entries[:10000]:
        m = KEY_DIR.match(d.name)
        if not m or m.group(1) != prefix or _alive(int(m.group(2))):
            continue
        try:
            st = d.lstat()
        except OSError:
            continue
        if not d.is_dir() or d.is_symlink() or st.st_uid != os.geteuid():
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    if removed:
        log(f"removed {len(removed)} key director{'y' if len(removed) == 1 else 'ies'} left by a killed run: "
            f"{', '.join(removed)}")
    return removed


@contextlib.contextmanager
def private_key(text: str, prefix: str) -> Iterator[str]:
    """`text` (a private key) in a file 0600 inside a fresh directory 0700 named `<prefix>-<pid>-*`; the
    directory is removed when the block ends, however it ends."""
    d = tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-")  # mode 0700
    try:
        path = os.path.join(d, "id")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text.rstrip("\n") + "\n")
        yield path
    finally:
        shutil.rmtree(d, ignore_errors=True)
