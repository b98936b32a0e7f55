"""Faces left visible in a redacted video: every face a strong reference detector finds in an
ORIGINAL frame is looked up in the same frame of the output, and counts as leaked when too
much of it came through unchanged.

    .venv/bin/python bench/video_leaks.py CLIP OUTPUT [--threshold 0.5] [--long-side N]
                                          [--tiles N] [--tolerance 8] [--max-frames N]
    .venv/bin/python bench/video_leaks.py --all [--out-dir DIR] [...] [-- EDGEBLUR_VIDEO_ARGS...]

The reference is CenterFace at a high confidence (0.5 by default, for faces of every size, so
what it reports is a face), with no face-size limits, its default passes (the frame at full
resolution and at half, for close-ups); --long-side scales frames first (e.g. 1280 enlarges
the 480x270 clips so their small faces are found), --tiles N runs each pass in N x N tiles.

A face-frame (one face in one frame) is leaked when at least 30 % of its box's pixels differ
by less than --tolerance grey levels between original and output. Faces are linked across
frames by IoU to report the longest run of leaked frames of one face.

--all runs `edgeblur video` (default settings, or the arguments after `--`, e.g.
`-- --detect-every 8 --lookahead-frames 16`) on every shared clip with faces and prints one
table. Comparing needs the output to hold the same frames as the clip (edgeblur keeps them
all); outputs a pixel smaller (odd sizes) are compared on the common area.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice, zip_longest
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/video_leaks.py`

from bench._common import (
    DEFAULT_OUT,
    FACE_CLIPS,
    edgeblur_command,
    markdown_table,
    prepare_clip,
    run_child,
    shared_clip,
    split_edgeblur_args,
)
from edge.detectors.base import Detector
from edge.media import probe, read_frames
from edge.tracking.tracker import greedy_match, iou_matrix
from edge.types import Detections, Frame

# Per-pixel tolerance on grey (0-255) between an original frame and the output decoded from
# edgeblur's H.264 (crf 23). It must pass coding noise on unmasked faces yet rarely let a
# masked pixel match by chance (where the noise fill's mean colour sits near the face's own:
# smooth, dark or blurry faces). Measured with this reference on the six --all clips (first
# 6 frames each, 120 face boxes) and on 209 boxes of the walking clip: an unmasked face keeps
# 54 % (small faces of the 270p classroom clip, worst) to 80-93 % (others' worst) of its pixels
# within 8 levels, a noise-masked one 7-28 % (worst per clip), the solid fill 26 % at most.
# At 12 levels masked faces reach 34-42 % on three clips, over the 30 % line; at 6 unmasked
# classroom faces fall to 42 %. Pixelate and blur keep local means and match more often
# (median 31 % and 14 % at 8 levels): leaks counted for them are partly chance.
TOLERANCE = 8
REFERENCE_THRESHOLD = 0.5  # the reference's confidence: what it reports is a face
LEAK_FRACTION = 0.30  # a face-frame with this share of its pixels unchanged is leaked
LINK_IOU = 0.3  # a face in the next frame overlapping this much is the same face
LINK_MAX_GAP = 2  # frames a face may go undetected by the reference and keep its identity


def unchanged_fraction(
    diff: np.ndarray, box: np.ndarray, tolerance: int = TOLERANCE
) -> float | None:
    """Share of the pixels inside `box` (x1, y1, x2, y2 in pixels, float) where `diff`
    (uint8 (H, W): |original - output| on grey) is below `tolerance`. The box is rounded
    outwards and clipped to the image; None when nothing of it is inside."""
    height, width = diff.shape
    x1, y1 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x2, y2 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    if x2 <= x1 or y2 <= y1:
        return None
    return float(np.mean(diff[y1:y2, x1:x2] < tolerance))


def judge_faces(
    original: np.ndarray, output: np.ndarray, xyxy: np.ndarray, tolerance: int = TOLERANCE
) -> tuple[np.ndarray, np.ndarray]:
    """(inside, leaked), bool per face box of `original`: inside when part of the box lies in
    the area both images share; leaked when LEAK_FRACTION of it came through unchanged."""
    if not len(xyxy):
        return np.zeros(0, bool), np.zeros(0, bool)
    diff = grey_diff(original, output)
    fractions = [unchanged_fraction(diff, box, tolerance) for box in xyxy]
    inside = np.array([f is not None for f in fractions], bool)
    leaked = np.array([f is not None and f >= LEAK_FRACTION for f in fractions], bool)
    return inside, leaked


def grey_diff(original: np.ndarray, output: np.ndarray) -> np.ndarray:
    """|original - output| on grey, uint8 (H, W), over the area both BGR images share."""
    height = min(original.shape[0], output.shape[0])
    width = min(original.shape[1], output.shape[1])
    return cv2.absdiff(
        cv2.cvtColor(original[:height, :width], cv2.COLOR_BGR2GRAY),
        cv2.cvtColor(output[:height, :width], cv2.COLOR_BGR2GRAY),
    )


@dataclass
class _Face:
    box: np.ndarray  # float32 (4,), where it was last seen
    last_seen: int  # frame index
    run: int = 0  # leaked sightings since its last unleaked one
    run_start: int = 0  # frame index where that run began


@dataclass
class LeakTally:
    """Counts face-frames and leaked face-frames, linking faces across frames by IoU.

    A run is a face's leaked sightings with no unleaked sighting between; frames where the
    reference missed the face (at most LINK_MAX_GAP in a row) neither break nor lengthen it.
    Frames must be added in increasing index order."""

    face_frames: int = 0
    leaked_frames: int = 0
    longest_run: int = 0
    longest_run_frames: tuple[int, int] | None = None  # first and last frame of that run
    _faces: list[_Face] = field(default_factory=list)

    def add(self, index: int, xyxy: np.ndarray, leaked: np.ndarray) -> None:
        """One frame: its face boxes float (n, 4) and whether each leaked, bool (n,)."""
        xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        self._faces = [f for f in self._faces if index - f.last_seen <= LINK_MAX_GAP + 1]
        known = np.array([f.box for f in self._faces], np.float32).reshape(-1, 4)
        matched = {col: row for row, col in greedy_match(iou_matrix(known, xyxy), LINK_IOU)}
        faces = list(self._faces)
        for column, box in enumerate(xyxy):
            if column in matched:
                face = faces[matched[column]]
            else:
                face = _Face(box, index)
                self._faces.append(face)
            face.box, face.last_seen = box, index
            self.face_frames += 1
            if not leaked[column]:
                face.run = 0
                continue
            self.leaked_frames += 1
            if face.run == 0:
                face.run_start = index
            face.run += 1
            if face.run > self.longest_run:
                self.longest_run = face.run
                self.longest_run_frames = (face.run_start, index)


@dataclass(frozen=True)
class ClipLeaks:
    clip: str
    frames: int
    fps: float
    tally: LeakTally


def paired_frames(
    original: Path, output: Path, max_frames: int | None
) -> Iterator[tuple[Frame, Frame]]:
    """Frames of both files side by side; exits if their counts differ, since frames could
    then not be matched by position."""
    pairs = zip_longest(read_frames(original), read_frames(output))
    for index, (before, after) in enumerate(islice(pairs, max_frames)):
        if before is None or after is None:
            longer = original if after is None else output
            sys.exit(f"error: {longer} has more frames than the other file (from frame "
                     f"{index}); the output must keep every frame of the clip")
        yield before, after


def assess(
    original: Path,
    output: Path,
    detect: Callable[[np.ndarray], Detections],
    *,
    tolerance: int = TOLERANCE,
    max_frames: int | None = None,
    label: str | None = None,
) -> ClipLeaks:
    """Check `output` against `original` frame by frame; `label` names the clip in reports
    (default: the original's file name)."""
    tally = LeakTally()
    frames = 0
    for before, after in paired_frames(original, output, max_frames):
        frames += 1
        boxes = detect(before.image)
        inside, leaked = judge_faces(before.image, after.image, boxes.xyxy, tolerance)
        tally.add(before.index, boxes.xyxy[inside], leaked[inside])
    return ClipLeaks(label or original.name, frames, probe(original).fps, tally)


def reference_detector(threshold: float, long_side: int | None, tiles: int) -> Detector:
    """CenterFace at `threshold` for faces of every size, no size limits, its default passes
    (the frame and half of it) each in one piece, on frames scaled to a `long_side` (None:
    native size), each pass in tiles x tiles tiles."""
    from edge.detectors.centerface import CenterFaceConfig
    from edge.detectors.registry import build_detector
    from edge.models import ModelStore

    # One threshold for every face size: the service's lower bar for small faces would let
    # background false positives in, and an unmasked background box counts as a leak.
    config = CenterFaceConfig(
        threshold=threshold,
        small_face_threshold=None,
        input_long_side=long_side,
        tiles=tiles,
        max_input_pixels=None,  # whole frames: no seams shared with the output it checks
    )
    return build_detector(config, ModelStore())


def report(results: list[ClipLeaks]) -> str:
    rows = []
    for result in results:
        tally = result.tally
        share = tally.leaked_frames / tally.face_frames if tally.face_frames else 0.0
        span = tally.longest_run_frames
        rows.append([
            result.clip,
            result.frames,
            tally.face_frames,
            tally.leaked_frames,
            f"{100 * share:.1f} %",
            tally.longest_run,
            f"{tally.longest_run / result.fps:.2f}" if result.fps else "-",
            f"{span[0]}-{span[1]}" if span else "-",
        ])
    header = ["clip", "frames", "face-frames", "leaked", "leaked share", "longest run",
              "run s", "run frames"]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    args_here, edgeblur_args = split_edgeblur_args(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", nargs="?", type=Path, help="original video")
    parser.add_argument("output", nargs="?", type=Path, help="its redacted version")
    parser.add_argument("--all", action="store_true",
                        help="run `edgeblur video` on every shared clip with faces and check each")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT / "video_leaks",
                        help="outputs and logs of --all (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=REFERENCE_THRESHOLD,
                        help="reference detector confidence (default %(default)s)")
    parser.add_argument("--long-side", type=int, metavar="N",
                        help="scale original frames to this long side for the reference "
                        "(larger than the clip's finds smaller faces; default: native size)")
    parser.add_argument("--tiles", type=int, default=1, metavar="N",
                        help="run the reference in N x N overlapping tiles (bounds its memory "
                        "with a large --long-side; default 1)")
    parser.add_argument("--tolerance", type=int, default=TOLERANCE,
                        help="grey levels a pixel may change and count as unchanged "
                        "(default %(default)s)")
    parser.add_argument("--max-frames", type=int, metavar="N",
                        help="check only the first N frames (quick smoke runs)")
    args = parser.parse_args(args_here)
    if edgeblur_args and not args.all:
        parser.error("arguments after -- are for --all")
    if args.all == (args.clip is not None) or (args.clip is None) != (args.output is None):
        parser.error("give either CLIP and OUTPUT, or --all")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")
    if not 0.0 < args.threshold <= 1.0:
        parser.error("--threshold must be in (0, 1]")
    if not 1 <= args.tiles <= 8 or (args.long_side is not None and args.long_side < 32):
        parser.error("--tiles must be 1 to 8, --long-side at least 32")

    if args.all:
        clips = [shared_clip(name) for name in FACE_CLIPS]  # exits if ../shared is missing
    else:
        for path in (args.clip, args.output):
            if not path.is_file():
                parser.error(f"{path}: no such file")
    detector = reference_detector(args.threshold, args.long_side, args.tiles)
    detect = detector.detect

    results = []
    if args.all:
        out_dir = args.out_dir.resolve()
        for shared in clips:
            clip = prepare_clip(shared, out_dir, max_frames=args.max_frames)
            output = out_dir / f"{clip.stem}.edgeblur.mp4"
            print(f"{shared.name}: edgeblur video ...", file=sys.stderr, flush=True)
            run_child([*edgeblur_command(), "video", *edgeblur_args, clip, "--out", output],
                      out_dir / f"{clip.stem}.edgeblur.log").check()
            print(f"{shared.name}: checking ...", file=sys.stderr, flush=True)
            results.append(assess(clip, output, detect, tolerance=args.tolerance,
                                  max_frames=args.max_frames, label=shared.name))
    else:
        results.append(assess(args.clip, args.output, detect, tolerance=args.tolerance,
                              max_frames=args.max_frames))

    tiled = f" in {args.tiles}x{args.tiles} tiles" if args.tiles > 1 else ""
    scaled = f" scaled to a {args.long_side} px long side" if args.long_side else " at native size"
    print(f"\nreference: CenterFace at confidence {args.threshold:g}, frames{scaled}{tiled}, "
          "passes at 1 and 0.5; "
          f"leaked = at least {LEAK_FRACTION:.0%} of a face box within {args.tolerance} grey "
          "levels of the original; runs link faces across frames by IoU.\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
