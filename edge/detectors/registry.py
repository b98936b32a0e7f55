"""Detector backends by name. A config naming an unknown backend is refused by pydantic;
`build_detector` loads the model (verified) and refuses a backend that cannot run here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from edge.detectors.base import Detector
from edge.detectors.blazeface import BlazeFaceConfig, BlazeFaceDetector
from edge.detectors.centerface import CenterFaceConfig, CenterFaceDetector
from edge.detectors.yunet import YuNetConfig, YuNetDetector

if TYPE_CHECKING:
    from edge.models import ModelStore

DetectorConfig = Annotated[
    CenterFaceConfig | YuNetConfig | BlazeFaceConfig, Field(discriminator="type")
]


def build_detector(config: DetectorConfig, store: ModelStore) -> Detector:
    """The detector `config` describes, with its model from `store`.

    Raises ModelError (model missing or corrupt, naming the fix) or DetectorError (the
    backend cannot run here, e.g. mediapipe not installed). Never substitutes another backend.
    """
    if isinstance(config, CenterFaceConfig):
        return CenterFaceDetector.create(config, store)
    if isinstance(config, YuNetConfig):
        return YuNetDetector.create(config, store)
    if isinstance(config, BlazeFaceConfig):
        return BlazeFaceDetector.create(config, store)
    raise TypeError(f"not a detector config: {type(config).__name__}")
