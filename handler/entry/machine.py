"""What this process may use: CPUs and memory, as the container or Lambda limits them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
_NO_LIMIT = 1 << 60  # cgroup v1 reports "unlimited" as a huge number


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, which containers narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def worker_count(setting: str) -> int:
    """``serve --workers``: a number of processes, or ``auto`` for one per CPU."""
    if setting == "auto":
        return cpu_count()
    if setting.isdigit() and int(setting) > 0:
        return int(setting)
    raise ValueError(f"NEXT_IMAGE_WORKERS must be a number of processes or auto, got {setting!r}")


def memory_limit(environ: Mapping[str, str] | None = None) -> int:
    """Bytes this process may use: Lambda's setting, else the cgroup's limit, else physical RAM."""
    env = os.environ if environ is None else environ
    lambda_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    if lambda_mb.isdigit():
        return int(lambda_mb) << 20
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _NO_LIMIT:
            return int(text)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
