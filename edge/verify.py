"""`edgeblur verify`: audit redacted recordings and snapshots for faces that are still visible.

For a data-protection officer: every frame of every video (.mp4, .mov, ...) and every image
(.jpg, .png, ...) under the given paths is searched again with a reference detector: the
service's own model, applied to every face size, on the whole frame at full resolution with no
face-size limits, and optionally also on the frame enlarged in tiles for very small faces
(`upscale`). What it finds is sorted in two tiers:

- a **face** scores FACE_THRESHOLD (0.5 for every detector) or more: the audit fails;
- a finding **to review** scores from the service's own default threshold (CenterFace: 0.12)
  up to that: listed with frame, time, box and score, but not a failure.

Why two tiers. The service masks everything CenterFace scores 0.12 or more (lower for small
faces), because a false box only masks a few more pixels. At that score the detector also
fires on what a redacted crowd is full of: the neck and collar under a mask, hair above one, an
ear beside one, heads seen from behind. Measured on the 348 WIDER FACE validation images in
../shared/data/widerface-dev (crowds, 4891 faces), redacted by `edgeblur image` with its
defaults (JPEG), and on the same images unmasked (as a pipeline that failed would leave them):

    score at least   unmasked faces found, by height (px)      redacted images: findings
                     <16    16-32  32-64  >=64   all            (files with one)
    0.12             0.65   0.93   0.96   0.99   0.82           757 (179 of 348)
    0.3              0.32   0.80   0.91   0.97   0.64            44  (36)
    0.4              0.20   0.73   0.88   0.96   0.56            15  (14)
    0.5              0.08   0.62   0.83   0.94   0.47             5   (5)

Every redacted finding at 0.4 or more was looked at: necks and collars under masks, heads
partly masked, a profile's ear and cheek beside a mask; no face with visible eyes. At 0.5 the
audit still finds 94 % of faces 64 px tall or more and 83 % of those 32-64 px in single
images; a face left visible in video is seen over many frames, so a pipeline that failed is
caught at once (the unmasked walking clip fails in every frame). In a crowd recorded live,
hair over the mask of a head looking down still scored 0.50-0.60 now and then (see
bench/rtsp_walking.py, which also checks recordings against their source). `threshold`
lowers the bar for a stricter sweep (more findings to look at); `review_threshold` widens or
narrows the review list.

Faces under 16 px are hardly recognisable and are found far less at full resolution; `upscale`
2 searches them in tiles of the frame enlarged twice.

Masks are not faces. The detector also fires on the head shape around a mask, so a box whose
eyes look masked (a third of its upper half, or most of the band where eyes sit) is counted
separately as a masked face, in neither tier (edge.maskrule: MASKED_EYES_SHARE and
MASKED_EYE_ROWS_SHARE).
"Masked" is judged on the pixels, after H.264 or JPEG: strong noise without the correlation
between neighbouring pixels that camera images have (the noise fill), or flat colour (the solid
fill, fail-closed grey frames). Blurred and pixelated faces are still reported when the
detector finds them: those methods are the weak ones.

The report names each file, how many frames were checked, and every frame where a face is still
detectable (frame index, time, box in pixels, score). Exit code 0 only when every file was read
to the end and no face was found; 1 when a face was found or a file could not be read (the other
files are still checked). Directories are searched recursively; hidden files (such as the
`.name.part.mp4` of a recording still being written) are skipped there. It never writes pixels
of its own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import numpy as np

from edge.detectors.base import Detector
from edge.errors import ConfigError, EdgeblurError, MediaError
from edge.maskrule import split_masked
from edge.types import Detections

if TYPE_CHECKING:
    from edge.detectors.registry import DetectorConfig
    from edge.models import ModelStore

# OpenCV, PyAV and the detectors are imported when a check runs, so that building the command
# line (add_arguments) stays quick on a Raspberry Pi.

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".ts"})
# A finding scoring this or more is a face still visible: the audit fails (table above).
FACE_THRESHOLD = 0.5
# The human-readable report lists this many frames per file; --json lists them all.
FRAMES_SHOWN = 10

Kind = Literal["video", "image"]


@dataclass(frozen=True)
class FaceFinding:
    """A face still detectable in a checked file. box: x1, y1, x2, y2 in image pixels."""

    frame: int  # 0-based frame index (always 0 for an image)
    time_s: float  # presentation time of the frame in seconds (0 for an image)
    box: tuple[float, float, float, float]
    score: float


@dataclass
class FileReport:
    path: Path
    kind: Kind | None  # None when the path could not be classified (missing, unknown type)
    frames_checked: int = 0
    faces: list[FaceFinding] = field(default_factory=list)
    review: list[FaceFinding] = field(default_factory=list)  # below the face threshold
    masked_faces: int = 0  # detections on masks: evidence the check sees heads, not leaks
    error: str | None = None  # why the file could not be (fully) checked

    @property
    def status(self) -> Literal["clean", "faces", "unreadable"]:
        if self.error is not None:
            return "unreadable"
        return "faces" if self.faces else "clean"

    @property
    def frames_with_faces(self) -> list[int]:
        return sorted({finding.frame for finding in self.faces})

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "status": self.status,
            "frames_checked": self.frames_checked,
            "frames_with_faces": len(self.frames_with_faces),
            "masked_faces": self.masked_faces,
            "error": self.error,
            "faces": [asdict(finding) for finding in self.faces],
            "review": [asdict(finding) for finding in self.review],
        }


@dataclass(frozen=True)
class VerifySettings:
    """How thoroughly to search. Anything but the defaults makes a partial audit, and the
    report says so."""

    max_frames: int | None = None  # only the first N frames of each video
    every: int = 1  # only every k-th frame
    upscale: float = 1.0  # > 1: also search the frame enlarged by this factor, in tiles
    face_threshold: float = FACE_THRESHOLD  # a finding scoring this or more fails the audit

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames {self.max_frames}: must be at least 1")
        if self.every < 1:
            raise ConfigError(f"every {self.every}: must be at least 1")
        if not 1.0 <= self.upscale <= 4.0:
            raise ConfigError(f"upscale {self.upscale:g}: must be from 1 to 4")
        if not 0.0 < self.face_threshold <= 1.0:
            raise ConfigError(f"threshold {self.face_threshold:g}: must be above 0 and at most 1")


def reference_config(
    threshold: float | None = None, detector_config: DetectorConfig | None = None
) -> DetectorConfig:
    """The detector settings an audit uses: `detector_config` (default CenterFace) at the
    frame's full resolution, each pass in one piece, with no face-size limits, its scales
    kept, and one `threshold` for every face size, the lowest score the audit lists: by
    default the service's default `threshold` for that detector (0.12 for CenterFace), as
    sensitive as the service for faces it sees 64 px tall or more.

    One threshold, not the service's size-dependent one: the service goes down to its
    `small_face_threshold` (0.05) for faces the network sees 16 px tall, where compression
    alone moves texture across the threshold; auditing there gives false alarms rather than
    leaks (measurements in the module docstring). Tiny faces are searched with
    VerifySettings.upscale instead. Raises ConfigError for a threshold outside (0, 1]."""
    from pydantic import TypeAdapter, ValidationError

    from edge.configfile import format_validation_error
    from edge.detectors.centerface import CenterFaceConfig
    from edge.detectors.registry import DetectorConfig

    base = detector_config if detector_config is not None else CenterFaceConfig()
    if threshold is None:
        threshold = type(base)().threshold
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"threshold {threshold:g}: must be above 0 and at most 1")
    data = base.model_dump()
    data.update(
        threshold=threshold,
        small_face_threshold=None,
        min_face_px=0.0,
        max_face_px=None,
        input_long_side=None,
        max_input_pixels=None,  # the whole frame: the audit must not share the service's seams
    )
    try:
        return TypeAdapter(DetectorConfig).validate_python(data)
    except ValidationError as error:
        raise ConfigError(f"reference detector: {format_validation_error(error)}") from None


class ReferenceDetector(Detector):
    """The audit's detector: `config` on the whole frame (see reference_config) and, with
    upscale > 1, the same model again on the frame enlarged `upscale` times, in tiles of about
    the frame's own size so memory stays near that of one full-resolution pass. Boxes of all
    passes are merged; masked or not, every box is returned (see split_masked)."""

    name = "reference"

    def __init__(self, passes: list[Detector], nms_iou: float) -> None:
        self._passes = passes
        self._nms_iou = nms_iou

    @classmethod
    def build(cls, config: DetectorConfig, upscale: float, store: ModelStore) -> ReferenceDetector:
        """Raises ModelError or DetectorError as build_detector does."""
        from edge.detectors.registry import build_detector

        passes = [build_detector(config, store)]
        if upscale > 1.0:
            enlarged = config.model_copy(update={"scales": [upscale], "tiles": math.ceil(upscale)})
            try:
                passes.append(build_detector(enlarged, store))
            except BaseException:
                passes[0].close()
                raise
        return cls(passes, config.nms_iou)

    def detect(self, image: np.ndarray) -> Detections:
        from edge.detectors.multiscale import nms

        found = Detections.merge([detector.detect(image) for detector in self._passes])
        if len(self._passes) > 1:
            found = found.select(nms(found.xyxy, found.score, self._nms_iou))
        return found

    def close(self) -> None:
        for detector in self._passes:
            detector.close()


def collect_files(paths: Iterable[Path]) -> list[FileReport]:
    """Expand the arguments, in order, into one empty report per file to check. Arguments that
    cannot be checked at all come back with their error set: missing paths, files of an
    unknown type, directories holding no video or image (an audit of nothing must not pass)."""
    found: list[FileReport] = []
    for argument in paths:
        argument = Path(argument)
        if argument.is_dir():
            inside = [FileReport(path, kind) for path, kind in _media_under(argument)]
            found.extend(
                inside or [FileReport(argument, None, error="no video or image files in it")]
            )
        elif argument.is_file():
            kind = _kind(argument)
            error = None if kind else "not a video or image file (judged by its suffix)"
            found.append(FileReport(argument, kind, error=error))
        else:
            found.append(FileReport(argument, None, error="no such file or directory"))
    return found


def _kind(path: Path) -> Kind | None:
    from edge.imagefiles import IMAGE_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return None


def _media_under(directory: Path) -> Iterator[tuple[Path, Kind]]:
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(root) / name
            kind = _kind(path)
            if kind is not None:
                yield path, kind


def _check_frame(
    report: FileReport,
    image: np.ndarray,
    index: int,
    time_s: float,
    detector: Detector,
    face_threshold: float,
) -> None:
    """Search one frame and add what was found to `report`: faces at `face_threshold` or
    more, the rest for review."""
    visible, masked = split_masked(image, detector.detect(image))
    report.masked_faces += len(masked)
    for (x1, y1, x2, y2), score in zip(visible.xyxy.tolist(), visible.score.tolist(), strict=True):
        finding = FaceFinding(
            index,
            round(time_s, 3),
            (round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)),
            round(score, 3),
        )
        (report.faces if score >= face_threshold else report.review).append(finding)
    report.frames_checked += 1


def check_file(
    path: Path, kind: Kind, detector: Detector, settings: VerifySettings | None = None
) -> FileReport:
    """Search one file. A decode or detection failure ends the check of that file and is
    reported with the frames checked up to there; it never raises for a bad file."""
    from edge.imagefiles import read_image
    from edge.media import probe, read_frames

    settings = settings or VerifySettings()
    report = FileReport(path, kind)
    try:
        if kind == "image":
            _check_frame(report, read_image(path), 0, 0.0, detector, settings.face_threshold)
            return report
        declared = probe(path).frames
        decoded = 0
        broken = ""  # why decoding stopped partway: a cut file's last packet, usually
        frames = read_frames(path)
        try:
            for frame in frames:
                if settings.max_frames is not None and frame.index >= settings.max_frames:
                    break
                decoded += 1
                if frame.index % settings.every == 0:
                    _check_frame(
                        report,
                        frame.image,
                        frame.index,
                        frame.timestamp,
                        detector,
                        settings.face_threshold,
                    )
        except MediaError as error:
            if decoded == 0:
                raise
            broken = f" (then: {_without_path(str(error), path)})"
        finally:
            frames.close()
        if report.frames_checked == 0:
            report.error = "no video frames could be decoded"
        elif broken or (settings.max_frames is None and decoded < declared):
            # Whether a cut file ends in a decoding error or just ends depends on where the
            # cut fell; either way the frames after it were never checked.
            of_declared = f" of the {declared} frames it declares" if declared else " frames"
            report.error = f"only {decoded}{of_declared} could be decoded{broken}"
    except EdgeblurError as error:  # MediaError (corrupt, truncated), DetectorError
        report.error = _without_path(str(error), path)
    return report


def _without_path(message: str, path: Path) -> str:
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def verify_files(
    paths: Iterable[Path], detector: Detector, settings: VerifySettings | None = None
) -> list[FileReport]:
    """Check every video and image under `paths` with `detector`, in argument order."""
    return [
        check_file(job.path, job.kind, detector, settings)
        if job.kind is not None and job.error is None
        else job
        for job in collect_files(paths)
    ]


def exit_code(reports: list[FileReport]) -> int:
    """0 when there was something to check and every file is clean; 1 otherwise."""
    return 0 if reports and all(report.status == "clean" for report in reports) else 1


def _header(config: DetectorConfig, settings: VerifySettings) -> list[str]:
    service = type(config)()
    service_threshold = f"{service.threshold:g}"
    if service.small_face_threshold is not None:
        service_threshold += f", down to {service.small_face_threshold:g} for small faces"
    scales = "/".join(f"{scale:g}" for scale in config.scales)
    search = f"whole frame at full resolution (scales {scales})"
    if settings.upscale > 1:
        search += f" and enlarged {settings.upscale:g}x in tiles"
    lines = [
        f"reference detector: {config.type} on the {search}, every face size; a face scores "
        f"{settings.face_threshold:g} or more, findings from {config.threshold:g} are listed "
        f"for review (the service masks from {service_threshold})"
    ]
    if config.threshold > service.threshold:
        lines.append(
            f"warning: nothing under {config.threshold:g} is listed, above the service's "
            f"{service.threshold:g}: faces the service would have masked may not be reported"
        )
    if settings.every > 1 or settings.max_frames is not None:
        sample = f"every {settings.every}th frame" if settings.every > 1 else "every frame"
        if settings.max_frames is not None:
            sample += f" of the first {settings.max_frames} of each video"
        lines.append(f"partial audit: {sample}")
    return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _file_line(report: FileReport) -> str:
    if report.kind == "video":
        checked = f"{_count(report.frames_checked, 'frame')} checked"
    else:
        checked = "checked" if report.frames_checked else "not checked"
    if report.status == "unreadable":
        return f"ERROR  {report.path}: {report.error} ({checked})"
    masked = f", {_count(report.masked_faces, 'masked face')} seen" if report.masked_faces else ""
    if report.review:
        frames = len({finding.frame for finding in report.review})
        where = f" in {_count(frames, 'frame')}" if report.kind == "video" else ""
        masked += f", {_count(len(report.review), 'finding')} to review{where}"
    if report.status == "clean":
        return f"OK     {report.path}: {checked}, no face found{masked}"
    where = ""
    if report.kind == "video":
        where = f" in {_count(len(report.frames_with_faces), 'frame')}"
    return f"FACES  {report.path}: {checked}, faces visible{where}{masked}"


def format_report(
    reports: list[FileReport], config: DetectorConfig, settings: VerifySettings | None = None
) -> str:
    """The human-readable report: the settings, one block per file, then the verdict."""
    lines = _header(config, settings or VerifySettings())
    for report in reports:
        lines.append(_file_line(report))
        shown = set(report.frames_with_faces[:FRAMES_SHOWN])
        for finding in report.faces:
            if finding.frame not in shown:
                continue
            x1, y1, x2, y2 = finding.box
            place = ""
            if report.kind == "video":
                place = f"frame {finding.frame} ({finding.time_s:.2f} s): "
            lines.append(
                f"       {place}face at x {x1:.0f}-{x2:.0f}, y {y1:.0f}-{y2:.0f} "
                f"({x2 - x1:.0f}x{y2 - y1:.0f} px), score {finding.score:.2f}"
            )
        hidden = len(report.frames_with_faces) - len(shown)
        if hidden > 0:
            lines.append(f"       ... and {hidden} more frames with faces (--json lists them all)")
    counts = {s: sum(r.status == s for r in reports) for s in ("clean", "faces", "unreadable")}
    verdict = "PASS" if exit_code(reports) == 0 else "FAIL"
    lines.append(
        f"{verdict}: {len(reports)} checked, {counts['clean']} clean, {counts['faces']} with "
        f"visible faces, {counts['unreadable']} unreadable"
    )
    return "\n".join(lines)


def report_json(
    reports: list[FileReport], config: DetectorConfig, settings: VerifySettings | None = None
) -> dict[str, Any]:
    return {
        "detector": config.model_dump(mode="json"),
        "settings": asdict(settings or VerifySettings()),
        "passed": exit_code(reports) == 0,
        "files": [report.to_json() for report in reports],
    }


def run_verify(
    paths: list[Path],
    review_threshold: float | None = None,
    detector_config: DetectorConfig | None = None,
    cache_dir: Path | None = None,
    *,
    settings: VerifySettings | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    """Check `paths`, print the report to `out` (default stdout), return the exit code.

    review_threshold: the lowest score listed (None: the service's default threshold for the
    detector; see reference_config); findings scoring settings.face_threshold or more are faces.
    Raises ConfigError for bad settings and ModelError (naming `edgeblur models fetch`) when
    the reference model is missing: an audit that could not run must not look like a pass.
    """
    from edge.models import ModelStore

    settings = settings or VerifySettings()
    config = reference_config(review_threshold, detector_config)
    if config.threshold > settings.face_threshold:  # the search must reach the face threshold
        config = reference_config(settings.face_threshold, detector_config)
    detector = ReferenceDetector.build(config, settings.upscale, ModelStore(cache_dir))
    try:
        reports = verify_files(paths, detector, settings)
    finally:
        detector.close()
    stream = out if out is not None else sys.stdout
    if as_json:
        json.dump(report_json(reports, config, settings), stream, indent=2)
        stream.write("\n")
    else:
        print(format_report(reports, config, settings), file=stream)
    return exit_code(reports)


# Spelled out so that building the command line imports no detector code; a test keeps the
# numbers equal to CenterFaceConfig's defaults.
DESCRIPTION = (
    "Search recordings and images for faces that are still visible, and list every frame with "
    "one. The reference is the service's detector on the whole frame at full resolution, for "
    "every face size. A finding scoring 0.5 or more is a face and fails the audit; findings "
    "from the service's own threshold (centerface: 0.12) up to that are listed for review: in "
    "crowds the detector also scores necks under masks, hair and ears beside them and heads "
    "seen from behind as faces at those scores. The service lowers its threshold to 0.05 for "
    "small faces to mask more; search those with --upscale. Exit code 0 only when every file "
    "was read to the end and no face was found."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options and description of `edgeblur verify`; `run(args)` is the handler."""
    parser.description = DESCRIPTION
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="video or image file, or directory"
    )
    parser.add_argument(
        "--detector",
        choices=("centerface", "yunet", "blazeface"),
        default="centerface",
        help="reference detector (default centerface)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=FACE_THRESHOLD,
        help="score at or above which a finding is a face and fails the audit, 0..1 (default "
        "%(default)s). Lower makes a stricter sweep that also fails on things that are not faces",
    )
    parser.add_argument(
        "--review-threshold",
        type=float,
        help="lowest score listed for review, 0..1 (default: the service's default threshold "
        "for the detector, 0.12 for centerface); above the service's it hides what the service "
        "masks",
    )
    parser.add_argument(
        "--upscale",
        type=float,
        default=1.0,
        metavar="F",
        help="also search each frame enlarged F times, in tiles, for faces under about 16 px, "
        "where the default finds one in five fewer than the service masks (1 = off, the "
        "default; 2 finds most of them, reports more that is not a face, and takes about five "
        "times as long)",
    )
    parser.add_argument(
        "--max-frames", type=int, metavar="N", help="check only the first N frames of each video"
    )
    parser.add_argument(
        "--every", type=int, default=1, metavar="K", help="check every K-th frame (default 1: all)"
    )
    parser.add_argument("--cache-dir", type=Path, metavar="DIR", help="model cache directory")
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="use this config's models.cache_dir"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable report on stdout")


def run(args: argparse.Namespace) -> int:
    """Handler for the options of add_arguments. Raises ConfigError for bad option values."""
    from pydantic import TypeAdapter

    from edge.configfile import model_cache_dir
    from edge.detectors.registry import DetectorConfig

    settings = VerifySettings(
        max_frames=args.max_frames,
        every=args.every,
        upscale=args.upscale,
        face_threshold=args.threshold,
    )
    config = TypeAdapter(DetectorConfig).validate_python({"type": args.detector})
    return run_verify(
        args.paths,
        args.review_threshold,
        config,
        model_cache_dir(args.cache_dir, args.config),
        settings=settings,
        as_json=args.json,
    )
