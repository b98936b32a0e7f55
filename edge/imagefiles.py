"""Still images for `edgeblur image`: find inputs, redact one file, write it fresh.

Pixels are decoded to BGR uint8 and encoded again from scratch, so no EXIF, GPS, maker notes,
XMP or embedded thumbnail (which would still show the face) can reach the output. OpenCV
applies the EXIF orientation while decoding, so the output looks the way the input was shown.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge.detectors.base import Detector
from edge.errors import DetectorError, MediaError
from edge.media import atomic_output
from edge.redact import Redactor
from edge.types import Frame, RedactedFrame

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

ImageFormat = Literal["png", "jpg"]
JPEG_QUALITY = 95


@dataclass(frozen=True)
class ImageJob:
    """One input file and the output path its redacted copy is written to."""

    source: Path
    target: Path


@dataclass(frozen=True)
class ImagePlan:
    jobs: list[ImageJob]
    missing: list[Path]  # arguments that name nothing on disk


def plan_images(inputs: Iterable[Path], out_dir: Path, image_format: ImageFormat) -> ImagePlan:
    """Map every input to its output path without touching any file.

    A file argument goes to out_dir/<name>; a directory argument is searched recursively and
    each image keeps its path relative to that directory. The suffix becomes `image_format`.
    `out_dir` is skipped while searching, so outputs of an earlier run are never re-read.

    Raises MediaError when an output would overwrite an input or when two inputs would be
    written to the same output (nothing has been written at that point).
    """
    out_dir = Path(out_dir)
    out_resolved = out_dir.resolve()
    jobs: list[ImageJob] = []
    missing: list[Path] = []
    for argument in inputs:
        argument = Path(argument)
        if argument.is_dir():
            if argument.resolve() == out_resolved:
                raise MediaError(
                    f"--out {out_dir} is the input directory {argument}: choose another "
                    "directory, the originals are never overwritten"
                )
            for source in _images_under(argument, skip=out_resolved):
                relative = source.relative_to(argument)
                jobs.append(ImageJob(source, out_dir / relative.with_suffix(f".{image_format}")))
        elif argument.exists():
            jobs.append(ImageJob(argument, out_dir / f"{argument.stem}.{image_format}"))
        else:
            missing.append(argument)
    return ImagePlan(_without_clashes(jobs), missing)


def _images_under(directory: Path, skip: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        root_path = Path(root)
        # Pruned in place so os.walk does not descend into the output directory.
        dirs[:] = sorted(d for d in dirs if (root_path / d).resolve() != skip)
        found.extend(
            root_path / name
            for name in sorted(files)
            if Path(name).suffix.lower() in IMAGE_SUFFIXES
        )
    return found


def _without_clashes(jobs: list[ImageJob]) -> list[ImageJob]:
    """Drop repeats (a file named both directly and through its directory); refuse two
    different inputs with one output and outputs that would overwrite an input."""
    sources = {job.source.resolve() for job in jobs}
    claimed: dict[Path, ImageJob] = {}
    for job in jobs:
        target = job.target.resolve()
        if target in sources:
            raise MediaError(
                f"{job.source}: its output {job.target} would overwrite an input; "
                "choose another --out directory"
            )
        earlier = claimed.setdefault(target, job)
        if earlier is not job and earlier.source.resolve() != job.source.resolve():
            raise MediaError(
                f"{earlier.source} and {job.source} would both be written to {job.target}; "
                "rename one of them or process them separately"
            )
    return list(claimed.values())


# Larger images are refused before decoding: a 20000 x 20000 PNG decodes to 1.2 GB and takes
# several times that through detection. 100 MP is 12 times a 4K frame.
MAX_IMAGE_PIXELS = 100_000_000
# A header claiming more than this many bytes of image is not worth reading either.
MAX_IMAGE_FILE_BYTES = 512 * 1024**2


def read_image(path: Path) -> np.ndarray:
    """Decode a file to uint8 (H, W, 3) BGR (alpha dropped, grey expanded, EXIF orientation
    applied). Raises MediaError naming the file when it cannot be read or decoded, is not a
    regular file (a FIFO named *.png would block forever), or its header declares more than
    MAX_IMAGE_PIXELS pixels (checked before decoding, for PNG and JPEG; other formats are
    checked after decoding, within OpenCV's own limit)."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise MediaError(f"{path}: cannot read: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise MediaError(f"{path}: not a regular file; skipped")
    if info.st_size > MAX_IMAGE_FILE_BYTES:
        raise MediaError(f"{path}: {info.st_size} bytes is larger than any image read here")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise MediaError(f"{path}: cannot read: {error.strerror or error}") from None
    size = declared_size(data.tobytes()[:65536])
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise MediaError(
            f"{path}: {size[0]} x {size[1]} pixels is more than the {MAX_IMAGE_PIXELS} "
            "this reads; skipped"
        )
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error:
        image = None
    if image is None:
        raise MediaError(f"{path}: not a readable image (corrupt, truncated or unsupported)")
    if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise MediaError(f"{path}: more than {MAX_IMAGE_PIXELS} pixels; skipped")
    return image


def declared_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, or None for another format or a header too
    damaged to say (the decoder then has the last word)."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(head[at + 2 : at + 4], "big")
        # Start-of-frame markers (baseline, progressive, ...), not DHT/JPG/DAC.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(head[at + 5 : at + 7], "big")
            width = int.from_bytes(head[at + 7 : at + 9], "big")
            return width, height
        at += 2 + length
    return None


def write_image(frame: RedactedFrame, path: Path, image_format: ImageFormat) -> None:
    """Encode a redacted frame as a new file (no metadata), atomically."""
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if image_format == "jpg" else []
    ok, encoded = cv2.imencode(f".{image_format}", frame.image, params)
    if not ok:
        raise MediaError(f"{path}: cannot encode {image_format.upper()}")
    try:
        with atomic_output(path) as tmp:
            tmp.write_bytes(encoded.tobytes())
    except OSError as error:
        raise MediaError(f"{path}: cannot write: {error.strerror or error}") from None


def redact_image_file(
    job: ImageJob, detector: Detector, redactor: Redactor, image_format: ImageFormat
) -> int:
    """Detect and mask the faces of one file and write the result; returns the face count.

    Nothing is written when the file cannot be decoded (MediaError) or the detector fails
    (DetectorError): an image that could not be checked is never output.
    """
    frame = Frame(read_image(job.source), 0, 0.0)
    try:
        boxes = detector.detect(frame.image)
        redacted = redactor.redact(frame, boxes, look_again=detector)
    except Exception as error:  # any failure means the image was not checked
        raise DetectorError(f"{job.source}: face detection failed: {error}") from error
    write_image(redacted, job.target, image_format)
    return len(boxes)
