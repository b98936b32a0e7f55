"""The `edgeblur` command, run as the installed script on real files made here.

Faces are checked with the real default detector (CenterFace): on each input it must find the
face (so every test can fail), and in each output the face box must hold new pixels and no
longer look like a face to it.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from edge import cli
from edge.config import TrackingConfig, VideoConfig
from edge.detectors.base import Detector
from edge.detectors.centerface import CenterFaceConfig
from edge.errors import DetectorError
from edge.imagefiles import ImageJob, redact_image_file
from edge.maskrule import split_masked
from edge.media import probe, read_frames
from edge.redact import RedactionConfig, Redactor
from edge.types import Detections
from edge.videofiles import redact_video

EDGEBLUR = Path(sys.executable).parent / "edgeblur"
# The faces used here score about 0.9; a face left unmasked, even partly, scores far above
# this. After masking, the head outline and hair around the noise still score 0.15-0.40 at the
# face's place (the worst frame of each of 80 runs of the video test; the noise is random), so
# a finding above this whose eyes the audit (edge.verify) sees masked is the mask, not a face.
LEFT_FACE_SCORE = 0.4


def edgeblur(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    assert EDGEBLUR.exists(), f"{EDGEBLUR} missing: run `make install`"
    return subprocess.run(
        [str(EDGEBLUR), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,  # a hang guard, not a timing assertion
    )


@pytest.fixture(scope="module")
def checker(model_store) -> Detector:
    """The real CenterFace, keeping weak boxes too, used to look for faces left unmasked."""
    from edge.detectors.registry import build_detector

    return build_detector(CenterFaceConfig(threshold=0.05), model_store)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def face_box(detector: Detector, image: np.ndarray) -> np.ndarray:
    """The largest face the checker finds; fails the test if it finds none."""
    found = detector.detect(image)
    assert len(found), "the checker finds no face in the input: the test would prove nothing"
    return found.xyxy[int(np.argmax(found.widths * found.heights))]


def assert_face_masked(
    detector: Detector, original: np.ndarray, redacted: np.ndarray, box: np.ndarray
) -> None:
    """The face box holds new pixels, and nothing there scores like a face any more, unless
    its eyes are masked."""
    x1, y1, x2, y2 = box.astype(int)
    change = np.abs(redacted[y1:y2, x1:x2].astype(int) - original[y1:y2, x1:x2]).mean()
    assert change > 20, f"face pixels barely changed (mean difference {change:.1f})"
    found, _ = split_masked(redacted, detector.detect(redacted))
    left = [
        (round(float(score), 3), round(iou(b, box), 2))
        for b, score in zip(found.xyxy, found.score, strict=True)
        if iou(b, box) > 0.3
    ]
    assert all(score < LEFT_FACE_SCORE for score, _ in left), f"face still detected: {left}"


# --- images -----------------------------------------------------------------------------------

EXIF_SECRETS = {0x010F: "SecretCam Make", 0x013B: "Jane Witness", 0x010E: "taken at 12 High St"}


def write_jpeg_with_exif(path: Path, bgr: np.ndarray, orientation: int = 1) -> None:
    from PIL import Image

    exif = Image.Exif()
    for tag, value in EXIF_SECRETS.items():
        exif[tag] = value
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])).save(path, exif=exif, quality=95)
    assert b"Jane Witness" in path.read_bytes()


@pytest.mark.parametrize("picture", ["astronaut_bgr", "grace_hopper_bgr"])
def test_image_png_output_masks_face_keeps_rest_and_drops_metadata(
    tmp_path: Path, picture: str, request: pytest.FixtureRequest, checker: Detector
) -> None:
    from PIL import Image

    source = tmp_path / "photo.jpg"
    write_jpeg_with_exif(source, request.getfixturevalue(picture))
    original = cv2.imread(str(source))
    box = face_box(checker, original)

    result = edgeblur("image", source, "--out", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    assert "processed 1 images" in result.stderr and "0 failed" in result.stderr
    output = tmp_path / "out" / "photo.png"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.png"]
    with Image.open(output) as opened:
        assert opened.format == "PNG"
        assert "exif" not in opened.info and not opened.getexif()
    data = output.read_bytes()
    assert not any(secret.encode() in data for secret in EXIF_SECRETS.values())
    assert b"Exif" not in data

    redacted = cv2.imread(str(output))
    assert redacted.shape == original.shape
    assert_face_masked(checker, original, redacted, box)
    x1, y1, x2, y2 = box.astype(int)
    # Outside the face box doubled (masks grow it by 1.3), PNG output is identical to the input.
    far = np.ones(original.shape[:2], bool)
    dx, dy = (x2 - x1) // 2, (y2 - y1) // 2
    far[max(0, y1 - dy) : y2 + dy, max(0, x1 - dx) : x2 + dx] = False
    assert far.sum() > original.shape[0] * original.shape[1] // 4
    np.testing.assert_array_equal(redacted[far], original[far])


def test_image_jpg_output_and_exif_orientation_applied(
    tmp_path: Path, astronaut_bgr: np.ndarray
) -> None:
    from PIL import Image

    source = tmp_path / "rotated.jpg"
    wide = astronaut_bgr[:, :400]  # 512 high, 400 wide; EXIF orientation 6 shows it 400 high
    write_jpeg_with_exif(source, wide, orientation=6)

    result = edgeblur("image", source, "--out", tmp_path / "out", "--format", "jpg")

    assert result.returncode == 0, result.stderr
    output = tmp_path / "out" / "rotated.jpg"
    with Image.open(output) as opened:
        assert opened.format == "JPEG"
        assert not opened.getexif()
        # Pixels are stored as displayed, since the orientation tag is not carried over.
        assert opened.size == (512, 400)
    assert b"Jane Witness" not in output.read_bytes()


def test_image_directories_keep_relative_paths_and_skip_out_dir(
    tmp_path: Path, astronaut_bgr: np.ndarray, grace_hopper_bgr: np.ndarray
) -> None:
    photos = tmp_path / "photos"
    (photos / "2024" / "june").mkdir(parents=True)
    cv2.imwrite(str(photos / "top.png"), astronaut_bgr)
    cv2.imwrite(str(photos / "2024" / "june" / "deep.JPG"), grace_hopper_bgr)
    cv2.imwrite(str(photos / "2024" / "bmp.bmp"), astronaut_bgr[:200, :200])
    (photos / "notes.txt").write_text("not an image")
    out = photos / "blurred"  # inside the input directory
    out.mkdir()
    cv2.imwrite(str(out / "stale.png"), astronaut_bgr)  # an earlier run's output: not re-read
    single = tmp_path / "single.webp"
    cv2.imwrite(str(single), grace_hopper_bgr)

    # top.png named twice (directly and through its directory) is processed once.
    result = edgeblur("image", photos, single, photos / "top.png", "--out", out)

    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        "2024/bmp.png",
        "2024/june/deep.png",
        "single.png",
        "stale.png",
        "top.png",
    ]
    assert "processed 4 images" in result.stderr


def test_image_refuses_outputs_that_clash_or_overwrite_inputs(
    tmp_path: Path, astronaut_bgr: np.ndarray
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.jpg"), astronaut_bgr)
    cv2.imwrite(str(photos / "a.png"), astronaut_bgr)
    before = sorted(photos.iterdir())

    clash = edgeblur("image", photos, "--out", tmp_path / "out")
    same_dir = edgeblur("image", photos, "--out", photos)

    assert clash.returncode == 1 and "would both be written" in clash.stderr
    assert not (tmp_path / "out").exists()
    assert same_dir.returncode == 1 and "never overwritten" in same_dir.stderr
    assert sorted(photos.iterdir()) == before
    assert "Traceback" not in clash.stderr + same_dir.stderr


def test_image_corrupt_and_missing_inputs_fail_by_name_others_written(
    tmp_path: Path, astronaut_bgr: np.ndarray, grace_hopper_bgr: np.ndarray
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "good1.jpg"), astronaut_bgr)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    cv2.imwrite(str(photos / "good2.png"), grace_hopper_bgr)
    good_bytes = (photos / "good1.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(good_bytes[:20])

    result = edgeblur("image", photos, tmp_path / "nowhere.jpg", "--out", tmp_path / "out")

    assert result.returncode == 1
    for name in ("broken.jpg", "truncated.jpg", "nowhere.jpg"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good1.png", "good2.png"]
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("processed 5 images in ") and summary.endswith(", 3 failed")
    assert "ms/image" in summary


class FailingDetector(Detector):
    """Fault injection (a detector crash cannot be caused for real): fails on chosen calls."""

    name = "failing"

    def __init__(self, inner: Detector, fail_on: set[int]) -> None:
        self.inner, self.fail_on, self.calls = inner, fail_on, 0

    def detect(self, image: np.ndarray) -> Detections:
        call, self.calls = self.calls, self.calls + 1
        if call in self.fail_on:
            raise DetectorError("injected inference failure")
        return self.inner.detect(image)


@pytest.mark.parametrize("failing_call", [0, 1], ids=["detection", "second-look"])
def test_image_detector_failure_writes_nothing(
    tmp_path: Path, astronaut_bgr: np.ndarray, checker: Detector, failing_call: int
) -> None:
    source = tmp_path / "a.png"
    cv2.imwrite(str(source), astronaut_bgr)
    job = ImageJob(source, tmp_path / "out" / "a.png")
    detector = FailingDetector(checker, {failing_call})

    with pytest.raises(DetectorError, match="a.png.*injected"):
        redact_image_file(job, detector, Redactor(), "png")

    assert detector.calls == failing_call + 1
    assert not job.target.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --- options and config -----------------------------------------------------------------------


def test_config_file_and_flags_override(tmp_path: Path, astronaut_bgr: np.ndarray) -> None:
    source = tmp_path / "a.png"
    cv2.imwrite(str(source), astronaut_bgr)
    config = tmp_path / "edgeblur.yaml"
    config.write_text("redaction:\n  method: solid\n  mask_scale: 1.5\n")
    face = (slice(90, 140), slice(180, 240))  # well inside the astronaut's face

    from_file = edgeblur("image", source, "--out", tmp_path / "file", "--config", config)
    from_flag = edgeblur(
        "image", source, "--out", tmp_path / "flag", "--config", config, "--redact", "noise"
    )

    assert from_file.returncode == 0 and from_flag.returncode == 0, from_file.stderr
    solid = cv2.imread(str(tmp_path / "file" / "a.png"))[face]
    noise = cv2.imread(str(tmp_path / "flag" / "a.png"))[face]
    assert (solid == 128).all()
    assert not (noise == 128).all() and noise.std() > 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "1.5"], "threshold"),
        (["--mask-scale", "0.5"], "mask_scale"),
        (["--config", "{cfg}"], "redaction.method"),
        (["--config", "{missing}"], "cannot read config"),
    ],
)
def test_bad_options_and_config_exit_2_without_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("redaction:\n  method: smudge\n")
    (tmp_path / "a.png").write_bytes(b"")
    args = [a.format(cfg=bad, missing=tmp_path / "none.yaml") for a in args]

    result = edgeblur("image", tmp_path / "a.png", "--out", tmp_path / "out", *args)

    assert result.returncode == 2
    assert result.stderr.startswith("edgeblur: error: ") and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_flag_before_or_after_the_subcommand_logs_debug(
    tmp_path: Path, where: str, astronaut_bgr: np.ndarray
) -> None:
    source = tmp_path / "a.png"
    cv2.imwrite(str(source), astronaut_bgr)
    args = ["image", source, "--out", tmp_path / "out"]
    args = ["-v", *args] if where == "before" else [*args, "-v"]

    result = edgeblur(*args)

    assert result.returncode == 0, result.stderr
    assert "a.png -> " in result.stderr and "1 face(s)" in result.stderr


def test_missing_model_is_an_error_naming_the_fix_and_nothing_is_written(
    tmp_path: Path, astronaut_bgr: np.ndarray
) -> None:
    source = tmp_path / "a.png"
    cv2.imwrite(str(source), astronaut_bgr)
    empty_cache = {"EDGEBLUR_MODEL_DIR": str(tmp_path / "no-models")}

    result = edgeblur("image", source, "--out", tmp_path / "out", env=empty_cache)

    assert result.returncode == 1
    assert "edgeblur: error: " in result.stderr
    assert "edgeblur models fetch centerface" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_serve_reports_a_bad_config_without_starting(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("service:\n  port: 99999\n")

    result = edgeblur("serve", "--config", config)

    assert result.returncode == 2
    assert "edgeblur: error: " in result.stderr and "port" in result.stderr


# --- video ------------------------------------------------------------------------------------

CLIP_W, CLIP_H = 480, 320
CROP = (slice(0, 256), slice(96, 352))  # the astronaut's head and shoulders, 256 x 256


def moving_face_frames(astronaut_bgr: np.ndarray, count: int) -> list[np.ndarray]:
    """The astronaut's face sliding left to right over a grey background."""
    crop = astronaut_bgr[CROP]
    frames = []
    for i in range(count):
        frame = np.full((CLIP_H, CLIP_W, 3), 90, np.uint8)
        x = (i * 11) % (CLIP_W - 256)
        frame[32 : 32 + 256, x : x + 256] = crop
        frames.append(frame)
    return frames


def write_clip(
    path: Path,
    frames: list[np.ndarray],
    fps: int = 10,
    audio: bool = False,
    rotation: int = 0,
    **options: str,
) -> None:
    """An H.264 MP4 (and an AAC sine tone when `audio`), encoded with PyAV. `rotation`
    (degrees counter-clockwise) is stored as display metadata, as phones do."""
    with av.open(str(path), mode="w", options=options) as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        sound = None
        if audio:
            sound = container.add_stream("aac", rate=48000)
            sound.layout = "mono"
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(video.encode(None))
        if sound is not None:
            samples = 48000 * len(frames) // fps
            tone = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 48000)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(
                    tone[None, start : start + 1024], format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = 48000, start
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_video_masks_face_in_every_frame_same_count_and_size(
    tmp_path: Path, astronaut_bgr: np.ndarray, checker: Detector
) -> None:
    frames = moving_face_frames(astronaut_bgr, 20)
    source = tmp_path / "in.mp4"
    write_clip(source, frames)
    boxes = [face_box(checker, frame) for frame in frames]

    result = edgeblur("video", source, "--out", tmp_path / "out.mp4")

    assert result.returncode == 0, result.stderr
    assert "processed 20 frames (480x320)" in result.stderr
    assert "0 frames fully masked" in result.stderr
    info = probe(tmp_path / "out.mp4")
    assert (info.width, info.height, info.frames, info.has_audio) == (480, 320, 20, False)
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].average_rate == 10
    decoded = [frame.image for frame in read_frames(tmp_path / "out.mp4")]
    assert len(decoded) == 20
    for original, image, box in zip(frames, decoded, boxes, strict=True):
        assert_face_masked(checker, original, image, box)
    assert leftovers(tmp_path) == ["in.mp4", "out.mp4"]


def test_video_stored_sideways_is_turned_upright_before_detection(
    tmp_path: Path, astronaut_bgr: np.ndarray, checker: Detector
) -> None:
    upright = moving_face_frames(astronaut_bgr, 6)
    source = tmp_path / "phone.mp4"
    # Stored turned a quarter counter-clockwise, with "turn it clockwise" display metadata.
    write_clip(source, [np.ascontiguousarray(np.rot90(f)) for f in upright], rotation=-90)
    boxes = [face_box(checker, frame) for frame in upright]

    result = edgeblur("video", source, "--out", tmp_path / "out.mp4")

    assert result.returncode == 0, result.stderr
    decoded = [frame.image for frame in read_frames(tmp_path / "out.mp4")]
    assert [image.shape for image in decoded] == [(CLIP_H, CLIP_W, 3)] * 6
    for original, image, box in zip(upright, decoded, boxes, strict=True):
        assert_face_masked(checker, original, image, box)


def test_video_odd_size_loses_last_row_and_column(tmp_path: Path) -> None:
    source = tmp_path / "odd.mkv"
    # FFV1 (lossless) stores odd sizes, which H.264 4:2:0 cannot.
    with av.open(str(source), mode="w") as container:
        stream = container.add_stream("ffv1", rate=5)
        stream.width, stream.height, stream.pix_fmt = 161, 121, "bgr0"
        for i in range(5):
            image = np.full((121, 161, 3), 40 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode(None))

    result = edgeblur("video", source, "--out", tmp_path / "out.mp4")

    assert result.returncode == 0, result.stderr
    info = probe(tmp_path / "out.mp4")
    assert (info.width, info.height, info.frames) == (160, 120, 5)


@pytest.mark.parametrize("layout", ["moov-at-end", "faststart"])
def test_truncated_video_fails_by_name_and_writes_nothing(
    tmp_path: Path, layout: str, astronaut_bgr: np.ndarray
) -> None:
    source = tmp_path / "clip.mp4"
    options = {"movflags": "faststart"} if layout == "faststart" else {}
    write_clip(source, moving_face_frames(astronaut_bgr, 30), **options)
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"

    result = edgeblur("video", source, "--out", out / "clip.mp4")

    assert result.returncode == 1
    assert "edgeblur: error: " in result.stderr and "clip.mp4" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or leftovers(out) == []


def test_video_refuses_to_overwrite_its_input(tmp_path: Path, astronaut_bgr: np.ndarray) -> None:
    source = tmp_path / "clip.mp4"
    write_clip(source, moving_face_frames(astronaut_bgr, 3))
    before = source.read_bytes()

    result = edgeblur("video", source, "--out", source)

    assert result.returncode == 2 and "never overwritten" in result.stderr
    assert source.read_bytes() == before


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_video_leaves_no_output_or_temp_file(
    tmp_path: Path, signum: int, astronaut_bgr: np.ndarray
) -> None:
    source = tmp_path / "long.mp4"
    write_clip(source, moving_face_frames(astronaut_bgr, 600), fps=25)
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [str(EDGEBLUR), "video", str(source), "--out", str(out / "long.mp4")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a CI job started in the background (`cmd &`) inherits SIGINT
        # ignored, and Python then never raises KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # Wait until encoded video is on disk (the muxer has written), i.e. mid-run.
        deadline = time.monotonic() + 300  # a hang guard, not a timing assertion
        while not any(p.stat().st_size > 0 for p in out.iterdir() if p.name.startswith(".")):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "no temporary output appeared"
            time.sleep(0.05)
        os.kill(process.pid, signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], stderr
    assert "no partial output" in stderr
    assert leftovers(out) == []


def test_video_audio_dropped_by_default_kept_on_request(
    tmp_path: Path, astronaut_bgr: np.ndarray
) -> None:
    source = tmp_path / "talk.mp4"
    write_clip(source, moving_face_frames(astronaut_bgr, 20), audio=True)
    assert probe(source).has_audio

    silent = edgeblur("video", source, "--out", tmp_path / "silent.mp4")
    kept = edgeblur("video", source, "--out", tmp_path / "kept.mp4", "--keep-audio")

    assert silent.returncode == 0 and kept.returncode == 0, silent.stderr + kept.stderr
    assert not probe(tmp_path / "silent.mp4").has_audio
    with av.open(str(source)) as original, av.open(str(tmp_path / "kept.mp4")) as output:
        assert [s.type for s in output.streams] == ["video", "audio"]
        assert output.streams.audio[0].codec_context.name == "aac"
        source_packets = [p for p in original.demux(audio=0) if p.size]
        output_packets = [p for p in output.demux(audio=0) if p.size]
        assert [bytes(p) for p in output_packets] == [bytes(p) for p in source_packets]
        assert output.streams.video[0].frames == 20
    assert leftovers(tmp_path) == ["kept.mp4", "silent.mp4", "talk.mp4"]


def is_flat(image: np.ndarray) -> bool:
    """One colour, up to H.264 noise: a frame masked whole (Redactor.mask_all)."""
    return bool(image.reshape(-1, 3).std(axis=0).max() < 2)


EVERY_THIRD = TrackingConfig(detect_every=3, lookahead_frames=3)
# FailingDetector counts every call; the redactor's second look after masking adds calls of
# its own (tested below and, on an image, above).
NO_SECOND_LOOK = Redactor(RedactionConfig(second_look_threshold=None))


def test_video_detector_failure_masks_whole_frame_and_counts_it(
    tmp_path: Path, astronaut_bgr: np.ndarray, checker: Detector
) -> None:
    source = tmp_path / "in.mp4"
    write_clip(source, moving_face_frames(astronaut_bgr, 10))
    detector = FailingDetector(checker, fail_on={3, 7})

    summary = redact_video(
        source, tmp_path / "out.mp4", detector, NO_SECOND_LOOK, progress=False
    )

    assert (summary.frames, summary.fully_masked) == (10, 2)
    decoded = [frame.image for frame in read_frames(tmp_path / "out.mp4")]
    assert [is_flat(image) for image in decoded] == [index in {3, 7} for index in range(10)]


def test_video_skipping_detection_fails_closed_on_both_sides_of_a_failed_run(
    tmp_path: Path, astronaut_bgr: np.ndarray, checker: Detector
) -> None:
    frames = moving_face_frames(astronaut_bgr, 10)
    source = tmp_path / "in.mp4"
    write_clip(source, frames)
    boxes = [face_box(checker, frame) for frame in frames]
    # Detector runs on frames 0, 3, 6 and 9 (always the last); the run on frame 6 fails.
    detector = FailingDetector(checker, fail_on={2})

    summary = redact_video(
        source, tmp_path / "out.mp4", detector, NO_SECOND_LOOK, tracking=EVERY_THIRD,
        progress=False,
    )

    assert detector.calls == 4
    assert (summary.frames, summary.fully_masked) == (10, 5)
    decoded = [frame.image for frame in read_frames(tmp_path / "out.mp4")]
    for index, (original, image, box) in enumerate(zip(frames, decoded, boxes, strict=True)):
        flat = is_flat(image)
        assert flat == (index in {4, 5, 6, 7, 8}), index
        if not flat:  # skipped frames 1, 2 sit between two good runs: masked by look-ahead
            assert_face_masked(checker, original, image, box)


@pytest.mark.parametrize("fail_on", [set(), {5}], ids=["succeeds", "fails"])
def test_video_second_look_runs_on_detected_frames_and_fails_closed(
    tmp_path: Path, astronaut_bgr: np.ndarray, checker: Detector, fail_on: set[int]
) -> None:
    source = tmp_path / "in.mp4"
    write_clip(source, moving_face_frames(astronaut_bgr, 7))
    # The detector runs on frames 0, 3 and 6, and again on each after masking; the last call
    # (5) is the second look on frame 6.
    detector = FailingDetector(checker, fail_on)

    summary = redact_video(
        source,
        tmp_path / "out.mp4",
        detector,
        Redactor(),
        tracking=EVERY_THIRD,
        progress=False,
    )

    assert detector.calls == 6
    masked_whole = {6} if fail_on else set()
    assert (summary.frames, summary.fully_masked) == (7, len(masked_whole))
    decoded = [frame.image for frame in read_frames(tmp_path / "out.mp4")]
    assert [is_flat(image) for image in decoded] == [index in masked_whole for index in range(7)]


@pytest.mark.parametrize(
    ("flags", "expected", "second_look_threshold"),
    [
        ([], VideoConfig(detect_every=2, lookahead_frames=4), None),
        (
            ["--second-look", "--detect-every", "3"],
            VideoConfig(detect_every=3, lookahead_frames=4, second_look=True),
            RedactionConfig().second_look_threshold,
        ),
    ],
    ids=["config", "flags"],
)
def test_video_flags_override_the_config_video_section(
    tmp_path: Path,
    astronaut_bgr: np.ndarray,
    flags: list[str],
    expected: VideoConfig,
    second_look_threshold: float | None,
) -> None:
    source = tmp_path / "in.mp4"
    write_clip(source, moving_face_frames(astronaut_bgr, 2))
    config_file = tmp_path / "edgeblur.yaml"
    config_file.write_text("video:\n  detect_every: 2\n  lookahead_frames: 4\n")
    args = cli._parser().parse_args(
        ["video", str(source), "--out", str(tmp_path / "out.mp4"), "--config", str(config_file)]
        + flags
    )

    config = cli._video_config(args, cli._config(args))

    assert config.video == expected
    # The redactor `edgeblur video` builds from this config looks again only when asked.
    assert config.redaction.second_look_threshold == second_look_threshold


def test_video_second_look_without_its_threshold_is_a_config_error(
    tmp_path: Path, astronaut_bgr: np.ndarray
) -> None:
    source = tmp_path / "in.mp4"
    write_clip(source, moving_face_frames(astronaut_bgr, 2))
    config_file = tmp_path / "edgeblur.yaml"
    config_file.write_text("redaction:\n  second_look_threshold: null\n")

    result = edgeblur(
        "video", source, "--out", tmp_path / "out.mp4", "--config", config_file, "--second-look"
    )

    assert result.returncode == 2, result.stderr
    assert "second_look_threshold" in result.stderr and "Traceback" not in result.stderr
    assert leftovers(tmp_path) == ["edgeblur.yaml", "in.mp4"]


def test_video_missing_input_is_an_error(tmp_path: Path) -> None:
    result = edgeblur("video", tmp_path / "absent.mp4", "--out", tmp_path / "out.mp4")

    assert result.returncode == 1 and "absent.mp4" in result.stderr
    assert leftovers(tmp_path) == []


# --- models -----------------------------------------------------------------------------------


def test_models_list_shows_the_cached_default_model(model_store) -> None:
    result = edgeblur("models", "list")

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "STATUS", "SIZE", "LICENCE"]
    centerface = next(row for row in rows if row.split()[0] == "centerface")
    assert centerface.split()[1] == "present"
    assert str(model_store.path("centerface")) in centerface


def test_models_list_shows_missing_and_corrupt_files(tmp_path: Path) -> None:
    (tmp_path / "centerface.onnx").write_bytes(b"half a download")

    result = edgeblur("models", "list", "--cache-dir", tmp_path)

    assert result.returncode == 0, result.stderr
    states = {row.split()[0]: row.split()[1] for row in result.stdout.splitlines()[1:]}
    assert states.pop("centerface") == "corrupt"
    assert "yunet" in states and set(states.values()) == {"missing"}


def test_model_commands_use_the_configs_cache_dir(tmp_path: Path, model_store) -> None:
    """`serve` finds its models in models.cache_dir; so do `models list` and `verify` given
    the same --config (and --cache-dir still wins)."""
    config = tmp_path / "edgeblur.yaml"
    config.write_text(f"models:\n  cache_dir: {model_store.cache_dir}\n")
    empty = tmp_path / "empty"
    empty.mkdir()

    listed = edgeblur("models", "list", "--config", config)
    overridden = edgeblur("models", "list", "--config", config, "--cache-dir", empty)

    assert listed.returncode == 0, listed.stderr
    assert str(model_store.path("centerface")) in listed.stdout
    assert str(empty / "centerface.onnx") in overridden.stdout
    image = tmp_path / "blank.png"
    assert cv2.imwrite(str(image), np.full((64, 64, 3), 90, np.uint8))
    audit = edgeblur("verify", str(image), "--config", config)
    assert audit.returncode == 0, audit.stderr
    missing = edgeblur("verify", str(image), "--config", config, "--cache-dir", empty)
    assert missing.returncode == 1 and "edgeblur models fetch" in missing.stderr


def test_models_fetch_unknown_name_fails_cleanly(tmp_path: Path) -> None:
    result = edgeblur("models", "fetch", "no-such-model", "--cache-dir", tmp_path)

    assert result.returncode == 1
    assert result.stderr.startswith("edgeblur: error: ") and "no-such-model" in result.stderr
    assert "Traceback" not in result.stderr


def test_image_batch_skips_huge_and_non_regular_files_and_goes_on(tmp_path: Path) -> None:
    """A PNG header claiming 100000 x 100000 ended the batch with a traceback, and a FIFO named
    *.png hung it; now each is one failed file, the others are redacted, and the exit is 1."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "a_good.png"), np.full((64, 64, 3), 90, np.uint8))
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    header = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    (inputs / "b_huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header)
    os.mkfifo(inputs / "c_fifo.png")
    out = tmp_path / "out"
    result = edgeblur("image", str(inputs), "--out", str(out))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "b_huge.png" in result.stderr and "c_fifo.png" in result.stderr
    assert (out / "a_good.png").exists()
