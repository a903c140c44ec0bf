"""Pinned SSH host keys: every SSH client of the project (the verifier, day 2 and its gates) checks the node
against the host key the stack made for it (components/secrets.py), never trusts on first use.

The public keys come in env HACLUSTER_HOST_KEYS, a JSON object {node name: 'ssh-ed25519 <body>'} (not a
secret, but passed beside the SSH key the same way). `KnownHosts` writes them, one line per node keyed by
its IP (ssh gets `HostKeyAlias=<ip>`, so the entry holds however the node is reached), into a known_hosts
file of mode 0600 in a private temporary directory, removed when the run ends. A node that presents
another key is refused in one line naming the node and both fingerprints (`refusal`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from model import grammar

ENV = "HACLUSTER_HOST_KEYS"
# ssh's words when the key it got is not the pinned one (StrictHostKeyChecking=yes), and its fingerprint.
CHANGED = "REMOTE HOST IDENTIFICATION HAS CHANGED"
FAILED = "Host key verification failed"
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


class HostKeyError(RuntimeError):
    """The host keys are missing or malformed, or a node presented another one (one line)."""


def parse(text: str, names: list[str]) -> dict[str, str]:
    """env HACLUSTER_HOST_KEYS -> {node: 'ssh-ed25519 <body>'}, with a key for every name in `names`."""
    try:
        raw = json.loads(text or "{}")
    except ValueError:
        raise HostKeyError(f"env {ENV} is not JSON") from None
    if not isinstance(raw, dict):
        raise HostKeyError(f"env {ENV} must be a JSON object {{node: public host key}}")
    keys = {}
    for name in names:
        if not isinstance(raw.get(name), str):
            raise HostKeyError(f"env {ENV} has no host key for {name}: refusing to connect to it unpinned")
        try:
            keys[name] = grammar.host_public_key(raw[name].strip())
        except ValueError as e:
            raise HostKeyError(f"env {ENV}: the host key of {name}: {e}") from None
    return keys


def fingerprint(public_key: str) -> str:
    """SHA256:... of a public key line, by `ssh-keygen -lf -`."""
    r = subprocess.run(["ssh-keygen", "-lf", "-"], input=public_key + "\n", capture_output=True, text=True,
                       timeout=30)
    m = FINGERPRINT.search(r.stdout)
    if r.returncode != 0 or not m:
        raise HostKeyError(f"ssh-keygen -lf cannot read the host key {public_key[:40]}...: "
                           f"{r.stderr.strip() or r.returncode}")
    return m[0]


class KnownHosts:
    """A per-run known_hosts file of the nodes' pinned keys. Use as a context manager, or close()."""

    def __init__(self, keys: dict[str, str], ips: dict[str, str], directory: str | None = None):
        """`directory`: an existing private directory (the run's key dir of verifier.cancel.private_key, so a
        cancel or a stale-run sweep removes the file with the key); else a fresh 0700 one of its own."""
        self.keys, self.ips = keys, ips
        lines = "".join(f"{grammar.ipv4(ips[n])} {grammar.host_public_key(k)}\n" for n, k in sorted(keys.items()))
        self.own = directory is None
        self.dir = tempfile.mkdtemp(prefix="hacluster-known-hosts-") if directory is None else directory  # 0700
        self.path = str(Path(self.dir) / "known_hosts")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(lines)

    def __enter__(self) -> KnownHosts:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        if self.own:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            Path(self.path).unlink(missing_ok=True)

    def refusal(self, name: str, stderr: str) -> str | None:
        """The one line refusing node `name`, when ssh's `stderr` says its host key is not the pinned one."""
        return refusal(name, self.ips.get(name, "?"), self.keys.get(name), stderr)


def refusal(name: str, ip: str, expected: str | None, stderr: str) -> str | None:
    """One line naming the node and both fingerprints (expected: from the stack; got: from ssh's error),
    or None when `stderr` is no host key refusal."""
    if FAILED not in (stderr or "") and CHANGED not in (stderr or ""):
        return None
    want = fingerprint(expected) if expected else "none (no key in the stack)"
    got = FINGERPRINT.search(stderr or "")
    sent = got[0] if got else "no ed25519 host key"
    return (f"{name} ({ip}) presents SSH host key {sent}, the stack expects {want}: refused (a node rebuilt "
            "outside this stack, or another machine on its address; if the node was rebuilt on purpose, "
            "replace it through `pulumi up` so it gets its key back)")
