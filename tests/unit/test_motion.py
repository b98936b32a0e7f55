"""MotionMasker: moving regions get boxes in source pixels, a static scene gets none."""

from __future__ import annotations

import numpy as np
import pytest

from edge.config import MotionConfig
from edge.motion import MotionMasker


def background(height: int, width: int) -> np.ndarray:
    """A fixed textured BGR scene (seeded, so every test sees the same one)."""
    rng = np.random.default_rng(3)
    coarse = rng.integers(40, 200, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(coarse, np.ones((16, 16, 1), np.uint8))[:height, :width])


def with_square(scene: np.ndarray, x: int, y: int, size: int) -> np.ndarray:
    image = scene.copy()
    image[y : y + size, x : x + size] = (250, 250, 250)
    return image


def contains(boxes: np.ndarray, truth: tuple[int, int, int, int]) -> bool:
    x1, y1, x2, y2 = truth
    return bool(
        np.any(
            (boxes[:, 0] <= x1) & (boxes[:, 1] <= y1) & (boxes[:, 2] >= x2) & (boxes[:, 3] >= y2)
        )
    )


def warmed_up(masker: MotionMasker, scene: np.ndarray, frames: int = 30) -> None:
    for _ in range(frames):
        masker.boxes(scene)


@pytest.mark.parametrize(
    ("height", "width", "work_width", "size", "step"),
    [
        (240, 320, 320, 24, 6),  # processed at full size
        (720, 1280, 320, 80, 16),  # downscaled 4x: boxes mapped back to source pixels
        (480, 1000, 160, 60, 12),  # non-integer scale, rounded outwards
    ],
)
def test_moving_square_gets_a_box_covering_it(height, width, work_width, size, step) -> None:
    scene = background(height, width)
    masker = MotionMasker(MotionConfig(mode="only"), work_width=work_width)
    warmed_up(masker, scene)
    for k in range(8):
        x, y = 40 + step * k, height // 3
        result = masker.boxes(with_square(scene, x, y, size))
        assert len(result) >= 1, f"frame {k}: moving square not found"
        assert contains(result.xyxy, (x, y, x + size, y + size)), f"frame {k}: not covered"
        assert np.all(result.score == 1.0)
        # Whole source pixels inside the image (half-open bounds).
        assert np.array_equal(result.xyxy, np.round(result.xyxy))
        assert result.xyxy[:, [0, 1]].min() >= 0
        assert np.all(result.xyxy[:, 2] <= width) and np.all(result.xyxy[:, 3] <= height)
        # Only the square (and where it just was) moves: the box stays near it.
        assert result.xyxy[:, 2].max() - result.xyxy[:, 0].min() < 4 * size + 4 * step


def test_static_scene_yields_no_boxes_after_the_first_frame() -> None:
    scene = background(240, 320)
    masker = MotionMasker(MotionConfig(mode="extra"))
    first = masker.boxes(scene)
    # Nothing learnt yet: the whole frame counts as moving, so it is masked, not leaked.
    assert contains(first.xyxy, (0, 0, 320, 240))
    for _ in range(50):
        assert len(masker.boxes(scene)) == 0


def test_frame_size_change_restarts_the_model_fully_masked() -> None:
    masker = MotionMasker(MotionConfig(mode="only"))
    warmed_up(masker, background(240, 320))
    result = masker.boxes(background(360, 480))
    assert contains(result.xyxy, (0, 0, 480, 360))


@pytest.mark.parametrize(
    ("size", "min_area_px", "found"),
    [
        (20, 64, True),
        (20, 400, True),  # the box of a 20 px square covers at least 400 px
        (20, 20_000, False),  # far bigger than the square (plus padding) could make
        (4, 64, True),  # a small blob survives the noise filter at full resolution
    ],
)
def test_min_area_filters_small_blobs(size, min_area_px, found) -> None:
    scene = background(240, 320)
    masker = MotionMasker(MotionConfig(mode="only", min_area_px=min_area_px))
    warmed_up(masker, scene)
    masker.boxes(with_square(scene, 100, 100, size))
    result = masker.boxes(with_square(scene, 110, 100, size))
    assert (len(result) > 0) == found


def test_work_width_is_validated() -> None:
    with pytest.raises(ValueError, match="work_width"):
        MotionMasker(MotionConfig(), work_width=4)
