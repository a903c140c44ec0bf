"""No traceback when the engine ends the program early.

When a resource fails, the Pulumi engine winds the deployment down and, closing the language host,
interrupts the program's process (SIGINT). Python would answer with a KeyboardInterrupt traceback
from whatever gRPC call was in flight (often a log call to the engine that is already gone),
printed after the real, already reported error. The program leaves quietly instead, with the
exit code that tells the language host the error was already shown.
"""

from __future__ import annotations

import os
import signal
import sys

ALREADY_REPORTED = 32  # pulumi-language-python-exec's "error already shown to the user"


def leave_quietly(_signum=None, _frame=None) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(ALREADY_REPORTED)


def install() -> None:
    """Call once from the program (main thread), before any resource is registered."""
    signal.signal(signal.SIGINT, leave_quietly)
