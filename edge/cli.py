"""The `edgeblur` command: anonymise image and video files, manage models, run the service.

Exit codes: 0 success; 1 an input or output failed (each named on stderr); 2 bad command line
or configuration; 130 / 143 interrupted by SIGINT / SIGTERM (no partial output is left).

Heavy modules (OpenCV, PyAV, the detectors) are imported inside the subcommands, so `--help`
and `models list` answer quickly on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from edge.errors import ConfigError, EdgeblurError, ModelError
from edge.verify import add_arguments as verify_arguments

if TYPE_CHECKING:
    from edge.config import EdgeblurConfig
    from edge.detectors.base import Detector
    from edge.redact import Redactor

log = logging.getLogger("edgeblur")

# Spelled out (not read from the registry) so building the parser imports no detector code;
# pydantic still validates the choice against the registry.
DETECTORS = ("centerface", "yunet", "blazeface")
REDACTIONS = ("noise", "solid", "pixelate", "blur")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM so `finally` blocks remove partial output."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeblur",
        description="Irreversibly mask faces in images and videos, on this machine.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # Also accepted after the subcommand; SUPPRESS keeps a top-level -v from being reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )
    redaction = argparse.ArgumentParser(add_help=False)
    group = redaction.add_argument_group("detection and masking (override --config)")
    group.add_argument("--config", type=Path, metavar="FILE", help="YAML config file")
    group.add_argument("--detector", choices=DETECTORS, help="face detector (default centerface)")
    group.add_argument("--threshold", type=float, help="minimum face confidence, 0..1")
    group.add_argument(
        "--mask-scale", type=float, metavar="FACTOR", help="grow each face box by this factor"
    )
    group.add_argument(
        "--redact",
        choices=REDACTIONS,
        help="noise (default) and solid are irreversible; pixelate and blur are weaker",
    )
    group.add_argument("--shape", choices=("box", "ellipse"), help="mask shape (default box)")

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    image = commands.add_parser(
        "image",
        parents=[common, redaction],
        help="anonymise image files",
        description="Write an anonymised copy of each image, without any metadata. "
        "Directories are searched recursively; each output keeps its path relative to the "
        "directory given.",
    )
    image.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="file or directory")
    image.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    image.add_argument(
        "--format",
        choices=("png", "jpg"),
        default="png",
        help="png (default, lossless) or jpg (quality 95)",
    )
    image.set_defaults(run=_run_image)

    video = commands.add_parser(
        "video",
        parents=[common, redaction],
        help="anonymise a video file",
        description="Write an anonymised H.264 MP4 with the same frames and timing. Odd widths "
        "or heights lose their last column or row (H.264 4:2:0 needs even sizes).",
    )
    video.add_argument("input", type=Path, metavar="IN", help="video file")
    video.add_argument("--out", type=Path, required=True, metavar="OUT.mp4", help="output file")
    video.add_argument(
        "--keep-audio", action="store_true", help="copy the audio track (dropped by default)"
    )
    speed = video.add_argument_group("speed (override the config's video section)")
    speed.add_argument(
        "--detect-long-side",
        type=int,
        metavar="PX",
        help="detect on frames scaled down to this long side (default: native size; 960 halves "
        "1080p and runs about twice as fast, but misses faces under about 20 px)",
    )
    speed.add_argument(
        "--detect-every",
        type=int,
        metavar="K",
        help="run the detector on every K-th frame, look-ahead fills in between (default 4)",
    )
    speed.add_argument(
        "--lookahead-frames",
        type=int,
        metavar="N",
        help="frames held back to mask faces before they are first seen (default 8)",
    )
    speed.add_argument(
        "--second-look",
        action="store_true",
        default=None,
        help="search each detected frame again after masking, as the camera service does "
        "(off by default for files: about 1.5 times the run time)",
    )
    video.set_defaults(run=_run_video)

    models = commands.add_parser("models", parents=[common], help="list or fetch model files")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument("--cache-dir", type=Path, metavar="DIR", help="model cache directory")
    cache.add_argument(
        "--config", type=Path, metavar="FILE", help="use this config's models.cache_dir"
    )
    listing = model_commands.add_parser(
        "list", parents=[common, cache], help="show which models are cached"
    )
    listing.set_defaults(run=_run_models_list)
    fetch = model_commands.add_parser(
        "fetch", parents=[common, cache], help="download and verify models"
    )
    fetch.add_argument("names", nargs="*", metavar="NAME", help="models (default: the default set)")
    fetch.set_defaults(run=_run_models_fetch)

    verify = commands.add_parser(
        "verify",
        parents=[common],
        help="audit recordings and images: report every frame where a face is detectable",
    )
    verify.set_defaults(run=_run_verify)
    verify_arguments(verify)

    serve = commands.add_parser("serve", parents=[common], help="run the camera service")
    serve.add_argument("--config", type=Path, metavar="FILE", help="YAML config file")
    serve.add_argument("--host", help="address to bind (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default from config: 8080)")
    serve.set_defaults(run=_run_serve)
    return parser


def _run_verify(args: argparse.Namespace) -> int:
    from edge.verify import run

    return run(args)


def _config(args: argparse.Namespace) -> EdgeblurConfig:
    """The config file (or defaults) with the command-line options applied on top."""
    from edge.configfile import format_validation_error, load_config
    from edge.detectors.registry import DetectorConfig
    from edge.redact import RedactionConfig

    config = load_config(args.config)
    detector: dict[str, Any] = config.detector.model_dump()
    if args.detector is not None and args.detector != detector["type"]:
        # Another backend starts from its own defaults: thresholds do not carry across models.
        detector = {"type": args.detector}
    if args.threshold is not None:
        detector["threshold"] = args.threshold
    redaction: dict[str, Any] = config.redaction.model_dump()
    for key, value in (
        ("method", args.redact),
        ("shape", args.shape),
        ("mask_scale", args.mask_scale),
    ):
        if value is not None:
            redaction[key] = value
    try:
        return config.model_copy(
            update={
                "detector": TypeAdapter(DetectorConfig).validate_python(detector),
                "redaction": RedactionConfig.model_validate(redaction),
            }
        )
    except ValidationError as error:
        raise ConfigError(f"command-line options: {format_validation_error(error)}") from None


def _detector_and_redactor(config: EdgeblurConfig) -> tuple[Detector, Redactor]:
    from edge.detectors.registry import build_detector
    from edge.models import ModelStore
    from edge.redact import Redactor

    detector = build_detector(config.detector, ModelStore(config.models.cache_dir))
    log.debug("detector %s, redaction %s", config.detector, config.redaction)
    return detector, Redactor(config.redaction)


def _run_image(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edge.imagefiles import IMAGE_SUFFIXES, plan_images, redact_image_file

    config = _config(args)
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file; give a directory")
    plan = plan_images(args.inputs, args.out, args.format)
    failed = len(plan.missing)
    for path in plan.missing:
        log.error("%s: no such file or directory", path)
    if not plan.jobs:
        if failed:
            return 1
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise EdgeblurError(f"no images found (looking for {suffixes})")
    detector, redactor = _detector_and_redactor(config)
    started = time.monotonic()
    try:
        for job in tqdm(plan.jobs, unit="image"):
            try:
                faces = redact_image_file(job, detector, redactor, args.format)
            except EdgeblurError as error:
                failed += 1
                log.error("%s", error)
            else:
                log.debug("%s -> %s: %d face(s)", job.source, job.target, faces)
    finally:
        detector.close()
    seconds = time.monotonic() - started
    count = len(plan.jobs) + len(plan.missing)
    print(
        f"processed {count} images in {seconds:.1f} s "
        f"({1000 * seconds / count:.0f} ms/image), {failed} failed",
        file=sys.stderr,
    )
    return 1 if failed else 0


def _run_video(args: argparse.Namespace) -> int:
    from edge.videofiles import redact_video

    config = _config(args)
    if not args.input.is_file():
        raise EdgeblurError(f"{args.input}: no such file")
    if args.out.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"--out {args.out}: the output is an MP4 file; name it *.mp4")
    if args.out.exists() and args.out.samefile(args.input):
        raise ConfigError(f"--out {args.out} is the input; the original is never overwritten")
    config = _video_config(args, config)
    detector, redactor = _detector_and_redactor(config)
    try:
        summary = redact_video(
            args.input,
            args.out,
            detector,
            redactor,
            tracking=config.video.tracking(config.tracking),
            keep_audio=args.keep_audio,
        )
    finally:
        detector.close()
    per_frame = 1000 * summary.seconds / summary.frames
    print(
        f"processed {summary.frames} frames ({summary.width}x{summary.height}) in "
        f"{summary.seconds:.1f} s ({per_frame:.0f} ms/frame), {summary.faces} face regions "
        f"masked, {summary.fully_masked} frames fully masked after detection errors",
        file=sys.stderr,
    )
    return 0


def _video_config(args: argparse.Namespace, config: EdgeblurConfig) -> EdgeblurConfig:
    """`config` with the video options applied, and the detector set to the video's
    detect_long_side when the input is larger and the detector names no input size of its
    own (small clips are never enlarged)."""
    from edge.config import VideoConfig
    from edge.configfile import format_validation_error
    from edge.media import probe

    video: dict[str, Any] = config.video.model_dump()
    for key, value in (
        ("detect_long_side", args.detect_long_side),
        ("detect_every", args.detect_every),
        ("lookahead_frames", args.lookahead_frames),
        ("second_look", args.second_look),
    ):
        if value is not None:
            video[key] = None if value == 0 and key == "detect_long_side" else value
    try:
        settings = VideoConfig.model_validate(video)
    except ValidationError as error:
        raise ConfigError(f"command-line options: {format_validation_error(error)}") from None
    if settings.second_look and config.redaction.second_look_threshold is None:
        raise ConfigError(
            "video.second_look (--second-look) needs redaction.second_look_threshold, "
            "which the config sets to null"
        )
    config = config.model_copy(
        update={"video": settings, "redaction": settings.redaction(config.redaction)}
    )
    info = probe(args.input)
    long_side = settings.detect_long_side
    if (
        long_side is None
        or config.detector.input_long_side is not None
        or max(info.width, info.height) <= long_side
    ):
        return config
    detector = config.detector.model_copy(update={"input_long_side": long_side})
    return config.model_copy(update={"detector": detector})


def _run_models_list(args: argparse.Namespace) -> int:
    from edge.configfile import model_cache_dir
    from edge.models import ModelStore

    rows = [("NAME", "STATUS", "SIZE", "LICENCE", "PATH")]
    for status in ModelStore(model_cache_dir(args.cache_dir, args.config)).status():
        size = "-" if status.size is None else f"{status.size / 1e6:.1f} MB"
        rows.append((status.name, status.state, size, status.licence, str(status.path)))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for *cells, path in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)),
            path,
            sep="  ",
        )
    return 0


def _run_models_fetch(args: argparse.Namespace) -> int:
    from edge.configfile import model_cache_dir
    from edge.models import DEFAULT_MODELS, ModelStore

    store = ModelStore(model_cache_dir(args.cache_dir, args.config))
    failed = 0
    for name in args.names or DEFAULT_MODELS:
        try:
            path = store.fetch(name)
        except ModelError as error:  # try the others too; one unreachable source is common
            failed += 1
            log.error("%s", error)
        else:
            print(f"{name}: {path}")
    return 1 if failed else 0


def _run_serve(args: argparse.Namespace) -> int:
    from service.server import serve

    return serve(args.config, args.host, args.port)


def _setup_logging(verbose: bool) -> None:
    if not verbose:
        # OpenCV's own warnings (DNN backend notes) mean nothing to a technician; read before
        # cv2 is first imported, and an explicit setting in the environment wins.
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    handler = logging.StreamHandler(sys.stderr)
    if verbose:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_PlainFormatter("edgeblur: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().format(record)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    context: AbstractContextManager[object] = nullcontext()
    if args.command in ("image", "video"):
        from tqdm.contrib.logging import logging_redirect_tqdm

        signal.signal(signal.SIGTERM, _on_sigterm)
        context = logging_redirect_tqdm()  # log lines above the progress bar, not through it
    try:
        with context:
            return int(args.run(args))
    except ConfigError as error:
        print(f"edgeblur: error: {error}", file=sys.stderr)
        return 2
    except EdgeblurError as error:
        print(f"edgeblur: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. no permission to create --out, disk full
        print(f"edgeblur: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edgeblur: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except _Terminated:
        print("edgeblur: terminated; no partial output was kept", file=sys.stderr)
        return 143
