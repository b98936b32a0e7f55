"""edge.media: atomic output files, H.264 writing (RedactedFrame only), probing and decoding."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from edge.errors import MediaError
from edge.media import H264Writer, atomic_output, probe, read_frames
from edge.redact import Redactor
from edge.sources.file import FileSource, FileSourceConfig
from edge.types import Detections, Frame


def test_atomic_output_renames_into_place_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "result.bin"

    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"complete")
        assert not target.exists()

    assert target.read_bytes() == b"complete"
    assert [p.name for p in target.parent.iterdir()] == ["result.bin"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_output_leaves_nothing_and_keeps_old_file_on_failure(
    tmp_path: Path, error: BaseException
) -> None:
    target = tmp_path / "result.bin"
    target.write_bytes(b"previous run")

    with pytest.raises(type(error)), atomic_output(target) as tmp:
        tmp.write_bytes(b"half writ")
        raise error

    assert target.read_bytes() == b"previous run"
    assert [p.name for p in tmp_path.iterdir()] == ["result.bin"]


def _frames(count: int, width: int, height: int) -> list[Frame]:
    return [Frame(np.full((height, width, 3), 20 * i, np.uint8), i, i / 10) for i in range(count)]


def test_h264_writer_refuses_a_raw_frame(tmp_path: Path) -> None:
    raw = _frames(1, 64, 48)[0]
    with pytest.raises(TypeError, match="RedactedFrame"):
        with atomic_output(tmp_path / "out.mp4") as tmp, H264Writer(tmp, 64, 48, 10) as writer:
            writer.write(raw)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_h264_writer_round_trip_keeps_count_timing_and_rounds_odd_sizes_down(
    tmp_path: Path,
) -> None:
    redactor = Redactor()
    path = tmp_path / "out.mp4"
    with H264Writer(path, 65, 49, 10) as writer:
        for frame in _frames(12, 65, 49):
            writer.write(redactor.redact(frame, Detections.empty()))

    info = probe(path)
    assert (info.width, info.height, info.frames, info.fps, info.has_audio) == (
        64,
        48,
        12,
        10.0,
        False,
    )
    decoded = list(read_frames(path))
    assert [f.index for f in decoded] == list(range(12))
    np.testing.assert_allclose([f.timestamp for f in decoded], [i / 10 for i in range(12)])
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"


def test_h264_writer_keeps_colours_and_their_range(tmp_path: Path) -> None:
    """Black, white, blue, green and red come back within 8 levels: the conversion to the
    encoder's YUV keeps the channel order (swapped, red and blue trade places) and range."""
    colours = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255)]  # BGR
    image = np.concatenate([np.full((64, 32, 3), colour, np.uint8) for colour in colours], axis=1)
    redactor = Redactor()
    path = tmp_path / "colours.mp4"
    with H264Writer(path, image.shape[1], image.shape[0], 10) as writer:
        for index in range(3):
            writer.write(redactor.redact(Frame(image, index, index / 10), Detections.empty()))
    decoded = list(read_frames(path))[-1].image
    for k, colour in enumerate(colours):
        patch = decoded[8:56, 32 * k + 8 : 32 * k + 24].reshape(-1, 3).mean(axis=0)
        np.testing.assert_allclose(patch, colour, atol=8, err_msg=f"colour {colour}")


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_probe_and_read_frames_name_the_bad_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)

    with pytest.raises(MediaError, match="bad.mp4"):
        probe(path)
    with pytest.raises(MediaError, match="bad.mp4"):
        list(read_frames(path))


def _first_frame_of_file_camera(path: Path) -> list[Frame]:
    source = FileSource(FileSourceConfig(path=path, realtime=False))
    with source:
        return [source.read()]  # type: ignore[list-item]


@pytest.mark.parametrize(
    "decode", [lambda path: list(read_frames(path)), _first_frame_of_file_camera],
    ids=["edgeblur-video", "file-camera"],
)
def test_every_decode_path_turns_video_upright_as_players_do(tmp_path: Path, decode) -> None:
    """`edgeblur video` and a file camera under `edgeblur serve` decode the same way: a phone
    clip reaches the detector upright in both."""
    path = tmp_path / "sideways.mp4"
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :8] = 255  # a white band down the left edge of the stored picture
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(-90)  # shown turned a quarter clockwise (ffmpeg agrees)
        container.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="bgr24")))
        container.mux(stream.encode(None))

    (frame,) = decode(path)

    assert frame.image.shape == (64, 32, 3)
    white_rows = np.flatnonzero(frame.image[:, :, 0].mean(axis=1) > 128)
    assert white_rows.min() == 0 and white_rows.max() in (7, 8)  # now along the top edge
