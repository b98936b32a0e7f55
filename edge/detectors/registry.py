"""Detector backends by name. A config naming an unknown backend is refused by pydantic."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from edge.detectors.blazeface import BlazeFaceConfig
from edge.detectors.centerface import CenterFaceConfig
from edge.detectors.yunet import YuNetConfig

DetectorConfig = Annotated[
    CenterFaceConfig | YuNetConfig | BlazeFaceConfig, Field(discriminator="type")
]
