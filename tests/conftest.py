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
