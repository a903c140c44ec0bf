"""What a node boots: the identity (sha256) of the image, kernel and initrd files a stack uploads.

A rebuilt image at the same path is another image: the base volume's name carries its identity, so a new
one is uploaded beside the old one and the nodes roll over to it one at a time (model/rollout.py).
Pure Python: no Pulumi import.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import grammar as g

CACHE = Path(os.environ.get("HACLUSTER_CACHE", Path.home() / ".cache" / "hacluster")) / "image-sums.json"


@dataclass(frozen=True)
class ImageSet:
    """sha256 (or, for what cannot be read here, the location itself) of each file; None: not used."""

    image: str
    kernel: str | None
    initrd: str | None

    def short(self, which: str) -> str | None:
        """12 characters of an identity, for libvirt volume names."""
        value = getattr(self, which)
        return None if value is None else hashlib.sha256(value.encode()).hexdigest()[:12] if ":" in value else value[:12]


def _manifest_sum(path: Path) -> str | None:
    """The sha256 `make image` recorded for this file in the manifest.json beside it, if its size matches."""
    try:
        files = json.loads((path.parent / "manifest.json").read_text())["files"]
        entry = files[path.name]
        if int(entry["bytes"]) == path.stat().st_size and g.SHA256.fullmatch(entry["sha256"]):
            return entry["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


# The image's virtual size as image/build.sh records it (HACLUSTER_IMAGE_SIZE, truncate's suffixes: powers
# of 1024), e.g. "4G".
VIRTUAL_SIZE = re.compile(r"([1-9][0-9]{0,14})([KMGT]?)")
_UNIT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def virtual_size(location: str | None) -> int | None:
    """Bytes of the disk the image gives a VM (its virtual size), from the manifest.json `make image` wrote
    beside it, if that manifest describes this very file (same name and byte count). None: not known here
    (a URL, an image of your own, or `make image` not run yet)."""
    if location is None or g.URL.fullmatch(location):
        return None
    path = Path(location)
    try:
        entry = json.loads((path.parent / "manifest.json").read_text())["files"][path.name]
        m = VIRTUAL_SIZE.fullmatch(entry["virtual_size"])
        if m is None or int(entry["bytes"]) != path.stat().st_size:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(m[1]) * _UNIT[m[2]]


def _cached_sum(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime, inode): a no-change `up` reads no image."""
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    try:
        cache = json.loads(CACHE.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache, dict) and isinstance(cache.get(key), str) and g.SHA256.fullmatch(cache[key]):
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    cache = {k: v for k, v in (cache.items() if isinstance(cache, dict) else ()) if not k.startswith(f"{path}|")}
    cache[key] = h.hexdigest()
    try:
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, sort_keys=True))
        os.replace(tmp, CACHE)
    except OSError:
        pass  # a cache only
    return h.hexdigest()


def identity(location: str | None) -> str | None:
    """sha256 of a local file, or the one a URL states (its #sha256= fragment); a file not built yet (a
    preview before `make image`) is identified by its location."""
    if location is None:
        return None
    if m := g.URL.fullmatch(location):
        return m["sha256"]
    path = Path(location)
    if not path.is_file():
        return f"path:{location}"
    return _manifest_sum(path) or _cached_sum(path)


def image_set(image: str, kernel: str | None, initrd: str | None) -> ImageSet:
    return ImageSet(identity(image) or "", identity(kernel), identity(initrd))
