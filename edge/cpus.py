"""How many CPUs this process may use: its affinity (taskset, systemd CPUAffinity=, Docker
--cpuset-cpus), further capped by a CFS quota (Docker --cpus, systemd CPUQuota=), which
leaves the affinity untouched. Sizes the detector's thread pool: threads beyond the quota
only queue for it, and are throttled together."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus() -> int:
    """CPUs this process may run on, at least 1."""
    if hasattr(os, "sched_getaffinity"):  # Linux
        allowed = len(os.sched_getaffinity(0))
    else:
        allowed = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(allowed, math.ceil(quota))) if quota is not None else allowed


def cgroup_cpu_quota(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT
) -> float | None:
    """The tightest CFS quota, in CPUs, on this process's cgroup or any cgroup above it
    (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us); None when there is
    none or it cannot be read (not Linux, no cgroup filesystem)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2
            quotas += _quotas_along(root, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            for mount in (root / "cpu", root / "cpu,cpuacct", root / controllers):
                if mount.is_dir():
                    quotas += _quotas_along(mount, path, _v1_quota)
                    break
    return min(quotas, default=None)


def _quotas_along(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """Quotas found on `path` and each of its ancestors under `mount`."""
    found = []
    directory = mount / path.strip("/")
    while True:
        quota = read(directory)
        if quota is not None:
            found.append(quota)
        if directory == mount:
            return found
        directory = directory.parent


def _v2_quota(directory: Path) -> float | None:
    try:
        limit, period = (directory / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) / int(period)


def _v1_quota(directory: Path) -> float | None:
    try:
        limit = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if limit <= 0 or period <= 0 else limit / period
