"""The second look after masking (Redactor.redact with look_again): a face left visible beside
a mask is found and masked too, and a masked face adds nothing. (Its failure: test_cli.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from edge.detectors.base import Detector
from edge.detectors.centerface import CenterFaceConfig
from edge.maskrule import split_masked
from edge.redact import RedactionConfig, Redactor
from edge.types import Detections, Frame
from edge.verify import FACE_THRESHOLD

EXACT = {"mask_scale": 1.0, "mask_lift": 0.0}  # masks exactly on their boxes


@pytest.fixture(scope="module")
def centerface(model_store) -> Detector:
    from edge.detectors.registry import build_detector

    return build_detector(CenterFaceConfig(), model_store)


def _visible_faces(detector: Detector, image: np.ndarray) -> Detections:
    """What the audit would report: faces at its threshold whose eyes are not masked."""
    found = detector.detect(image)
    visible, _ = split_masked(image, found.select(found.score >= FACE_THRESHOLD))
    return visible


def _face(detector: Detector, image: np.ndarray) -> np.ndarray:
    """The one face the audit finds in `image`, x1, y1, x2, y2."""
    found = detector.detect(image)
    (face,) = found.select(found.score >= FACE_THRESHOLD).xyxy
    return face


def _slipped(face: np.ndarray, covered_from: float) -> Detections:
    """A box as wide as `face` that masks it only from `covered_from` of its height down."""
    x1, y1, x2, y2 = face
    shift = covered_from * (y2 - y1)
    return Detections(np.float32([[x1, y1 + shift, x2, y2 + shift]]), np.float32([0.9]))


@pytest.mark.parametrize("image_name", ["astronaut_bgr", "grace_hopper_bgr"])
def test_a_face_above_a_mask_that_slipped_down_is_masked(
    image_name: str, request: pytest.FixtureRequest, centerface: Detector
) -> None:
    frame = Frame(request.getfixturevalue(image_name), 0, 0.0)
    face = _face(centerface, frame.image)
    slipped = _slipped(face, 0.55)  # eyes and forehead left out
    redactor = Redactor(RedactionConfig(**EXACT))
    assert len(_visible_faces(centerface, redactor.redact(frame, slipped).image)), (
        "precondition: the audit sees the face above the slipped mask"
    )

    redacted = redactor.redact(frame, slipped, look_again=centerface)

    assert redacted.record.regions > 1
    assert not len(_visible_faces(centerface, redacted.image))
    x1, y1, x2, y2 = face.astype(int)
    eyes = (slice(y1 + (y2 - y1) // 4, y1 + (y2 - y1) // 2), slice(x1, x2))
    assert np.any(redacted.image[eyes] != frame.image[eyes], axis=2).mean() > 0.95


def test_a_masked_face_adds_nothing(astronaut_bgr: np.ndarray, centerface: Detector) -> None:
    frame = Frame(astronaut_bgr, 0, 0.0)
    boxes = centerface.detect(frame.image)
    regions = Redactor().redact(frame, boxes).record.regions

    assert Redactor().redact(frame, boxes, look_again=centerface).record.regions == regions


def test_turned_off_it_does_not_look(astronaut_bgr: np.ndarray, centerface: Detector) -> None:
    frame = Frame(astronaut_bgr, 0, 0.0)
    slipped = _slipped(_face(centerface, frame.image), 0.55)
    redactor = Redactor(RedactionConfig(**EXACT, second_look_threshold=None))

    redacted = redactor.redact(frame, slipped, look_again=centerface)

    assert redacted.record.regions == 1
    assert len(_visible_faces(centerface, redacted.image))
