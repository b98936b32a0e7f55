"""Fixtures shared by every test area. Test data comes from installed packages or is made here;
../shared is read only by tests marked `shared`, which skip where it is absent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SHARED.is_dir():
        return
    skip = pytest.mark.skip(reason=f"{SHARED} is absent")
    for item in items:
        if "shared" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent")
    return SHARED


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """scikit-image's astronaut (512x512, one frontal face around x 170-250, y 60-160)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="session")
def grace_hopper_bgr() -> np.ndarray:
    """matplotlib's grace_hopper.jpg (512x600, one frontal face)."""
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


@pytest.fixture(scope="session")
def model_store():
    """The user's model cache, as `make install` filled it (models fetch is idempotent)."""
    from edge.models import ModelStore

    return ModelStore()


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 512 KiB tmpfs. Needs root (CAP_SYS_ADMIN); elsewhere the tests using it skip
    (tests/unit/test_sinks.py also covers the recorder with simulated ENOSPC)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
