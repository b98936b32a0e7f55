"""Throughput of `edgeblur video` beside its ceiling and beside deface, on the same clips.

    .venv/bin/python bench/throughput.py [--clip PATH] [--max-frames N] [--skip-deface]
                                         [--deface-onnxruntime] [--variant=OPTIONS ...]
                                         [--leaks] [--out-dir DIR]

For each clip (the 1080p walking clip of ../shared by default, and a 720p copy made from it):

- ceiling: decode and encode only, through edgeblur's own media layer (edge.media.read_frames,
  H264Writer with H264_OPTIONS), with no detection: the most `edgeblur video` could reach;
- edgeblur: `edgeblur video` at its default settings;
- deface 1.5.0 at its defaults, installed from PyPI into a virtual environment of its own
  (cached under the user's cache dir, edgeblur-bench/), never into the project's;
- ceiling and edgeblur again pinned to one core (`taskset -c 0`), a stand-in for a Pi-class
  board;
- with --variant="--detect-long-side 960" (repeatable; with the =, argparse does not take
  the options for its own), `edgeblur video` with those options too, on all cores and on
  one, to price a speed option beside the defaults in the same run;
- with --leaks, the face-frames each output of the all-cores runs leaves visible, counted as
  bench/video_leaks.py counts them (its reference detector runs once per clip). The
  ceiling's output is the unmasked clip: its count is every face-frame the reference found.

Clips are made and leaks counted in a process of their own (bench._common.in_fresh_process):
every child's peak RSS starts at this process's own peak.

Every run is a child process, run twice: on the clip, and on its first frame alone to time
its start-up (imports, model load, encoder set-up), which fps leaves out; peak RSS is the
child's own (wait4). Prints a markdown table. Run it on a quiet machine: other load changes
the numbers. --max-frames cuts the clips for a quick smoke run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/throughput.py`

from bench._common import (
    DEFAULT_OUT,
    WALKING_CLIP,
    ChildRun,
    edgeblur_command,
    frame_count,
    in_fresh_process,
    markdown_table,
    prepare_clip,
    run_child,
    shared_clip,
)
from edge.cpus import usable_cpus

DEFACE_VERSION = "1.5.0"
ONNXRUNTIME_EXTRAS = ("onnx", "onnxruntime")  # deface's backend=auto picks these when present
PINNED_CORE = 0
SMALL_HEIGHT = 720


@dataclass(frozen=True)
class Result:
    clip: str  # e.g. "1080p"
    cores: str  # "all (2)" or "1 (taskset -c 0)"
    tool: str  # "ceiling", "edgeblur", "edgeblur --detect-long-side 960", "deface 1.5.0 ..."
    frames: int
    pinned: bool  # to one core
    run: ChildRun  # on the whole clip
    startup: ChildRun  # the same command on the clip's first frame only
    output: Path  # what the run on the whole clip wrote
    leaks: tuple[int, int] | None = None  # leaked face-frames, face-frames (--leaks)

    @property
    def fps(self) -> float | None:
        """Frames per second once started: the one-frame run's time (imports, model load,
        encoder set-up) taken off. None when the two times are too close to tell apart."""
        working_s = self.run.wall_s - self.startup.wall_s
        return (self.frames - 1) / working_s if self.frames > 1 and working_s > 0 else None


def run_ceiling(clip: Path, output: Path) -> None:
    """Decode `clip` and encode it again exactly as `edgeblur video` does, minus detection.

    H264Writer takes RedactedFrames only, so each frame goes through Redactor.redact with no
    boxes: one copy of the image, which edgeblur makes too. Runs in the child process."""
    from edge.media import H264Writer, probe, read_frames
    from edge.redact import Redactor
    from edge.types import Detections

    redactor = Redactor()
    frames = read_frames(clip)
    first = next(frames)
    with H264Writer(output, first.width, first.height, probe(clip).fps) as writer:
        writer.write(redactor.redact(first, Detections.empty()))
        for frame in frames:
            writer.write(redactor.redact(frame, Detections.empty()))


def deface_executable(extras: tuple[str, ...]) -> Path:
    """`deface` of a virtual environment holding deface==DEFACE_VERSION (plus `extras`),
    made on first use and reused after (a marker file records what was installed)."""
    from platformdirs import user_cache_dir

    name = "-".join(["deface", DEFACE_VERSION, *extras])
    venv = Path(os.environ.get("EDGEBLUR_BENCH_CACHE") or user_cache_dir("edgeblur-bench")) / name
    marker = venv / "bench-installed.txt"
    requirements = [f"deface=={DEFACE_VERSION}", *extras]
    if marker.is_file() and marker.read_text() == "\n".join(requirements):
        return venv / "bin" / "deface"
    if venv.exists():  # a half-made environment from an interrupted install
        shutil.rmtree(venv)
    print(f"installing {' '.join(requirements)} into {venv} (once)", file=sys.stderr)
    python = shutil.which("python3") or sys.executable
    try:
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements],
            check=True,
        )
    except subprocess.CalledProcessError as error:
        sys.exit(f"error: could not install {' '.join(requirements)} into {venv}: {error}")
    marker.write_text("\n".join(requirements))
    return venv / "bin" / "deface"


def count_leaks(clip: Path, outputs: list[Path]) -> list[tuple[int, int]]:
    """(leaked face-frames, face-frames) of each of `outputs` of `clip`, as
    bench/video_leaks.py counts them; its reference detector runs on the clip once."""
    from bench.video_leaks import REFERENCE_THRESHOLD, assess, reference_detector
    from edge.media import read_frames

    detector = reference_detector(REFERENCE_THRESHOLD, None, 1)
    reference = [detector.detect(frame.image) for frame in read_frames(clip)]
    detector.close()
    counts = []
    for output in outputs:
        replay = iter(reference)
        tally = assess(clip, output, lambda _image, replay=replay: next(replay)).tally
        counts.append((tally.leaked_frames, tally.face_frames))
    return counts


def _cpu_description() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    # x86 names the processor in "model name", a Raspberry Pi the board in "Model".
    names = [line.split(":", 1)[1].strip() for line in lines
             if line.startswith(("model name", "Model"))]
    model = names[0] if names else "unknown CPU"
    return f"{model}, {usable_cpus()} cores available"


def _command(tool: str, base: list[str], clip: Path, output: Path) -> list[str]:
    if tool == "edgeblur":  # base holds a variant's options after "video"
        return [*base, str(clip), "--out", str(output)]
    if tool == "ceiling":
        return [*base, str(clip), str(output)]
    return [*base, str(clip), "-o", str(output)]  # deface


def benchmark_clip(
    label: str,
    clip: Path,
    first_frame: Path,
    out_dir: Path,
    deface: tuple[str, Path] | None,
    variants: list[str],
) -> list[Result]:
    """All runs on one clip, each also on `first_frame` (the clip's first frame alone) to
    measure its start-up; each output is checked to hold every input frame."""
    frames = frame_count(clip)
    all_cores = f"all ({usable_cpus()})"
    pinned = f"1 (taskset -c {PINNED_CORE})"
    ceiling = [sys.executable, __file__, "--run-ceiling"]
    edgeblur = [*edgeblur_command(), "video"]
    runs: list[tuple[str, str, list[str], int | None]] = [
        ("ceiling", all_cores, ceiling, None),
        ("edgeblur", all_cores, edgeblur, None),
    ]
    if deface is not None:
        runs.append((deface[0], all_cores, [str(deface[1])], None))
    runs += [
        ("ceiling", pinned, ceiling, PINNED_CORE),
        ("edgeblur", pinned, edgeblur, PINNED_CORE),
    ]
    for options in variants:
        for cores, cpu in ((all_cores, None), (pinned, PINNED_CORE)):
            runs.append((f"edgeblur {options}", cores, [*edgeblur, *options.split()], cpu))
    results = []
    for number, (tool, cores, base, cpu) in enumerate(runs):
        slug = "_".join([label, str(number), tool.split()[0]])
        print(f"{label}: {tool} on {cores} cores ...", file=sys.stderr, flush=True)
        timed = []
        for source, suffix in ((first_frame, "_startup"), (clip, "")):
            output = out_dir / f"{slug}{suffix}.mp4"
            output.unlink(missing_ok=True)
            command = _command(tool.split()[0], base, source, output)
            timed.append(run_child(command, out_dir / f"{slug}{suffix}.log", cpu=cpu).check())
        written = frame_count(output)
        if written != frames:
            print(f"warning: {output} has {written} frames, the clip {frames}", file=sys.stderr)
        pinned_run = cpu is not None
        results.append(Result(label, cores, tool, frames, pinned_run, timed[1], timed[0], output))
    return results


def report(results: list[Result]) -> str:
    def fps_of(clip: str, cores: str, tool_prefix: str) -> float | None:
        for result in results:
            if (result.clip, result.cores) == (clip, cores) and result.tool.startswith(
                tool_prefix
            ):
                return result.fps
        return None

    def ratio(fps: float | None, other: float | None) -> str:
        return f"{fps / other:.2f}×" if fps and other else "-"

    rows = []
    for result in results:
        deface = fps_of(result.clip, result.cores, "deface")
        rows.append([
            result.clip,
            result.cores,
            result.tool,
            result.frames,
            f"{result.run.wall_s:.2f}",
            f"{result.startup.wall_s:.2f}",
            "-" if result.fps is None else f"{result.fps:.2f}",
            f"{result.run.peak_rss_mib:.0f}",
            "-" if result.tool == "ceiling"
            else ratio(result.fps, fps_of(result.clip, result.cores, "ceiling")),
            ratio(result.fps, deface) if result.tool.startswith("edgeblur") else "-",
            "-" if result.leaks is None else "{} of {}".format(*result.leaks),
        ])
    header = ["clip", "cores", "run", "frames", "wall s", "start-up s", "fps", "peak RSS MiB",
              "× ceiling", "× deface", "leaked face-frames"]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, help="clip to use (default: the shared 1080p "
                        f"walking clip, {WALKING_CLIP})")
    parser.add_argument("--max-frames", type=int, metavar="N",
                        help="use only the first N frames (quick smoke runs)")
    parser.add_argument("--skip-deface", action="store_true", help="leave deface out")
    parser.add_argument("--deface-onnxruntime", action="store_true",
                        help="give deface onnxruntime (its faster backend) instead of OpenCV")
    parser.add_argument("--variant", action="append", default=[], metavar="OPTIONS",
                        help="also run `edgeblur video OPTIONS` (with =, quoted: "
                        "--variant=\"--detect-long-side 960\"); repeatable")
    parser.add_argument("--leaks", action="store_true",
                        help="also count the face-frames each all-cores output leaves visible "
                        "(bench/video_leaks.py's check)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT / "throughput",
                        help="clips, outputs and logs (default: %(default)s)")
    parser.add_argument("--run-ceiling", nargs=2, type=Path, metavar=("IN", "OUT"),
                        help=argparse.SUPPRESS)  # the child process of the ceiling runs
    args = parser.parse_args(argv)
    if args.run_ceiling:
        run_ceiling(*args.run_ceiling)
        return 0
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")

    from edge.media import H264_OPTIONS, probe

    source = args.clip if args.clip is not None else shared_clip(WALKING_CLIP)
    if not source.is_file():
        parser.error(f"--clip {source}: no such file")
    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    deface = None
    if not args.skip_deface:
        extras = ONNXRUNTIME_EXTRAS if args.deface_onnxruntime else ()
        backend = "onnxruntime" if extras else "opencv"
        deface = (f"deface {DEFACE_VERSION} ({backend})", deface_executable(extras))

    height = probe(source).height
    sizes = [None] + ([SMALL_HEIGHT] if height > SMALL_HEIGHT else [])
    results = []
    for size in sizes:
        label = f"{size or height}p"
        clip = in_fresh_process(
            prepare_clip, source, out_dir, height=size, max_frames=args.max_frames
        )
        first_frame = in_fresh_process(prepare_clip, source, out_dir, height=size, max_frames=1)
        runs = benchmark_clip(label, clip, first_frame, out_dir, deface, args.variant)
        if args.leaks:
            unpinned = [run.output for run in runs if not run.pinned]
            counts = iter(in_fresh_process(count_leaks, clip, unpinned))
            runs = [run if run.pinned else replace(run, leaks=next(counts)) for run in runs]
        results += runs

    print(f"\nclip: {source}" + (f" (first {args.max_frames} frames)" if args.max_frames else ""))
    print(f"machine: {_cpu_description()}; encoder: libx264 {H264_OPTIONS}")
    print("Each run is a process. start-up s: the same run on the first frame alone (imports, "
          "model load, encoder set-up); fps = (frames - 1) / (wall s - start-up s). "
          "× columns compare fps on the same clip and cores.\n")
    print(report(results))
    print(f"\noutputs and logs: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
