"""Face recall of the redaction itself: did the output change the pixels of every labelled face?

    .venv/bin/python bench/recall.py DATASET_DIR OUTPUT_DIR [--run [-- EDGEBLUR_IMAGE_ARGS...]]

DATASET_DIR is laid out like ../shared/data/widerface-dev: boxes.csv (image, x, y, w, h,
invalid, ... in pixels, top-left origin; image paths relative to DATASET_DIR) and images/.
OUTPUT_DIR holds the redacted copies at each image's path relative to DATASET_DIR/images with a
.png suffix: what `edgeblur image DATASET_DIR/images --out OUTPUT_DIR` writes. With --run this
script runs exactly that (the `edgeblur` beside this Python, any arguments after `--` added)
and times it; without --run it scores outputs already there.

A face counts when it is valid (invalid != 1) and at least MIN_FACE_PX tall. It is covered when
at least COVERED_SHARE of its box's pixels differ between input and output by at least
CHANGED_LEVELS in some channel: the detector found it AND the mask covers it. A missing or
unreadable output covers nothing. Collateral is the share of changed pixels among all pixels
outside every labelled box grown GROWTH times about its centre, over the whole data set: what
was masked that is not a face. ms/image is the wall time of the `edgeblur image` run (start-up
included) over the number of images, with its CPU time (user + system) beside it; the machine
must be otherwise quiet for the wall time to mean anything.

Prints markdown tables. Nothing here asserts a number; the figures live in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/recall.py`

from bench._common import markdown_table, split_edgeblur_args  # noqa: E402

MIN_FACE_PX = 10
COVERED_SHARE = 0.70
CHANGED_LEVELS = 3
GROWTH = 1.6
# (label, lowest height, first height above the bucket) in pixels.
BUCKETS = (("< 16 px", 0, 16), ("16-32 px", 16, 32), ("32-64 px", 32, 64), (">= 64 px", 64, None))


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    invalid: bool

    @property
    def counted(self) -> bool:
        return not self.invalid and self.h >= MIN_FACE_PX


@dataclass
class Tally:
    faces: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    covered: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    changed_outside: int = 0
    pixels_outside: int = 0
    images: int = 0
    missing_outputs: list[str] = field(default_factory=list)

    def add_face(self, height: int, covered: bool) -> None:
        for label, low, high in BUCKETS:
            if height >= low and (high is None or height < high):
                self.faces[label] += 1
                self.covered[label] += covered
        self.faces["all"] += 1
        self.covered["all"] += covered


def read_boxes(dataset: Path) -> dict[str, list[Box]]:
    """boxes.csv grouped by image path (relative to `dataset`), in file order."""
    table = dataset / "boxes.csv"
    if not table.is_file():
        sys.exit(f"error: {table} not found (expected a dataset laid out like widerface-dev)")
    boxes: dict[str, list[Box]] = defaultdict(list)
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            boxes[row["image"]].append(
                Box(
                    int(row["x"]),
                    int(row["y"]),
                    int(row["w"]),
                    int(row["h"]),
                    row.get("invalid", "0").strip() == "1",
                )
            )
    return boxes


def output_path(dataset: Path, image: str, output_dir: Path) -> Path:
    """Where `edgeblur image DATASET/images --out OUTPUT_DIR` writes `image`'s copy."""
    relative = (dataset / image).relative_to(dataset / "images")
    return output_dir / relative.with_suffix(".png")


def changed_mask(original: np.ndarray, redacted: np.ndarray) -> np.ndarray:
    """bool (H, W): pixels where some channel differs by at least CHANGED_LEVELS."""
    difference = cv2.absdiff(original, redacted)
    return difference.max(axis=2) >= CHANGED_LEVELS


def score_image(tally: Tally, boxes: list[Box], original: np.ndarray, changed: np.ndarray) -> None:
    height, width = original.shape[:2]
    near_face = np.zeros((height, width), bool)
    for box in boxes:
        cx, cy = box.x + box.w / 2, box.y + box.h / 2
        half_w, half_h = box.w * GROWTH / 2, box.h * GROWTH / 2
        near_face[
            max(0, math.floor(cy - half_h)) : max(0, math.ceil(cy + half_h)),
            max(0, math.floor(cx - half_w)) : max(0, math.ceil(cx + half_w)),
        ] = True
        if not box.counted:
            continue
        x1, y1 = max(0, box.x), max(0, box.y)
        x2, y2 = min(width, box.x + box.w), min(height, box.y + box.h)
        area = max(0, x2 - x1) * max(0, y2 - y1)
        share = changed[y1:y2, x1:x2].sum() / area if area else 0.0
        tally.add_face(box.h, share >= COVERED_SHARE)
    outside = ~near_face
    tally.changed_outside += int(np.count_nonzero(changed & outside))
    tally.pixels_outside += int(np.count_nonzero(outside))


def score(dataset: Path, output_dir: Path) -> Tally:
    tally = Tally()
    for image, boxes in read_boxes(dataset).items():
        original = cv2.imread(str(dataset / image), cv2.IMREAD_COLOR)
        if original is None:
            sys.exit(f"error: cannot read {dataset / image}")
        tally.images += 1
        target = output_path(dataset, image, output_dir)
        redacted = cv2.imread(str(target), cv2.IMREAD_COLOR) if target.is_file() else None
        if redacted is None or redacted.shape != original.shape:
            # Fail closed: an image without a usable output counts every face as missed.
            tally.missing_outputs.append(str(target))
            changed = np.zeros(original.shape[:2], bool)
        else:
            changed = changed_mask(original, redacted)
        score_image(tally, boxes, original, changed)
    return tally


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float  # user + system of the child and everything it waited for


def run_edgeblur(dataset: Path, output_dir: Path, extra: Sequence[str]) -> Timing:
    edgeblur = Path(sys.executable).with_name("edgeblur")
    if not edgeblur.is_file():
        sys.exit(f"error: {edgeblur} not found; run this with the project's venv Python")
    command = [str(edgeblur), "image", str(dataset / "images"), "--out", str(output_dir), *extra]
    print("running:", " ".join(command), file=sys.stderr)
    started = time.perf_counter()
    process = subprocess.Popen(command)
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:  # Ctrl-C: leave no child behind
        process.kill()
        process.wait()
        raise
    wall_s = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"error: edgeblur image exited with status {process.returncode}")
    return Timing(wall_s, usage.ru_utime + usage.ru_stime)


def report(tally: Tally, timing: Timing | None) -> str:
    rows = []
    for label in [b[0] for b in BUCKETS] + ["all"]:
        faces, covered = tally.faces[label], tally.covered[label]
        rows.append([label, faces, covered, f"{covered / faces:.3f}" if faces else "n/a"])
    collateral = tally.changed_outside / tally.pixels_outside if tally.pixels_outside else 0.0
    if timing is None:
        wall = cpu = "n/a"
    else:
        wall = f"{1000 * timing.wall_s / tally.images:.0f}"
        cpu = f"{1000 * timing.cpu_s / tally.images:.0f}"
    lines = [
        markdown_table(["face height", "faces", "covered", "recall"], rows),
        "",
        markdown_table(
            ["images", "collateral", "ms/image (wall)", "ms/image (CPU)"],
            [[tally.images, f"{100 * collateral:.2f} %", wall, cpu]],
        ),
    ]
    if tally.missing_outputs:
        lines.append(
            f"\n{len(tally.missing_outputs)} outputs missing or unreadable (their faces count "
            f"as missed), e.g. {tally.missing_outputs[0]}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = split_edgeblur_args(argv)
    parser = argparse.ArgumentParser(
        description="Recall per face size, collateral and speed of `edgeblur image`."
    )
    parser.add_argument("dataset", type=Path, metavar="DATASET_DIR")
    parser.add_argument("output", type=Path, metavar="OUTPUT_DIR")
    parser.add_argument(
        "--run",
        action="store_true",
        help="run `edgeblur image DATASET_DIR/images --out OUTPUT_DIR` first (arguments after "
        "`--` are passed on) and time it",
    )
    options = parser.parse_args(args)
    if extra and not options.run:
        parser.error("arguments after -- are for --run")
    timing = run_edgeblur(options.dataset, options.output, extra) if options.run else None
    print(report(score(options.dataset, options.output), timing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
