"""Which passphrase encrypts a stack's secrets: the built-in one protects nothing (it is in this file), so
it is only for a lab stack (labNetns set) on the local file backend; any other stack needs the user's.

    python -m model.passphrase STACK -- pulumi up ...   # run a command with the passphrase settled
    python -m model.passphrase --lab -- pytest ...      # a command whose stacks are all lab stacks

The Makefile runs every pulumi command through this; __main__.py refuses the built-in one again inside the
program (for a pulumi run outside make), before any resource.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

BUILTIN = "hacluster-dev"
HOW = ("set your own: export PULUMI_CONFIG_PASSPHRASE=... (or PULUMI_CONFIG_PASSPHRASE_FILE=FILE), or give the "
       "stack a secrets provider: pulumi stack init --secrets-provider ...")
ROOT = Path(__file__).resolve().parent.parent


class PassphraseError(ValueError):
    """One line: why no passphrase may be chosen, and how to set one."""


def backend_url(env: Mapping[str, str]) -> str:
    """The backend the CLI uses: PULUMI_BACKEND_URL, else the one `pulumi login` recorded; '' unknown."""
    if env.get("PULUMI_BACKEND_URL"):
        return env["PULUMI_BACKEND_URL"]
    home = Path(env.get("PULUMI_HOME") or Path.home() / ".pulumi")
    try:
        current = json.loads((home / "credentials.json").read_text()).get("current")
    except (OSError, ValueError, AttributeError):
        return ""
    return current if isinstance(current, str) else ""


def builtin_allowed(lab_netns: str | None, backend: str) -> bool:
    """The built-in passphrase may encrypt a stack's secrets: a lab stack on the local file backend."""
    return bool(lab_netns) and backend.startswith("file://")


def _where(lab_netns: str | None, backend: str) -> str:
    """What the stack is, in a few words (the backend by its scheme only: a URL may hold a password)."""
    if not lab_netns:
        return "a stack with labNetns '' (a hypervisor of your own)"
    return f"the {backend.split('://', 1)[0]}:// backend" if "://" in backend else "an unknown backend"


def refusal(lab_netns: str | None, backend: str, env: Mapping[str, str]) -> str | None:
    """Inside the program: why the environment's passphrase must not encrypt this stack, or None."""
    if env.get("PULUMI_CONFIG_PASSPHRASE") != BUILTIN or builtin_allowed(lab_netns, backend):
        return None
    return (f"the built-in passphrase {BUILTIN!r} is for lab stacks on the local file backend (file://), not for "
            f"{_where(lab_netns, backend)}: {HOW}")


def choose(lab_netns: str | None, backend: str, env: Mapping[str, str], secrets_provider: str | None = None
           ) -> dict[str, str]:
    """What to add to pulumi's environment: nothing when the user set a passphrase (or a passphrase file) or
    the stack has a secrets provider of its own, the built-in passphrase where it is allowed; else
    PassphraseError."""
    user = env.get("PULUMI_CONFIG_PASSPHRASE") or None
    if user is None and (env.get("PULUMI_CONFIG_PASSPHRASE_FILE") or secrets_provider not in (None, "passphrase")):
        return {}
    if user is not None and user != BUILTIN:
        return {}
    if builtin_allowed(lab_netns, backend):
        return {"PULUMI_CONFIG_PASSPHRASE": BUILTIN}
    if user is None:
        raise PassphraseError(f"no secrets passphrase for {_where(lab_netns, backend)} (the built-in one is for "
                              f"lab stacks on the local file backend only): {HOW}")
    raise PassphraseError(refusal(lab_netns, backend, env) or "")


def stack_facts(stack: str, root: Path = ROOT) -> tuple[str | None, str | None]:
    """(labNetns, secretsprovider) of Pulumi.<stack>.yaml; a missing file or key: the defaults."""
    import yaml

    from . import grammar as g
    from .config import StackConfig

    if not g.STACK.fullmatch(stack):
        raise PassphraseError(f"stack {stack!r}: letters, digits, '_', '.' or '-', at most 100")
    default = StackConfig.model_fields["lab_netns"].default
    try:
        doc = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text()) or {}
    except FileNotFoundError:
        return default, None
    except (OSError, yaml.YAMLError) as e:
        raise PassphraseError(f"Pulumi.{stack}.yaml: {e}") from None
    config = (doc.get("config") or {}) if isinstance(doc, dict) else {}
    lab = config.get("hacluster:labNetns", default) if isinstance(config, dict) else default
    provider = doc.get("secretsprovider") if isinstance(doc, dict) else None
    return (lab if isinstance(lab, str) else None), (provider if isinstance(provider, str) else None)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--is-lab":  # the Makefile: start the lab only for a lab stack
        try:
            return 0 if stack_facts(argv[1])[0] else 1
        except PassphraseError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if "--" not in argv or argv.index("--") != 1 or len(argv) < 3:
        print("usage: python -m model.passphrase STACK|--lab -- COMMAND...  |  --is-lab STACK", file=sys.stderr)
        return 2
    target, command = argv[0], argv[2:]
    try:
        # --lab: every stack the command runs is a lab stack (the e2e tests, the bench)
        lab, provider = ("lab", None) if target == "--lab" else stack_facts(target)
        extra = choose(lab, backend_url(os.environ), os.environ, provider)
    except PassphraseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        os.execvpe(command[0], command, {**os.environ, **extra})
    except OSError as e:
        print(f"error: {command[0]}: {e.strerror}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
