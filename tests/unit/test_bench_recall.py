"""bench/recall.py scores a data set it is given: a synthetic one made here, with outputs
masked by hand, so every count is known. No timing here: speed lives in bench/."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.recall import main, output_path, score

# (x, y, w, h, invalid) on a 400x300 picture: one face per bucket, one too small, one invalid.
BOXES = [
    (10, 10, 12, 12, 0),  # < 16
    (40, 10, 20, 24, 0),  # 16-32
    (80, 10, 40, 48, 0),  # 32-64
    (140, 10, 70, 80, 0),  # >= 64
    (240, 10, 8, 8, 0),  # under 10 px: not counted
    (260, 10, 30, 30, 1),  # invalid: not counted
]


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "images" / "sub").mkdir(parents=True)
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "images" / "sub" / "a.png"), image)
    rows = ["image,x,y,w,h,invalid"] + [
        f"images/sub/a.png,{x},{y},{w},{h},{inv}" for x, y, w, h, inv in BOXES
    ]
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return root


def write_output(dataset: Path, out: Path, masks: list[tuple[int, int, int, int]]) -> None:
    image = cv2.imread(str(dataset / "images" / "sub" / "a.png"))
    for x1, y1, x2, y2 in masks:
        image[y1:y2, x1:x2] ^= 0x80  # every channel moves by 128
    target = output_path(dataset, "images/sub/a.png", out)
    target.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(target), image)


def test_face_counts_only_when_70_percent_of_it_changed(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output(
        dataset,
        out,
        [
            (10, 10, 22, 22),  # < 16: whole box
            (40, 10, 60, 26),  # 16-32: 16 of 24 rows = 67 %: not covered
            (80, 10, 120, 44),  # 32-64: 34 of 48 rows = 71 %: covered
            (300, 200, 400, 300),  # no face: collateral
        ],
    )
    tally = score(dataset, out)
    assert dict(tally.faces) == {
        "< 16 px": 1,
        "16-32 px": 1,
        "32-64 px": 1,
        ">= 64 px": 1,
        "all": 4,
    }
    assert dict(tally.covered) == {
        "< 16 px": 1,
        "16-32 px": 0,
        "32-64 px": 1,
        ">= 64 px": 0,
        "all": 2,
    }
    assert tally.changed_outside == 100 * 100 and not tally.missing_outputs
    # Pixels near a face (its box grown 1.6x) are neither collateral nor counted as outside.
    assert tally.pixels_outside < 300 * 400 - sum(w * h for _, _, w, h, _ in BOXES)


def test_missing_output_covers_nothing(dataset: Path, tmp_path: Path) -> None:
    tally = score(dataset, tmp_path / "nothing-here")
    assert tally.covered["all"] == 0 and tally.faces["all"] == 4
    assert len(tally.missing_outputs) == 1


def test_report_is_a_markdown_table(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_output(dataset, tmp_path / "out", [(0, 0, 400, 300)])
    assert main([str(dataset), str(tmp_path / "out")]) == 0
    report = capsys.readouterr().out
    assert "| all " in report and "1.000 |" in report
    assert "100.00 %" in report and "n/a" in report
