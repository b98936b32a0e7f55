"""Helpers shared by the benchmark scripts: where the shared clips are, running a child process
with its wall time and peak memory, making shorter or smaller test clips, markdown tables.

Benchmarks print numbers; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VIDEO_DIR = SHARED / "data" / "video"
DEFAULT_OUT = REPO / ".bench"  # git-ignored

WALKING_CLIP = "facenet-pytorch_video_walking_royal_opera_house.mp4"
# Every clip of shared/data/video/manifest.csv with faces a detector can see, as the manifest
# names them. (Not the car park, the warehouse or the PETS campus clip: faces are absent there
# or a few pixels tall.)
FACE_CLIPS = (
    WALKING_CLIP,
    "face_recognition_short_hamilton_clip.mp4",
    "sadtalker_talking_head_WDA_KatieHill_000.mp4",
    "transcoded_from_gif/intel_preview_classroom.mp4",
    "transcoded_from_gif/intel_preview_face-demographics-walking.mp4",
    "transcoded_from_gif/intel_preview_head-pose-face-detection-female-and-male.mp4",
)


def require_shared() -> Path:
    """The shared video folder, or exit with a message saying what is missing."""
    if not VIDEO_DIR.is_dir():
        sys.exit(
            f"error: {VIDEO_DIR} is missing. The benchmarks read the test clips of the shared "
            f"data folder, expected at {SHARED} (beside the repository); pass --clip for a "
            "clip of your own where the script offers it."
        )
    return VIDEO_DIR


def shared_clip(name: str) -> Path:
    """A clip of the shared folder by its manifest name. The manifest lists some under
    transcoded_from_gif/, which some copies of the folder flatten; both layouts are found."""
    video_dir = require_shared()
    for candidate in (video_dir / name, video_dir / Path(name).name):
        if candidate.is_file():
            return candidate
    sys.exit(f"error: {name} is not in {video_dir} (see its manifest.csv)")


def split_edgeblur_args(argv: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(this script's arguments, the ones after `--`, for the `edgeblur` it runs)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        return args, []
    cut = args.index("--")
    return args[:cut], args[cut + 1 :]


def edgeblur_command() -> list[str]:
    """The `edgeblur` entry point of the virtual environment running this script."""
    script = Path(sys.executable).with_name("edgeblur")
    if not script.is_file():
        sys.exit(
            f"error: {script} not found; run the benchmark with the project's venv "
            "(`make install`, then `.venv/bin/python -m bench.<name>`)"
        )
    return [str(script)]


@dataclass(frozen=True)
class ChildRun:
    command: list[str]
    returncode: int
    wall_s: float
    peak_rss_mib: float  # largest resident set of the child or of any descendant it waited for
    log: Path  # its stdout and stderr

    def check(self) -> ChildRun:
        """Exit with the tail of the child's log if it failed."""
        if self.returncode != 0:
            lines = self.log.read_text(errors="replace").splitlines()[-15:]
            sys.exit(
                f"error: exit status {self.returncode} from {' '.join(self.command)}\n"
                + "\n".join(f"  | {line}" for line in lines)
                + f"\n(full log: {self.log})"
            )
        return self


def run_child(command: Sequence[str | Path], log: Path, *, cpu: int | None = None) -> ChildRun:
    """Run `command` to completion, its output going to `log`; pinned to core `cpu` with
    `taskset` when given. Wall time includes its start-up (imports, model load), as a user
    sees it. Peak memory comes from wait4() on this very child, so children run earlier do
    not leak into it (RUSAGE_CHILDREN would keep the maximum over all of them). But Linux
    starts a child's peak at this process's own peak (it carries over fork and exec), so a
    benchmark keeps itself small and leaves heavy work to `in_fresh_process`."""
    argv = [str(part) for part in command]
    if cpu is not None:
        if shutil.which("taskset") is None:
            sys.exit("error: taskset (util-linux) is needed to pin a run to one core")
        argv = ["taskset", "-c", str(cpu), *argv]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # Ctrl-C: do not leave a benchmark child running
            process.kill()
            process.wait()
            raise
        wall_s = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return ChildRun(argv, process.returncode, wall_s, usage.ru_maxrss / 1024, log)


def in_fresh_process(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`function(*args, **kwargs)` run in a new Python process, its result returned: what it
    decodes or loads does not raise this process's peak memory, and so not the peak that
    run_child reports for every child started after it."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as executor:
        return executor.submit(function, *args, **kwargs).result()


_COPY_OPTIONS = {"preset": "medium", "crf": "18"}  # test copies: near-transparent, not fast


def prepare_clip(
    source: Path,
    out_dir: Path,
    *,
    height: int | None = None,
    max_frames: int | None = None,
    ping_pong: bool = False,
) -> Path:
    """`source` cut to its first `max_frames` frames and/or scaled to `height` rows (width
    keeps the aspect ratio, rounded to even), encoded to H.264 at high quality (libx264 crf 18)
    so that the copy is as close to the original as the benchmark needs. With `ping_pong`, the
    frames are followed by the same frames backwards (the first and last once each), so that
    the copy played looped never jumps: everyone walks back the way they came. Returns
    `source` itself when nothing is to change; a copy already made is reused."""
    import av

    from edge.media import atomic_output, probe

    if height is None and max_frames is None and not ping_pong:
        return source
    info = probe(source)
    if height is None:
        width, height = info.width - info.width % 2, info.height - info.height % 2
    else:
        width = round(info.width * height / info.height / 2) * 2
    parts = [source.stem, f"{height}p"] + ([f"{max_frames}f"] if max_frames else [])
    parts += ["pingpong"] if ping_pong else []
    target = out_dir / ("_".join(parts) + ".mp4")
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    with atomic_output(target) as tmp, av.open(str(source)) as inp:
        stream = inp.streams.video[0]
        stream.thread_type = "AUTO"
        rate = Fraction(stream.average_rate or stream.guessed_rate or 25).limit_denominator(1001)
        with av.open(str(tmp), mode="w", format="mp4") as out:
            encoder = out.add_stream("libx264", rate=rate, options=_COPY_OPTIONS)
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            scaled: Iterable[av.VideoFrame] = (
                frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
                for frame in itertools.islice(inp.decode(stream), max_frames)
            )
            if ping_pong:  # held in memory to play backwards: a short clip
                forward = list(scaled)
                scaled = forward + forward[-2:0:-1]
            for index, frame in enumerate(scaled):
                frame.pts, frame.time_base = index, 1 / rate
                out.mux(encoder.encode(frame))
            out.mux(encoder.encode(None))
    return target


def grey_copy(image: Any, size: tuple[int, int]) -> Any:
    """A small grey copy of a BGR frame (uint8, `size` = (width, height)): what benches pair
    frames by (a recorded frame with its clip frame, a viewer's with the recorded one)."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def frame_count(path: Path) -> int:
    """Frames in a video: as its container declares them, else counted by decoding."""
    from edge.media import probe, read_frames

    declared = probe(path).frames
    return declared if declared else sum(1 for _ in read_frames(path))


_NUMBER = re.compile(r"^(-|[-+]?[0-9][0-9.,]*\s*[a-z%×]{0,3})?$")  # 12, 3.4, 0.52×, 12 %, -


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers right-aligned."""
    text_rows = [["" if value is None else str(value) for value in row] for row in rows]
    widths = [
        max([len(name)] + [len(row[column]) for row in text_rows])
        for column, name in enumerate(header)
    ]
    numeric = [
        all(_NUMBER.match(row[column]) for row in text_rows) for column in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        padded = [
            text.rjust(width) if right else text.ljust(width)
            for text, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [("-" * (width - 1) + ":") if right else "-" * width
            for width, right in zip(widths, numeric, strict=True)]
    return "\n".join([line(header), line(rule), *(line(row) for row in text_rows)])


def resolution(text: str) -> tuple[int, int]:
    """An argparse type for "WxH" (e.g. 1280x720): (width, height)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WxH, e.g. 1280x720") from None
    return width, height
