"""Proof that nothing raw is stored: run real cameras whose frames hold real faces, let them
record, take snapshots, then decode every file written under the data dir and look for faces
with detectors more sensitive than the one the service used. The same check on the raw input
finds the faces, so it is able to fail."""

from __future__ import annotations

from e2e_support import (
    FPS,
    HEIGHT,
    TEST_BUDGET_MS,
    WIDTH,
    camera_config,
    decoded_images,
    demo_camera,
    finished_segments,
    stored_files,
    visible_faces,
    wait_until,
)

from edge.pipeline import Pipeline
from edge.sinks.snapshot import snapshot_path
from edge.sources.demo import DemoSourceConfig
from edge.sources.registry import build_source

CAMERAS = ("demo", "file")
SEGMENTS_PER_CAMERA = 3


def test_no_face_is_detectable_in_anything_stored(
    tmp_path, running, face_video, leak_detectors
) -> None:
    config = camera_config(
        tmp_path,
        [
            demo_camera("demo"),
            {
                "id": "file",
                "source": {"type": "file", "path": str(face_video), "loop": True},
                "recording": {"segment_s": 1.0},
                "latency_budget_ms": TEST_BUDGET_MS,
            },
        ],
    )
    data_dir = config.storage.data_dir
    pipeline = running(Pipeline(config))
    wait_until(
        lambda: all(s.ready for s in pipeline.health()), 60, "both cameras to become ready"
    )
    wait_until(
        lambda: all(
            len(finished_segments(data_dir, c)) >= SEGMENTS_PER_CAMERA for c in CAMERAS
        ),
        60,
        f"{SEGMENTS_PER_CAMERA} finished segments per camera",
    )
    for camera_id in CAMERAS:
        jpeg = pipeline.snapshot_jpeg(camera_id)
        assert jpeg, f"no snapshot from {camera_id}"
        path = snapshot_path(data_dir, camera_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg)
    workers = [pipeline.worker(camera_id) for camera_id in CAMERAS]
    pipeline.stop()

    for worker in workers:
        assert worker is not None
        # The faces were there and were masked, not lost to a fail-closed path.
        assert worker.faces_redacted > 0
        assert worker.frames_withheld == worker.frames_fully_masked == 0
    files = stored_files(data_dir)
    assert {p.suffix for p in files} == {".mp4", ".jpg"}, files
    checked = 0
    for path in files:
        for image in decoded_images(path):
            assert visible_faces(leak_detectors, image) == 0, f"a face is detectable in {path}"
            checked += 1
    # Every frame delivered was recorded, and every one of them was looked at.
    assert checked == sum(worker.frames_out for worker in workers) + len(CAMERAS)

    # The check can fail: on the raw inputs it finds faces in every frame it looks at.
    demo = build_source(DemoSourceConfig(width=WIDTH, height=HEIGHT, fps=FPS))
    demo.open()
    try:
        raw = [demo.read() for _ in range(3)]
    finally:
        demo.close()
    from edge.media import read_frames

    raw_file = [frame for _, frame in zip(range(3), read_frames(face_video), strict=False)]
    for frame in [*raw, *raw_file]:
        assert frame is not None
        assert visible_faces(leak_detectors, frame.image) >= 1, "the leak check sees no raw face"
