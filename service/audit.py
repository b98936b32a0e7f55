"""The config change log: one JSON line per applied change, secrets masked.

A line: {"time": "2025-01-31T09:12:03.123Z", "client": "192.0.2.7" (the connected peer),
"forwarded_for": null (X-Forwarded-For as sent, unverified), "token": "hmac:3f2a..."
(a fingerprint keyed with this box's own random key, never the token; null when no token is
configured), "method": "PUT", "weakens_privacy": ["redaction.method"] (settings moved the
weaker way within the privacy floor),
"changes": [{"path": "cameras[front].source.url", "old": "rtsp://***@cam/1",
"new": "rtsp://***@cam/2"}, ...]}. A changed password shows as a change whose masked old and new
values look the same: the log says that it changed, never what it was. A change whose file
write or apply failed after its line was written gets a second line, the same with "outcome":
"failed, nothing changed". The log and its key file are created readable by owner and group
only (0640 and 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from service.schemas import ConfigChange, Loc, mask_secrets

logger = logging.getLogger(__name__)

_UNSET: Any = object()


def diff_configs(old: dict[str, Any], new: dict[str, Any]) -> list[ConfigChange]:
    """Changed leaves between two config dicts (as edge.configfile.config_to_dict gives them).

    Lists of objects with unique ids (cameras) are compared by id, so inserting a camera reports
    one added camera, not every later one changed; a reorder is reported as `cameras (order)`.
    Values are masked; an added or removed subtree is one change with null on the other side.
    """
    changes: list[ConfigChange] = []
    _diff(old, new, (), "", changes)
    return changes


def _diff(old: Any, new: Any, loc: Loc, label: str, out: list[ConfigChange]) -> None:
    if old is not _UNSET and new is not _UNSET and old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(key for key in new if key not in old)]:
            child = f"{label}.{key}" if label else str(key)
            _diff(old.get(key, _UNSET), new.get(key, _UNSET), (*loc, key), child, out)
        return
    if isinstance(old, list) and isinstance(new, list):
        old_ids, new_ids = _ids(old), _ids(new)
        if old_ids is not None and new_ids is not None:
            old_by_id = dict(zip(old_ids, old, strict=True))
            new_by_id = dict(zip(new_ids, new, strict=True))
            for ident in [*old_ids, *(i for i in new_ids if i not in old_by_id)]:
                old_item, new_item = old_by_id.get(ident, _UNSET), new_by_id.get(ident, _UNSET)
                _diff(old_item, new_item, (*loc, ident), f"{label}[{ident}]", out)
            kept_old = [i for i in old_ids if i in new_by_id]
            kept_new = [i for i in new_ids if i in old_by_id]
            if kept_old != kept_new:
                out.append(ConfigChange(path=f"{label} (order)", old=old_ids, new=new_ids))
            return
        if len(old) == len(new):
            for index, (old_item, new_item) in enumerate(zip(old, new, strict=True)):
                _diff(old_item, new_item, (*loc, index), f"{label}[{index}]", out)
            return
    out.append(ConfigChange(path=label or "(root)", old=_shown(old, loc), new=_shown(new, loc)))


def _ids(items: list[Any]) -> list[str] | None:
    """The items' ids in order, or None unless every item is an object with a unique str id."""
    ids: list[str] = []
    for item in items:
        ident = item.get("id") if isinstance(item, dict) else None
        if not isinstance(ident, str) or ident in ids:
            return None
        ids.append(ident)
    return ids


def _shown(value: Any, loc: Loc) -> Any:
    return None if value is _UNSET else mask_secrets(value, loc)


def audit_entry(
    client: str,
    forwarded_for: str | None,
    token_fingerprint: str | None,
    method: str,
    changes: list[ConfigChange],
) -> dict[str, Any]:
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return {
        "time": now.replace("+00:00", "Z"),
        "client": client,
        "forwarded_for": forwarded_for,
        "token": token_fingerprint,
        "method": method,
        "changes": [change.model_dump() for change in changes],
    }


AUDIT_LOG_MODE = 0o640
KEY_FILE_MODE = 0o600


class AuditLog:
    """Append-only JSON-lines file. Safe to share between the threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._key: bytes | None = None

    @property
    def key_path(self) -> Path:
        return self.path.with_name(self.path.name + ".key")

    def fingerprint(self, token: str) -> str:
        """Which token made a change, without the token: the first 12 hex digits of its
        HMAC-SHA256 under this box's key (created at first use next to the log, 0600). An
        unkeyed hash of a token could be checked against guesses by anyone who reads the
        log; this can only be by someone who also holds the key."""
        mac = hmac.new(self._fingerprint_key(), token.encode("utf-8", "replace"), hashlib.sha256)
        return "hmac:" + mac.hexdigest()[:12]

    def _fingerprint_key(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._load_or_create_key()
            return self._key

    def _load_or_create_key(self) -> bytes:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
            except FileExistsError:
                key = self.key_path.read_bytes()
                if len(key) >= 16:
                    return key
                raise OSError(f"{self.key_path} is too short to be a key") from None
            key = secrets.token_bytes(32)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key)
            return key
        except OSError as error:
            # Fingerprints then match only within this run; the log still records each change.
            logger.warning("audit fingerprint key unavailable (%s); using one for this run", error)
            return secrets.token_bytes(32)

    def append(self, entry: dict[str, Any]) -> None:
        """Write one line and fsync it. A line cut short by a crash is closed off first, so it
        damages only itself. Raises (ValueError, OSError) rather than write a line that could
        not be read back: callers make no change they could not log."""
        text = json.dumps(entry, ensure_ascii=False, allow_nan=False)
        line = (text + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, AUDIT_LOG_MODE)
            with os.fdopen(fd, "r+b") as handle:
                if handle.seek(0, os.SEEK_END) > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        line = b"\n" + line
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())

    def read(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` entries, oldest first; damaged lines are skipped with a warning."""
        entries: deque[dict[str, Any]] = deque(maxlen=limit)
        with self._lock:
            try:
                handle = self.path.open(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                return []
            with handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        entries.append(json.loads(line))
                    except json.JSONDecodeError:
                        logger.warning("%s:%d: skipping a damaged audit line", self.path, number)
        return list(entries)
