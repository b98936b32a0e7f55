"""Storage retention: deletes finished recordings by age, then the oldest beyond a byte quota.

Only finished segments that edgeblur wrote are ever touched: files named like
`<camera>/<YYYYmmdd-HHMMSS>-<seq>.mp4` (see `SEGMENT_NAME`) under `root`. Segments still being
written have a hidden temporary name (`.<name>.part.mp4`) and are never counted or deleted, nor
is anything else that happens to live under `root`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# <YYYYmmdd-HHMMSS>-<seq>.mp4, the name SegmentRecorder gives a segment once it is complete.
SEGMENT_NAME = re.compile(r"^\d{8}-\d{6}-\d+\.mp4$")


@dataclass(frozen=True)
class SegmentFile:
    path: Path
    size: int  # bytes
    mtime: float  # seconds since the epoch


class Retention:
    """Keeps finished segments under `root` within `max_age_s` seconds and `max_bytes` bytes.

    Thread-safe: several cameras' recorders may share one Retention (one storage quota) and
    call `enforce()` from their own pipeline threads; the service may call it periodically.
    """

    def __init__(self, root: Path, max_age_s: float, max_bytes: int) -> None:
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0 seconds, got {max_age_s}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.root = Path(root)
        self.max_age_s = float(max_age_s)
        self.max_bytes = int(max_bytes)
        self.usage_bytes = 0  # bytes of finished segments after the last enforce()
        self.deleted_total = 0  # segments deleted since construction
        self._lock = threading.Lock()

    def segments(self) -> list[SegmentFile]:
        """Finished segments under root, oldest first (by mtime, then path)."""
        found: list[SegmentFile] = []
        if not self.root.is_dir():
            return found
        for path in self.root.rglob("*.mp4"):
            if not SEGMENT_NAME.match(path.name):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # deleted by someone else meanwhile
                continue
            found.append(SegmentFile(path, stat.st_size, stat.st_mtime))
        found.sort(key=lambda s: (s.mtime, str(s.path)))
        return found

    def enforce(self, now: float | None = None) -> list[Path]:
        """Delete segments older than max_age_s, then the oldest until the total is within
        max_bytes. `now` is wall-clock seconds since the epoch (default: time.time()).

        Returns the deleted paths, oldest first. A file that cannot be deleted is logged and
        kept; `quota_met` then says whether the quota still holds.
        """
        now = time.time() if now is None else now
        with self._lock:
            remaining = self.segments()
            total = sum(s.size for s in remaining)
            deleted: list[Path] = []
            kept: list[SegmentFile] = []
            for segment in remaining:
                too_old = now - segment.mtime > self.max_age_s
                if (too_old or total > self.max_bytes) and self._delete(segment.path):
                    deleted.append(segment.path)
                    total -= segment.size
                else:
                    kept.append(segment)
            self.usage_bytes = sum(s.size for s in kept)
            self.deleted_total += len(deleted)
        if deleted:
            log.info("retention deleted %d segment(s) under %s", len(deleted), self.root)
        return deleted

    @property
    def quota_met(self) -> bool:
        """True when the finished segments fit in max_bytes after the last enforce()."""
        return self.usage_bytes <= self.max_bytes

    @staticmethod
    def _delete(path: Path) -> bool:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return True
        except OSError as error:
            log.error("retention cannot delete %s: %s", path, error)
            return False
        return True
