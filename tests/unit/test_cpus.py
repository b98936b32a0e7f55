"""The CPUs edgeblur sizes its detector's threads to: the affinity, capped by a CFS quota
(Docker --cpus, systemd CPUQuota=). The quota is tested on a real cgroup where this machine
lets root make one; cgroup v2's file format, which this machine (v1) cannot show for real, on
a copy of its layout."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.cpus import CGROUP_ROOT, cgroup_cpu_quota, usable_cpus

# Joins the cgroup named in argv[1], then prints what edgeblur would size its threads to.
JOIN_AND_COUNT = (
    "import sys, pathlib; pathlib.Path(sys.argv[1], 'cgroup.procs').write_text('0');"
    "from edge.cpus import usable_cpus; print(usable_cpus())"
)


@pytest.fixture
def one_cpu_cgroup() -> Iterator[Path]:
    """A real cgroup (v1 cpu controller, or v2 with cpu enabled) limited to one CPU."""
    if usable_cpus() < 2:
        pytest.skip("needs two usable CPUs to see a quota of one")
    name = f"edgeblur-test-{uuid.uuid4().hex[:8]}"
    v1 = CGROUP_ROOT / "cpu"
    v2_controllers = CGROUP_ROOT / "cgroup.subtree_control"
    if (v1 / "cpu.cfs_quota_us").is_file():
        group, limits = v1 / name, {"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000"}
    elif v2_controllers.is_file() and "cpu" in v2_controllers.read_text().split():
        group, limits = CGROUP_ROOT / name, {"cpu.max": "100000 100000"}
    else:
        pytest.skip("no cgroup cpu controller to limit")
    try:
        group.mkdir()
    except OSError as error:
        pytest.skip(f"cannot make a cgroup here: {error}")
    try:
        for file, value in limits.items():
            (group / file).write_text(value)
        yield group
    finally:
        group.rmdir()  # empty again: the child has exited


def test_a_cpu_quota_caps_the_count(one_cpu_cgroup: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", JOIN_AND_COUNT, str(one_cpu_cgroup)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert child.stdout.strip() == "1"


def write_v2_layout(root: Path, limits: dict[str, str]) -> Path:
    """A cgroup v2 tree under `root` with cpu.max per directory; returns a /proc/self/cgroup."""
    for directory, limit in limits.items():
        (root / directory).mkdir(parents=True, exist_ok=True)
        (root / directory / "cpu.max").write_text(limit)
    proc = root / "proc-self-cgroup"
    proc.write_text("0::/system.slice/edgeblur.service\n")
    return proc


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"": "max 100000", "system.slice/edgeblur.service": "150000 100000"}, 1.5),
        ({"system.slice": "50000 100000", "system.slice/edgeblur.service": "max 100000"}, 0.5),
        ({"system.slice/edgeblur.service": "max 100000"}, None),
    ],
)
def test_v2_quota_is_the_tightest_on_the_way_up(
    tmp_path: Path, limits: dict[str, str], expected: float | None
) -> None:
    proc = write_v2_layout(tmp_path, limits)
    assert cgroup_cpu_quota(proc, tmp_path) == expected


def test_no_cgroup_information_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "absent", tmp_path) is None
