"""Every shipped config in configs/ loads and validates; a new file is picked up by the glob."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.config import EdgeblurConfig
from edge.configfile import load_config
from edge.sources.base import expand_env
from edge.sources.rtsp import RtspSourceConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))
# user:password@ written out in a URL, rather than ${VAR} placeholders for both.
LITERAL_CREDENTIALS = re.compile(r"://(?!\$\{\w+\}(:\$\{\w+\})?@)[^/@\s]+@")


def test_the_glob_finds_the_shipped_configs() -> None:
    names = {path.name for path in CONFIG_FILES}
    assert {"demo.yaml", "council-cctv.yaml", "event-pi.yaml"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_config_loads_and_validates(path: Path) -> None:
    config = load_config(path)
    assert config.cameras, f"{path.name} defines no camera"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_every_camera_detector_can_be_built(path: Path, model_store) -> None:
    """The detector each camera would run loads its (verified) model: a config naming a model
    `make install` does not fetch, or settings the backend refuses, fail here, not on site."""
    from edge.detectors.registry import build_detector

    config = load_config(path)
    for camera in config.cameras:
        build_detector(config.detector_for(camera), model_store).close()


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_no_camera_password_is_written_in_a_config(path: Path) -> None:
    for camera in load_config(path).cameras:
        if isinstance(camera.source, RtspSourceConfig):
            assert not LITERAL_CREDENTIALS.search(camera.source.url), (
                f"{path.name}: camera {camera.id} has credentials in its URL; use "
                "${VAR} placeholders read from the environment"
            )


@pytest.mark.parametrize(
    ("url", "literal"),
    [
        ("rtsp://admin:secret@10.0.0.1/live", True),
        ("rtsp://admin@10.0.0.1/live", True),
        ("rtsp://${USER}:secret@10.0.0.1/live", True),
        ("rtsp://${CAM_USER}:${CAM_PASSWORD}@10.0.0.1/live", False),
        ("rtsp://${CAM_USER}@10.0.0.1/live", False),
        ("rtsp://10.0.0.1/live", False),
    ],
)
def test_the_credentials_check_tells_literals_from_placeholders(url: str, literal: bool) -> None:
    assert bool(LITERAL_CREDENTIALS.search(url)) is literal


def test_council_camera_urls_expand_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(CONFIGS / "council-cctv.yaml")
    urls = [c.source.url for c in config.cameras if isinstance(c.source, RtspSourceConfig)]
    assert len(urls) >= 2, "the council example is about several RTSP cameras"
    for name in {name for url in urls for name in re.findall(r"\$\{(\w+)\}", url)}:
        monkeypatch.setenv(name, f"value-of-{name.lower()}")
    for url in urls:
        expanded = expand_env(url)
        assert "${" not in expanded
        prefix = r"rtsp://value-of-edgeblur_cam_\d_user:value-of-edgeblur_cam_\d_password@"
        assert re.match(prefix, expanded)


def test_council_keeps_recordings_30_days_and_withholds_on_failure() -> None:
    config = load_config(CONFIGS / "council-cctv.yaml")
    assert config.storage.max_age_h == 30 * 24
    assert config.tracking.lookahead_frames > 0
    assert all(camera.fail_policy == "withhold" for camera in config.cameras)


def test_demo_config_is_the_built_in_default() -> None:
    """`edgeblur serve` without --config runs EdgeblurConfig(); the file must say the same."""
    assert load_config(CONFIGS / "demo.yaml") == EdgeblurConfig()
