"""Redaction: masks cover their box to the last pixel row and column, change nothing outside,
and RedactedFrame comes from the redactor alone."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge.redact import RedactionConfig, Redactor
from edge.redact.redactor import mask_bounds
from edge.sinks.snapshot import SnapshotSink
from edge.types import Detections, Frame, RedactedFrame, RedactionRecord, require_redacted


def _frame(height: int = 120, width: int = 160) -> Frame:
    rng = np.random.default_rng(7)
    return Frame(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), 3, 1.5)


def _boxes(*rows: tuple[float, float, float, float]) -> Detections:
    return Detections(np.array(rows, np.float32), np.ones(len(rows), np.float32))


@pytest.mark.parametrize(
    ("box", "scale", "expected"),
    [
        ((10, 20, 30, 60), 1.0, (10, 20, 30, 60)),
        ((10, 20, 30, 60), 1.5, (5, 10, 35, 70)),
        ((10.2, 20.7, 29.1, 59.5), 1.0, (10, 20, 30, 60)),  # rounded outwards
        ((150, 100, 170, 130), 1.0, (150, 100, 160, 120)),  # clipped to width/height, not -1
        ((-20, -10, 5, 5), 1.0, (0, 0, 5, 5)),
        ((200, 200, 220, 220), 1.0, None),  # wholly outside: nothing to mask
    ],
)
def test_mask_bounds(box, scale, expected) -> None:
    bounds = mask_bounds(np.array([box], np.float32), scale, width=160, height=120)
    assert bounds == ([expected] if expected else [])


def test_mask_lift_raises_the_mask() -> None:
    """A face looking down shows its forehead above a centred box; the lift covers it."""
    box = np.array([[40, 40, 80, 80]], np.float32)
    assert mask_bounds(box, 1.5, 160, 120, lift=0.25) == [(30, 20, 90, 90)]
    frame = _frame()
    config = RedactionConfig(method="solid", mask_scale=1.0, mask_lift=0.25)
    out = Redactor(config).redact(frame, _boxes((40, 40, 80, 80)))
    assert (out.image[30:80, 40:80] == 128).all()
    assert np.array_equal(out.image[80:, 40:80], frame.image[80:, 40:80])
    assert np.array_equal(out.image[:30, 40:80], frame.image[:30, 40:80])


@pytest.mark.parametrize("method", ["noise", "solid", "pixelate", "blur"])
@pytest.mark.parametrize("shape", ["box", "ellipse"])
def test_changes_only_inside_the_mask(method: str, shape: str) -> None:
    frame = _frame()
    redactor = Redactor(
        RedactionConfig(method=method, shape=shape, mask_scale=1.0, mask_lift=0.0)
    )
    out = redactor.redact(frame, _boxes((40, 30, 100, 90)))
    changed = np.any(out.image != frame.image, axis=2)
    outside = np.ones_like(changed)
    outside[30:90, 40:100] = False
    assert not changed[outside].any()
    assert changed[30:90, 40:100].mean() > (0.9 if shape == "box" else 0.7)


def test_mask_reaches_last_row_and_column() -> None:
    frame = _frame()
    out = Redactor(RedactionConfig(method="solid", mask_lift=0.0)).redact(
        frame, _boxes((130, 90, 160, 120))
    )
    assert (out.image[-1, -1] == 128).all()
    assert (out.image[90:, 130:] == 128).all()


def test_noise_fill_keeps_no_face_pixels() -> None:
    """Almost every pixel differs from the original by more than compression noise."""
    frame = _frame()
    out = Redactor().redact(frame, _boxes((40, 30, 100, 90)))
    config = RedactionConfig()
    box = np.array([[40, 30, 100, 90]], np.float32)
    grown = mask_bounds(box, config.mask_scale, 160, 120, config.mask_lift)[0]
    x1, y1, x2, y2 = grown
    diff = np.abs(out.image[y1:y2, x1:x2].astype(int) - frame.image[y1:y2, x1:x2].astype(int))
    assert (diff.max(axis=2) >= 3).mean() > 0.95


@pytest.mark.parametrize(("face_bgr", "patch_grey"), [((200, 180, 230), 64), ((40, 60, 90), 192)])
def test_noise_contrasts_with_the_face_and_keeps_no_colour(face_bgr, patch_grey) -> None:
    """A light face gets a dark patch and a dark one a light patch, grey either way: even
    where H.264 smooths the noise away, the patch neither matches the face nor keeps its skin
    tone."""
    image = np.zeros((120, 160, 3), np.uint8)
    image[30:90, 40:100] = face_bgr
    config = RedactionConfig(mask_scale=1.0, mask_lift=0.0)
    out = Redactor(config).redact(Frame(image, 0, 0.0), _boxes((40, 30, 100, 90))).image
    smoothed = out[30:90, 40:100].reshape(-1, 3).mean(axis=0)
    assert np.allclose(smoothed, patch_grey, atol=3)


def test_noise_is_not_reproducible() -> None:
    frame = _frame()
    redactor = Redactor()
    first = redactor.redact(frame, _boxes((40, 30, 100, 90))).image
    second = redactor.redact(frame, _boxes((40, 30, 100, 90))).image
    assert not np.array_equal(first, second)


def test_raw_frame_untouched_and_output_read_only() -> None:
    frame = _frame()
    before = frame.image.copy()
    out = Redactor().redact(frame, _boxes((40, 30, 100, 90)))
    assert np.array_equal(frame.image, before)
    assert not out.image.flags.writeable
    assert (out.index, out.timestamp, out.record.regions) == (3, 1.5, 1)


def test_many_faces_all_masked() -> None:
    """No cap on the number of faces: a crowd of 400 is masked whole."""
    frame = _frame(400, 400)
    rows = [(x, y, x + 10, y + 10) for x in range(0, 400, 20) for y in range(0, 400, 20)]
    config = RedactionConfig(method="solid", mask_scale=1.0, mask_lift=0.0)
    out = Redactor(config).redact(frame, _boxes(*rows))
    assert out.record.regions == 400
    for x1, y1, x2, y2 in rows:
        assert (out.image[y1:y2, x1:x2] == 128).all()


def test_mask_all_hides_everything() -> None:
    out = Redactor().mask_all(_frame(), "detector_error")
    assert (out.image == 128).all()
    assert out.record == RedactionRecord(0, True, "detector_error")


def test_redacted_frame_cannot_be_forged() -> None:
    frame = _frame()
    with pytest.raises(TypeError, match="only be created by edge.redact"):
        RedactedFrame(object(), frame.image, 0, 0.0, RedactionRecord(0, False))


@pytest.mark.parametrize("raw", [_frame(), _frame().image, None])
def test_sinks_refuse_anything_but_redacted(raw) -> None:
    with pytest.raises(TypeError, match="RedactedFrame"):
        require_redacted(raw)
    with pytest.raises(TypeError, match="RedactedFrame"):
        SnapshotSink().write(raw)


@pytest.mark.parametrize(
    "settings",
    [{"mask_scale": 0.5}, {"method": "gauss"}, {"shape": "circle"}, {"colour": "red"}],
)
def test_bad_settings_refused(settings) -> None:
    with pytest.raises(ValidationError):
        RedactionConfig(**settings)


@pytest.mark.parametrize(
    ("method", "setting"),
    [("pixelate", {"pixelate_blocks": 64}), ("blur", {"blur_strength": 1e-6})],
)
@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_weak_methods_change_every_face_at_any_size(method: str, setting: dict, size: int) -> None:
    """64 mosaic cells over a face up to 64 px, or a near-zero blur, returned the face as it
    was, and the frame still counted as redacted."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    frame = Frame(image, 0, 0.0)
    config = RedactionConfig(method=method, mask_scale=1.0, mask_lift=0.0, **setting)
    out = Redactor(config).redact(frame, _boxes((20, 20, 20 + size, 20 + size)))
    region = (slice(20, 20 + size), slice(20, 20 + size))
    change = np.abs(out.image[region].astype(int) - image[region].astype(int)).mean()
    assert change >= 6.0


def test_a_flat_region_that_blur_leaves_unchanged_fails_closed() -> None:
    image = np.full((120, 160, 3), 40, np.uint8)
    out = Redactor(RedactionConfig(method="blur", mask_scale=1.0, mask_lift=0.0)).redact(
        Frame(image, 0, 0.0), _boxes((20, 20, 60, 60))
    )
    assert (out.image[20:60, 20:60] == 128).all()
