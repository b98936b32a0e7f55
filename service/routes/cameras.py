"""Camera status and the redacted preview: the only pixels the API serves are JPEGs of frames
the pipeline has already redacted (Control.snapshot_jpeg / preview_jpegs)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator, Iterator

import anyio
from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from edge.control import Control
from service.deps import ControlDep, MediaTokenDep, ServiceState, StateDep, TokenDep
from service.schemas import CameraStatusOut

router = APIRouter(prefix="/api/cameras", tags=["cameras"])

BOUNDARY = "frame"
_NO_STORE = {"Cache-Control": "no-store"}
_MEDIA_AUTH = (
    " Besides the Authorization header, `?token=` is accepted here (only here), because an "
    "<img> tag cannot send headers; prefer the header where the client can set one."
)


@router.get("", summary="Status and counters of every configured camera")
def list_cameras(control: ControlDep, _caller: TokenDep) -> list[CameraStatusOut]:
    return [CameraStatusOut.from_status(camera) for camera in control.health()]


@router.get(
    "/{camera_id}/snapshot.jpg",
    summary="Latest redacted frame as JPEG",
    description="404: unknown camera; 503: no redacted frame yet." + _MEDIA_AUTH,
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {}, 503: {}},
)
def snapshot(camera_id: str, control: ControlDep, _caller: MediaTokenDep) -> Response:
    try:
        jpeg = control.snapshot_jpeg(camera_id)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no camera {camera_id!r}") from None
    if jpeg is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"camera {camera_id!r} has no redacted frame yet",
            headers={"Retry-After": "1"},
        )
    return Response(jpeg, media_type="image/jpeg", headers=_NO_STORE)


@router.get(
    "/{camera_id}/stream.mjpg",
    summary="Live redacted preview (multipart/x-mixed-replace MJPEG)",
    description="404: unknown camera; 503: too many previews open." + _MEDIA_AUTH,
    response_class=StreamingResponse,
    responses={200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}}}},
)
async def stream(
    camera_id: str, state: StateDep, control: ControlDep, _caller: MediaTokenDep
) -> StreamingResponse:
    # Counted here, before the first await, so concurrent requests cannot all pass the check
    # and then open (the handler runs on the event loop thread; nothing runs between the two).
    if state.active_streams >= state.settings.max_streams:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"{state.active_streams} previews are open, the most this device serves at once",
            headers={"Retry-After": "5"},
        )
    slot = _PreviewSlot(state)
    try:
        frames = await run_in_threadpool(_open_preview, control, camera_id)
    except BaseException:
        slot.release()
        raise
    body = _multipart(state, frames, slot)
    # A response whose body never starts (client gone first) never runs its finally.
    weakref.finalize(body, slot.release)
    return StreamingResponse(
        body,
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={**_NO_STORE, "X-Accel-Buffering": "no"},
    )


def _open_preview(control: Control, camera_id: str) -> _BlockingFrames:
    # preview_jpegs may be a generator function that raises KeyError only once iterated,
    # so unknown cameras are looked up first to answer 404 before the response starts.
    if camera_id not in {camera.id for camera in control.health()}:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no camera {camera_id!r}")
    try:
        return _BlockingFrames(control.preview_jpegs(camera_id))
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no camera {camera_id!r}") from None


class _PreviewSlot:
    """One of max_streams preview places, taken when a preview is asked for and given back
    exactly once, however the preview ends."""

    def __init__(self, state: ServiceState) -> None:
        self._state = state
        self._held = True
        state.active_streams += 1

    def release(self) -> None:
        if self._held:
            self._held = False
            self._state.active_streams -= 1


async def _multipart(
    state: ServiceState, frames: _BlockingFrames, slot: _PreviewSlot
) -> AsyncIterator[bytes]:
    """One multipart part per redacted JPEG until the camera stops or the client leaves; gives
    back the preview slot the handler took.

    Each pull runs in a worker thread from a limiter of its own, sized to max_streams, so open
    previews waiting for frames never starve the threads the other routes run in.
    """
    limiter = _stream_limiter(state)
    try:
        while True:
            # abandon_on_cancel: a client that leaves while its camera is silent must not
            # hold up its request task (or server shutdown) until the next frame arrives.
            jpeg = await anyio.to_thread.run_sync(
                frames.pull, limiter=limiter, abandon_on_cancel=True
            )
            if jpeg is None:
                return
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
            yield head.encode("ascii") + b"\r\n" + jpeg + b"\r\n"
    finally:
        slot.release()
        frames.close()


def _stream_limiter(state: ServiceState) -> anyio.CapacityLimiter:
    # Created on first use: a CapacityLimiter belongs to the running event loop.
    if state.stream_limiter is None:
        state.stream_limiter = anyio.CapacityLimiter(state.settings.max_streams)
    return state.stream_limiter


class _BlockingFrames:
    """The pipeline's blocking JPEG iterator, pulled from worker threads and closed exactly once.

    A generator cannot be closed while another thread runs it, so a close that finds a pull in
    flight (client gone, camera silent) is left to a short-lived thread that closes it as soon
    as that pull returns.
    """

    def __init__(self, frames: Iterator[bytes]) -> None:
        self._frames = frames
        self._lock = threading.Lock()
        self._closed = False

    def pull(self) -> bytes | None:
        """The next JPEG, or None once the camera stopped or the preview was closed."""
        with self._lock:
            if self._closed:
                return None
            try:
                return next(self._frames, None)
            except KeyError:  # the camera was removed by a config change
                return None

    def close(self) -> None:
        if self._lock.acquire(blocking=False):
            try:
                self._close_locked()
            finally:
                self._lock.release()
        else:
            closer = threading.Thread(target=self._close_after_pull, name="preview-close")
            closer.daemon = True
            closer.start()

    def _close_after_pull(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if not self._closed:
            self._closed = True
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()
