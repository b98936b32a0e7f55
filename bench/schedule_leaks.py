"""Faces left visible by the look-ahead masks when a camera keeps some frames and searches some
of those: the detection schedule replayed offline, so the tracker and the look-ahead can be
judged without the noise of a live run.

    .venv/bin/python bench/schedule_leaks.py [--clip FILE] [--loops N] [--long-side N]
                                             [--schedules K1xS1,K2xS2,...]

Every frame of each clip (by default every shared clip with faces) is searched once with the
product's detector (at most --long-side pixels long, as a camera's `detect_long_side`; native
by default) and once with the reference (CenterFace at 0.5, as bench/video_leaks.py). Each
schedule KxS keeps every K-th frame and searches every S-th kept frame (and the last), so the
searches lie K x S frames apart, and runs the kept frames through the look-ahead
(edge.tracking.TemporalMasker) and the redactor, in memory (no encoding). A face-frame is
leaked when 30 % of the reference's box is unchanged (bench/video_leaks.judge_faces). Each
schedule is run at two phases (starting at frame 0 and 1). `--loops N` plays each clip N times
in a row, as bench/live.py's looped cameras do: at each loop's cut every face jumps back.

Prints one markdown table: per clip and schedule, the searches' spacing in ms,
"leaked / face-frames" per phase and the share of the frames' pixels masked (mean of both
phases: what the masks cost in picture, and in bits to encode). Nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/schedule_leaks.py`

import numpy as np

from bench._common import FACE_CLIPS, markdown_table, shared_clip
from bench.video_leaks import REFERENCE_THRESHOLD, judge_faces, reference_detector
from edge.config import EdgeblurConfig
from edge.detectors.centerface import CenterFaceConfig
from edge.detectors.registry import build_detector
from edge.media import probe, read_frames
from edge.models import ModelStore
from edge.redact import Redactor
from edge.tracking import TemporalMasker
from edge.tracking.settings import TrackingConfig
from edge.types import Detections, Frame

DEFAULT_SCHEDULES = "1x4,1x8,2x4,2x5,1x10"


def schedule(text: str) -> list[tuple[int, int]]:
    """'2x4,1x8' -> [(2, 4), (1, 8)]: keep every K-th frame, search every S-th kept one."""
    pairs = []
    for part in text.split(","):
        keep, _, search = part.strip().partition("x")
        if not (keep.isdigit() and search.isdigit() and int(keep) >= 1 and int(search) >= 1):
            raise argparse.ArgumentTypeError(f"{part!r}: expected KxS, e.g. 2x4")
        pairs.append((int(keep), int(search)))
    return pairs


def replay(
    frames: list[Frame],
    found: list[Detections],
    reference: list[Detections],
    keep: int,
    search: int,
    phase: int,
) -> tuple[int, int, float]:
    """(leaked, face-frames, share of the pixels masked) of one schedule over `frames`
    (found/reference: per frame)."""
    redactor = Redactor(EdgeblurConfig.model_validate({}).redaction)
    tracking = TrackingConfig(lookahead_frames=search - 1, detect_every=search)
    masker = TemporalMasker(tracking)
    kept = list(range(phase, len(frames), keep))
    released: list[tuple[Frame, Detections]] = []
    for n, i in enumerate(kept):
        searched = n % search == 0 or n == len(kept) - 1
        released += masker.push(frames[i], found[i] if searched else None)
    released += masker.flush()
    leaked = faces = 0
    masked = 0.0
    for frame, boxes in released:
        redacted = redactor.redact(frame, boxes)
        masked += float(np.any(redacted.image != frame.image, axis=2).mean())
        truth = reference[frame.index]
        inside, leaked_faces = judge_faces(frame.image, redacted.image, truth.xyxy)
        faces += int(inside.sum())
        leaked += int(leaked_faces[inside].sum())
    return leaked, faces, masked / max(1, len(released))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, action="append",
                        help="a clip of your own (repeatable); default: the shared face clips")
    parser.add_argument("--loops", type=int, default=1, metavar="N",
                        help="play each clip N times in a row (default 1)")
    parser.add_argument("--long-side", type=int, metavar="N",
                        help="search frames at most N pixels long (default: native)")
    parser.add_argument("--schedules", type=schedule, default=schedule(DEFAULT_SCHEDULES),
                        help=f"KxS list (default {DEFAULT_SCHEDULES})")
    args = parser.parse_args(argv)
    if args.loops < 1:
        parser.error("--loops must be at least 1")
    clips = args.clip or [shared_clip(name) for name in FACE_CLIPS]
    detector = build_detector(CenterFaceConfig(max_long_side=args.long_side), ModelStore())
    reference = reference_detector(REFERENCE_THRESHOLD, None, 1)
    rows = []
    for clip in clips:
        print(f"{clip.name}: searching every frame ...", file=sys.stderr, flush=True)
        fps = probe(clip).fps
        once = list(read_frames(clip))
        found_once = [detector.detect(frame.image) for frame in once]
        truth_once = [reference.detect(frame.image) for frame in once]
        n = len(once)
        frames = [replace(once[i % n], index=i, timestamp=i / fps) for i in range(n * args.loops)]
        found = [found_once[i % n] for i in range(len(frames))]
        truth = [truth_once[i % n] for i in range(len(frames))]
        for keep, search in args.schedules:
            results = [replay(frames, found, truth, keep, search, phase) for phase in (0, 1)]
            rows.append([
                clip.name, f"{keep}x{search}", f"{keep * search / fps * 1000:.0f}",
                *(f"{leaked} / {faces}" for leaked, faces, _ in results),
                f"{100 * sum(masked for *_, masked in results) / len(results):.1f}",
            ])
    detector.close()
    reference.close()
    print(markdown_table(
        ["clip", "schedule", "search gap ms", "leaked (phase 0)", "leaked (phase 1)",
         "masked %"], rows
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
