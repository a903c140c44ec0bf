import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def ssh_key(comment: str = "test", kind: str = "ssh-ed25519", fill: int = 7) -> str:
    """A well-formed OpenSSH public key line (its body decodes and embeds its type)."""
    import base64
    import struct
    blob = struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", 32) + bytes([fill]) * 32
    return f"{kind} {base64.b64encode(blob).decode()}" + (f" {comment}" if comment else "")


# A fake private host key (grammar-valid, no key inside): what the secret user-data carries in tests.
FAKE_HOST_PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nFAKEHOSTPRIVATEKEY\n-----END OPENSSH PRIVATE KEY-----\n"


def host_key(fill: int = 3) -> tuple[str, str]:
    """(private, public) of a node's host key as render.user_data takes it: the fake private one above and a
    well-formed ed25519 public one."""
    return FAKE_HOST_PRIVATE, ssh_key("", fill=fill)


def known_hosts(ips: dict[str, str]):
    """A real per-run known_hosts (verifier/hostkeys.py) pinning a well-formed key per node, removed at exit."""
    import atexit

    from verifier.hostkeys import KnownHosts

    kh = KnownHosts({n: ssh_key("", fill=i + 1) for i, n in enumerate(sorted(ips))}, ips)
    atexit.register(kh.close)
    return kh
