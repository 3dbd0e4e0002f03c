"""Store records derived from their keys, so any record read back can be checked, and a store
folder as ``du`` sees it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from handler.model import Pointer, Variant


def keyed_variant(key: str) -> Variant:
    """Bytes derived from the key (512 B to 33 KB), so any record read back can be checked."""
    digest = hashlib.sha256(key.encode()).digest()
    return Variant(digest * (16 + digest[0] * 4), "image/webp", digest.hex()[:16], "optimized")


def keyed_pointer(key: str) -> Pointer:
    digest = hashlib.sha256(key.encode()).digest()
    return Pointer(digest.hex(), key[:20], f'W/"{key[:8]}"', digest[1], float(digest[2]))


def source_variant_key(n: int) -> str:
    """A real-shaped variant key: four widths under each source's folder."""
    source = hashlib.sha256(f"source-{n // 4}".encode()).hexdigest()
    return f"{source}/{640 + n % 4}w-75q-webp-p1"


def url_pointer_key(n: int) -> str:
    return hashlib.sha256(f"https://example.com/{n}.png".encode()).hexdigest()


def entries(root: Path) -> Iterable[os.stat_result]:
    """``lstat`` of ``root`` and of everything under it, as ``du`` visits them."""
    yield os.lstat(root)
    for folder, subfolders, names in os.walk(root):
        for name in subfolders + names:
            yield os.lstat(os.path.join(folder, name))


def du_apparent(root: Path) -> int:
    """What ``du -sb`` reports (GNU only, so summed here): every entry's size."""
    return sum(stat.st_size for stat in entries(root))


def du_allocated(root: Path) -> int:
    """What ``du -sk`` reports, in bytes: every entry's allocated blocks."""
    out = subprocess.run(["du", "-sk", root], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0]) * 1024


def on_disk(root: Path) -> int:
    """Every entry at what the store must charge for it: the larger of ``du -b`` and ``du``."""
    block = os.statvfs(root).f_frsize
    return sum(max(-(-s.st_size // block) * block, s.st_blocks * 512) for s in entries(root))


def empty_folders(root: Path) -> list[Path]:
    return [Path(f) for f, subs, names in os.walk(root) if not subs and not names]


def temporaries(root: Path) -> list[str]:
    return [name for _, _, names in os.walk(root) for name in names if name.endswith(".tmp")]
