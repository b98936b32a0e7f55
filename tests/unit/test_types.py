"""Value types validate their shapes with messages that say what was expected."""

from __future__ import annotations

import numpy as np
import pytest

from edge.types import Detections, Frame


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4), np.uint8), "uint8 \\(H, W, 3\\)"),
        (np.zeros((4, 4, 3), np.float32), "uint8 \\(H, W, 3\\)"),
        (np.zeros((4, 4, 4), np.uint8), "uint8 \\(H, W, 3\\)"),
    ],
)
def test_frame_rejects_bad_images(image, message) -> None:
    with pytest.raises(ValueError, match=message):
        Frame(image, 0, 0.0)


def test_frame_rejects_non_arrays() -> None:
    with pytest.raises(TypeError, match="numpy array"):
        Frame([[0, 0, 0]], 0, 0.0)  # type: ignore[arg-type]


def test_detections_shapes_and_operations() -> None:
    a = Detections(np.array([[0, 0, 10, 20]]), np.array([0.9]))
    b = Detections(np.array([[5, 5, 15, 15], [1, 1, 2, 2]]), np.array([0.5, 0.4]))
    merged = Detections.merge([a, Detections.empty(), b])
    assert merged.xyxy.dtype == np.float32 and merged.xyxy.shape == (3, 4)
    assert len(merged.select(merged.score > 0.45)) == 2
    assert merged.heights.tolist() == [20, 10, 1]
    assert len(Detections.merge([])) == 0


@pytest.mark.parametrize(
    ("xyxy", "score", "message"),
    [
        ([[0, 0, 1, 1]], [0.5, 0.5], "1 rows but score has 2"),
        ([[0, 0, np.nan, 1]], [0.5], "NaN"),
    ],
)
def test_detections_validation(xyxy, score, message) -> None:
    with pytest.raises(ValueError, match=message):
        Detections(np.array(xyxy, np.float32), np.array(score, np.float32))
